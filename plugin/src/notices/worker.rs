//! [`NoticeWorker`]: hands queued notices to the gateway and scans for expiry warnings.
//!
//! Each round takes due notices with a lease (`store::take_due`), posts each outside any transaction to
//! `<gateway>/v1/messages` with `Idempotency-Key: notice:<id>`, and records the outcome: accepted (2xx) →
//! `sent`; refused for good (400: an address or template the gateway rejects) → `failed`; anything else
//! (unreachable, timeout, 5xx, 429, a token the gateway does not take) → tried again after a backoff that
//! doubles up to `plugin.notices.max_retry_seconds` (a 429's `Retry-After` is honoured). A notice is never
//! dropped while the gateway is away, and a retry after a lost answer is answered by the gateway from its
//! idempotency record instead of becoming a second message.
//!
//! The expiry scan (every `plugin.notices.scan_interval_seconds`) queues "your password expires in N days"
//! for identities under a `max_age` profile whose expiry is within the profile's `warn_before_days`. The
//! dedupe key `expiring:<identity>:<expiry date>` makes it one warning per identity and expiry date, however
//! often and on however many instances the scan runs, and across restarts.

use super::store::{self, NoticeRow};
use super::{Cause, NoticeKind, NoticeQueue};
use crate::metrics::PluginMetrics;
use crate::policy::{IdentityTraits, Policy};
use crate::schema::password_states::dsl as states;
use crate::state::StateRow;
use chrono::{DateTime, TimeDelta, Utc};
use diesel::prelude::*;
use reclaim_common::clock::Clock;
use reclaim_common::db::{write_transaction, DbError};
use reclaim_common::settings::ExpiryMode;
use reclaim_common::shutdown::Shutdown;
use reclaim_common::{Db, Secret};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Notices taken per round.
const BATCH: i64 = 50;
/// Identities read per page of the expiry scan.
const SCAN_PAGE: i64 = 500;
/// How long a taken notice stays with its worker before another may take it.
const LEASE: TimeDelta = TimeDelta::seconds(60);
/// How long one post to the gateway may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the gateway is and the token it takes.
#[derive(Clone, Debug)]
pub struct GatewayLink {
    pub url: String,
    pub token: Secret,
}

/// What became of one notice handed to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Handed {
    Accepted {
        message_id: String,
    },
    Refused {
        error: String,
    },
    NotNow {
        error: String,
        wait: Option<TimeDelta>,
    },
}

/// Delivers the plugin's notices through the gateway; cheap to clone.
#[derive(Clone)]
pub struct NoticeWorker {
    db: Db,
    clock: Clock,
    policy: Arc<Policy>,
    queue: NoticeQueue,
    link: Arc<OnceLock<GatewayLink>>,
    client: reqwest::Client,
    metrics: PluginMetrics,
}

impl NoticeWorker {
    pub fn new(
        db: Db,
        clock: Clock,
        policy: Arc<Policy>,
        queue: NoticeQueue,
        metrics: PluginMetrics,
    ) -> anyhow::Result<Self> {
        let link = Arc::new(OnceLock::new());
        let settings = queue.settings();
        if !settings.gateway_url.is_empty() {
            let _ = link.set(GatewayLink {
                url: settings.gateway_url.clone(),
                token: settings.gateway_token.clone(),
            });
        }
        let client = reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            db,
            clock,
            policy,
            queue,
            link,
            client,
            metrics,
        })
    }

    /// Points the worker at a gateway when `plugin.notices.gateway_url` is empty (`reclaim serve all` links
    /// the gateway it runs). False when a link was already set.
    pub fn link(&self, link: GatewayLink) -> bool {
        self.link.set(link).is_ok()
    }

    pub fn is_linked(&self) -> bool {
        self.link.get().is_some()
    }

    /// Hands every due notice to the gateway once; returns how many were handled (any outcome). Without a
    /// gateway link, nothing is taken.
    pub async fn deliver_due(&self) -> Result<usize, DbError> {
        let Some(link) = self.link.get() else {
            return Ok(0);
        };
        let mut handled = 0;
        loop {
            let now = self.clock.now();
            let taken = self
                .db
                .run(move |c| write_transaction(c, |c| store::take_due(c, now, now + LEASE, BATCH)))
                .await?;
            if taken.is_empty() {
                return Ok(handled);
            }
            for notice in taken {
                let handed = self.hand(link, &notice).await;
                self.record(notice, handed).await?;
                handled += 1;
            }
        }
    }

    async fn hand(&self, link: &GatewayLink, notice: &NoticeRow) -> Handed {
        let data: serde_json::Value =
            serde_json::from_str(&notice.data).unwrap_or_else(|_| serde_json::json!({}));
        let body = serde_json::json!({
            "channel": notice.channel,
            "to": notice.recipient,
            "template": notice.kind,
            "locale": notice.locale,
            "data": data,
        });
        let url = format!("{}/v1/messages", link.url.trim_end_matches('/'));
        let sent = self
            .client
            .post(&url)
            .bearer_auth(link.token.expose())
            .header("Idempotency-Key", format!("notice:{}", notice.id))
            .json(&body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                let error = if error.is_timeout() {
                    "the gateway did not answer in time".to_string()
                } else {
                    format!("the gateway is unreachable: {}", without_url(&error))
                };
                return Handed::NotNow { error, wait: None };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map(TimeDelta::seconds);
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            let message_id = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_string))
                .unwrap_or_default();
            return Handed::Accepted { message_id };
        }
        let error = format!(
            "the gateway answered {}: {}",
            status.as_u16(),
            error_code(&text)
        );
        match status.as_u16() {
            400 => Handed::Refused { error },
            401 | 403 => {
                tracing::error!(notice.id = %notice.id, status = status.as_u16(),
                    "the gateway refused plugin.notices.gateway_token; notices wait until it is fixed");
                Handed::NotNow { error, wait: None }
            }
            _ => Handed::NotNow {
                error,
                wait: retry_after,
            },
        }
    }

    async fn record(&self, notice: NoticeRow, handed: Handed) -> Result<(), DbError> {
        let now = self.clock.now();
        let max = TimeDelta::seconds(
            i64::try_from(self.queue.settings().max_retry_seconds).unwrap_or(i64::MAX / 2),
        );
        let outcome = match &handed {
            Handed::Accepted { .. } => "sent",
            Handed::Refused { .. } => "failed",
            Handed::NotNow { .. } => "retry",
        };
        self.metrics
            .notices
            .with_label_values(&[notice.kind.as_str(), outcome])
            .inc();
        let to = reclaim_common::secret::mask_address(&notice.recipient);
        match &handed {
            Handed::Accepted { message_id } => {
                tracing::info!(notice.id = %notice.id, notice.kind = %notice.kind, notice.to = %to,
                    message.id = %message_id, "notice handed to the gateway");
            }
            Handed::Refused { error } => {
                tracing::warn!(notice.id = %notice.id, notice.kind = %notice.kind, notice.to = %to,
                    error = %error, "notice refused by the gateway for good");
            }
            Handed::NotNow { error, .. } => {
                tracing::warn!(notice.id = %notice.id, notice.kind = %notice.kind,
                    notice.attempts = notice.attempts, error = %error, "notice not delivered yet; will retry");
            }
        }
        let wait = match &handed {
            Handed::NotNow { wait, .. } => {
                Some(wait.unwrap_or_else(|| backoff(notice.attempts)).min(max))
            }
            _ => None,
        };
        self.db
            .run(move |c| match handed {
                Handed::Accepted { message_id } => store::mark_sent(c, &notice, &message_id, now),
                Handed::Refused { error } => store::mark_failed(c, &notice, &error),
                Handed::NotNow { error, .. } => store::retry_later(
                    c,
                    &notice,
                    &error,
                    now,
                    wait.unwrap_or(TimeDelta::seconds(1)),
                ),
            })
            .await
    }

    /// Queues an expiry warning for every identity whose password enters its profile's warning window by
    /// now; returns how many were queued (those already warned for the same expiry date are not counted).
    pub async fn scan_expiring(&self) -> Result<usize, DbError> {
        if !self.queue.wants(NoticeKind::PasswordExpiring) {
            return Ok(0);
        }
        let widest = self
            .policy
            .profiles()
            .filter(|p| p.expiry == ExpiryMode::MaxAge)
            .map(|p| p.warn_before)
            .max();
        let Some(widest) = widest else {
            return Ok(0);
        };
        let now = self.clock.now();
        let mut after = String::new();
        let mut queued = 0;
        loop {
            let policy = self.policy.clone();
            let queue = self.queue.clone();
            let from = after.clone();
            let (last, count) = self
                .db
                .run(move |c| {
                    let page: Vec<StateRow> = states::password_states
                        .filter(states::identity_id.gt(&from))
                        .filter(states::expires_at.gt(now.naive_utc()))
                        .filter(states::expires_at.le((now + widest).naive_utc()))
                        .filter(states::must_change_reason.is_null())
                        .order(states::identity_id.asc())
                        .limit(SCAN_PAGE)
                        .select(StateRow::as_select())
                        .load(c)?;
                    let last = page.last().map(|r| r.identity_id.clone());
                    let mut count = 0;
                    for row in &page {
                        if let Some(cause) = warning_due(&policy, row, now) {
                            if write_transaction(c, |c| queue.queue(c, row, &cause, now))? {
                                count += 1;
                            }
                        }
                    }
                    Ok((last, count))
                })
                .await?;
            queued += count;
            match last {
                Some(last) => after = last,
                None => break,
            }
        }
        if queued > 0 {
            tracing::info!(notices.queued = queued, "expiry warnings queued");
        }
        Ok(queued)
    }

    /// Runs until `stop`: delivers due notices whenever one is queued or every
    /// `plugin.notices.poll_interval_ms`, and scans for expiry warnings every `scan_interval_seconds`.
    pub async fn run_until_stopped(self, stop: Shutdown) {
        let settings = self.queue.settings().clone();
        let poll = Duration::from_millis(settings.poll_interval_ms);
        let scan_every = Duration::from_secs(settings.scan_interval_seconds);
        let wake = self.queue.waker();
        let mut next_scan = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_scan {
                if let Err(error) = self.scan_expiring().await {
                    tracing::error!(error = %error, "expiry warning scan failed; will try again");
                }
                next_scan = tokio::time::Instant::now() + scan_every;
            }
            if let Err(error) = self.deliver_due().await {
                tracing::error!(error = %error, "notice delivery round failed; will try again");
            }
            tokio::select! {
                () = stop.wait() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }
}

/// The warning `row` is due, if its profile expires passwords and its expiry is within the window.
fn warning_due(policy: &Policy, row: &StateRow, now: DateTime<Utc>) -> Option<Cause> {
    let no_metadata = std::collections::BTreeMap::new();
    let traits = IdentityTraits {
        schema_id: row.schema_id.as_deref(),
        metadata: Some(&no_metadata),
    };
    let profile = policy.stored_or_select(row.profile.as_deref(), &traits);
    if profile.expiry != ExpiryMode::MaxAge {
        return None;
    }
    let expires_at = row.expires_at?.and_utc();
    let left = expires_at - now;
    if left <= TimeDelta::zero() || left > profile.warn_before {
        return None;
    }
    // Whole days, rounded up: a password with 13 days and 2 hours left "expires in 14 days".
    let days_left = (left + TimeDelta::days(1) - TimeDelta::seconds(1)).num_days();
    Some(Cause::Expiring {
        expires_at,
        days_left,
    })
}

/// 2, 4, 8 … seconds after the first, second, third … failed try.
fn backoff(attempts: i32) -> TimeDelta {
    let exponent = u32::try_from(attempts.clamp(1, 20)).unwrap_or(1);
    TimeDelta::seconds(1_i64 << exponent)
}

/// The error code of a gateway error body (`{"error":{"code":…}}`), never its text (which may echo input).
fn error_code(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/code")
                .or_else(|| v.pointer("/code"))
                .and_then(|c| c.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "no error code".into())
}

/// A transport error without the URL (which carries no secret, but keeps log lines short).
fn without_url(error: &reqwest::Error) -> String {
    let mut error = error.to_string();
    if let Some(start) = error.find(" for url (") {
        error.truncate(start);
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_two_seconds() {
        assert_eq!(backoff(1), TimeDelta::seconds(2));
        assert_eq!(backoff(2), TimeDelta::seconds(4));
        assert_eq!(backoff(5), TimeDelta::seconds(32));
        assert!(backoff(1_000) <= TimeDelta::seconds(1 << 20));
    }

    #[test]
    fn only_the_error_code_of_a_gateway_answer_is_kept() {
        assert_eq!(
            error_code(r#"{"error":{"code":"invalid_request","message":"to: jane@example.com"}}"#),
            "invalid_request"
        );
        assert_eq!(error_code("<html>"), "no error code");
    }
}
