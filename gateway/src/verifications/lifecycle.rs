//! Start, resend, check, cancel and show a verification. Each action is one write transaction; a change to
//! the verification is a compare-and-set (see `store`), retried from fresh state when another process won
//! the race, so concurrent resends cannot send more than `max_sends` and concurrent checks cannot take more
//! than `max_checks`.

use super::secret::{Secret, SecretFormatError};
use super::store::{self, Change, SendRow, VerificationRow};
use super::view::{CheckView, SendView, VerificationView};
use super::{Kind, Purpose, Status};
use crate::address::Destination;
use crate::channel::Channel;
use crate::limits::{Limits, Refusal, SendAttempt};
use crate::metrics::{GatewayMetrics, VerificationOutcome};
use crate::outbox::{self, MessageStatus, NewMessage};
use crate::templates::Templates;
use chrono::{NaiveDateTime, TimeDelta};
use reclaim_common::clock::Clock;
use reclaim_common::db::{write_transaction, AnyConnection, DbError};
use reclaim_common::json::FieldError;
use reclaim_common::sealed::Keyring;
use reclaim_common::settings::GatewaySettings;
use reclaim_common::Db;
use std::sync::Arc;
use std::time::Duration;

/// A verification to start, validated by the handler.
#[derive(Debug, Clone)]
pub struct NewVerification {
    pub channel: Channel,
    pub destination: Destination,
    pub purpose: Purpose,
    pub locale: String,
    /// Given for email: a link (this URL with `token=<token>` added) is sent instead of a code.
    pub link_url: Option<url::Url>,
    pub identity_id: Option<String>,
    pub client_ip: Option<std::net::IpAddr>,
    /// `false`: the caller knows no account has this destination. Everything happens as for a known one,
    /// except that nothing is sent (so the answer cannot tell the two apart).
    pub known: bool,
}

/// Why an action on a verification did not happen.
#[derive(Debug, thiserror::Error)]
pub enum VerificationError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("no such verification")]
    NotFound,
    /// The verification is no longer pending; the status says why.
    #[error("the verification is {}", .0.as_str())]
    Finished(Status),
    #[error("this verification has had its {0} sends")]
    MaxSends(u32),
    #[error("the last send was less than {interval_seconds} seconds ago")]
    TooSoon {
        interval_seconds: u64,
        retry_after: Duration,
    },
    #[error("{0}")]
    BadSecret(SecretFormatError),
    #[error("the verification changed too often while this request ran; retry it")]
    Busy,
    /// An abuse limit refused the send.
    #[error("{}", .0.message())]
    Limited(Refusal),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    Approved,
    /// Wrong; checks are left.
    Wrong,
    /// A link that a resend replaced: it no longer works, and the check counts.
    Superseded,
    /// Wrong, and it was the last check.
    MaxChecksReached,
}

/// A check that landed: the answer, the verification's channel and what the check found (for the metrics).
type Checked = (CheckView, String, CheckOutcome);

/// The verification service the handlers call.
#[derive(Clone)]
pub struct Verifications {
    db: Db,
    keyring: Keyring,
    templates: Arc<Templates>,
    settings: Arc<GatewaySettings>,
    clock: Clock,
    limits: Limits,
    metrics: GatewayMetrics,
    /// Rung after a code's message was queued.
    doorbell: crate::delivery::Doorbell,
}

/// The authenticated context of a verification's digests and sealed code: valid for its own row only.
fn secret_context(id: &str) -> String {
    format!("gateway_verifications.secret:{id}")
}

impl Verifications {
    pub fn new(
        db: Db,
        keyring: Keyring,
        templates: Arc<Templates>,
        settings: GatewaySettings,
        clock: Clock,
        limits: Limits,
        metrics: GatewayMetrics,
    ) -> Self {
        Self {
            db,
            keyring,
            templates,
            settings: Arc::new(settings),
            clock,
            limits,
            metrics,
            doorbell: crate::delivery::Doorbell::default(),
        }
    }

    /// Rings `doorbell` (the local delivery workers') after each code's message is queued.
    pub fn waking(mut self, doorbell: crate::delivery::Doorbell) -> Self {
        self.doorbell = doorbell;
        self
    }

    fn now(&self) -> NaiveDateTime {
        self.clock.now().naive_utc()
    }

    /// How long a new verification of this shape stays valid.
    fn ttl(&self, channel: Channel, kind: Kind, purpose: Purpose) -> TimeDelta {
        let settings = &self.settings.verifications;
        let seconds = settings
            .purpose_ttl_seconds
            .get(purpose.as_str())
            .copied()
            .unwrap_or(match (channel, kind) {
                (Channel::Email, Kind::Link) => settings.ttl_seconds.email_link,
                (Channel::Email, Kind::Code) => settings.ttl_seconds.email_code,
                (Channel::Sms, _) => settings.ttl_seconds.sms,
                (Channel::Voice, _) => settings.ttl_seconds.voice,
            });
        TimeDelta::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 1000))
    }

    /// Checks that the templates can carry this verification (kind, purpose, channel, locale).
    fn check_template(
        &self,
        kind: Kind,
        purpose: Purpose,
        channel: Channel,
        locale: &str,
        field: &str,
    ) -> Result<(), FieldError> {
        let template = kind.template(purpose);
        if self.templates.supports(&template, locale, channel) {
            Ok(())
        } else {
            Err(FieldError::new(
                field,
                format!(
                    "a {} for {} cannot be sent by {channel} (template `{template}` has no {channel} version)",
                    kind.as_str(),
                    purpose.as_str()
                ),
            ))
        }
    }

    /// Starts a verification and queues its first message.
    pub async fn start(&self, new: NewVerification) -> Result<VerificationView, VerificationError> {
        let kind = if new.link_url.is_some() {
            if new.channel != Channel::Email {
                return Err(FieldError::new("link_url", "links are sent by email only").into());
            }
            Kind::Link
        } else {
            Kind::Code
        };
        let field = if kind == Kind::Link {
            "link_url"
        } else {
            "channel"
        };
        self.check_template(kind, new.purpose, new.channel, &new.locale, field)?;
        self.limits
            .screen(new.channel, &new.destination)
            .map_err(VerificationError::Limited)?;
        let attempt = SendAttempt {
            channel: new.channel,
            destination: &new.destination,
            client_ip: new.client_ip,
            identity_id: new.identity_id.as_deref(),
        };
        self.limits
            .precheck(&attempt)
            .map_err(VerificationError::Limited)?;
        let now = self.now();
        let id = uuid::Uuid::now_v7().to_string();
        let code_length = self.code_length();
        let secret = Secret::generate(kind, code_length);
        let context = secret_context(&id);
        let row = VerificationRow {
            id: id.clone(),
            purpose: new.purpose.as_str().into(),
            channel: new.channel.as_str().into(),
            destination: new.destination.as_str().into(),
            locale: new.locale.clone(),
            kind: kind.as_str().into(),
            secret_digest: self.keyring.digest(&context, secret.expose().as_bytes()),
            secret_sealed: match kind {
                Kind::Code => self.keyring.seal(&context, secret.expose().as_bytes()),
                Kind::Link => String::new(),
            },
            superseded_digests: "[]".into(),
            link_url: new.link_url.as_ref().map(|u| u.to_string()),
            identity_id: new.identity_id.clone(),
            known: new.known,
            status: Status::Pending.as_str().into(),
            checks: 0,
            sends: 1,
            last_sent_at: now,
            expires_at: now + self.ttl(new.channel, kind, new.purpose),
            created_at: now,
            updated_at: now,
        };
        let this = self.clone();
        let (channel, client_ip) = (new.channel, new.client_ip);
        let destination = new.destination.clone();
        let view = self
            .db
            .run(move |conn| {
                write_transaction(conn, |conn| {
                    // Unknown destinations are counted too: a refusal must not tell them apart.
                    let attempt = SendAttempt {
                        channel,
                        destination: &destination,
                        client_ip,
                        identity_id: row.identity_id.as_deref(),
                    };
                    if let Err(refusal) = this.limits.admit(conn, &attempt, now)? {
                        return Ok(Err(VerificationError::Limited(refusal)));
                    }
                    store::insert(conn, &row)?;
                    this.send(conn, &row, channel, &secret, 1, now)?;
                    Ok(Ok(this.view(conn, &row, now, false)?))
                })
            })
            .await
            .map_err(unexpected)??;
        self.doorbell.ring();
        self.metrics.count_verification(
            new.channel.as_str(),
            if new.known {
                VerificationOutcome::Started
            } else {
                VerificationOutcome::StartedUnknown
            },
        );
        tracing::info!(
            verification.id = %view.id,
            verification.purpose = new.purpose.as_str(),
            message.channel = new.channel.as_str(),
            to = %new.destination.masked(),
            "verification started"
        );
        Ok(view)
    }

    fn code_length(&self) -> usize {
        usize::try_from(self.settings.verifications.code_length).unwrap_or(6)
    }

    /// Queues the message of send `number` (none for an unknown destination) and records the send.
    fn send(
        &self,
        conn: &mut AnyConnection,
        row: &VerificationRow,
        channel: Channel,
        secret: &Secret,
        number: i32,
        now: NaiveDateTime,
    ) -> Result<(), DbError> {
        let message_id = if row.known {
            let kind = Kind::parse(&row.kind).unwrap_or(Kind::Code);
            let purpose = Purpose::parse(&row.purpose).unwrap_or(Purpose::Verification);
            let template = kind.template(purpose);
            let data = match kind {
                Kind::Code => {
                    let seconds_left = (row.expires_at - now).num_seconds().max(0);
                    serde_json::json!({
                        "code": secret.expose(),
                        "ttl_minutes": (seconds_left + 59) / 60,
                    })
                }
                Kind::Link => serde_json::json!({ "link": link(row, secret) }),
            };
            let id = uuid::Uuid::now_v7().to_string();
            let destination = Destination::parse(channel, &row.destination)
                .map_err(|e| DbError::Task(format!("the verification's destination: {e}")))?;
            let message = NewMessage {
                id: id.clone(),
                channel: channel.as_str().into(),
                destination: row.destination.clone(),
                fallback: serde_json::to_string(&crate::fallback::configured(
                    &self.settings.channels,
                    &self.templates,
                    &template,
                    &row.locale,
                    channel,
                    &destination,
                ))
                .unwrap_or_else(|_| "[]".into()),
                template,
                locale: row.locale.clone(),
                data: data.to_string(),
                status: MessageStatus::Queued,
                attempts: 0,
                next_attempt_at: now,
                // A code is worthless after the verification expires: never sent later.
                expires_at: Some(row.expires_at),
                fallback_position: 0,
                idempotency_key: None,
                created_at: now,
                updated_at: now,
            };
            outbox::insert(conn, &message, &self.keyring)?;
            Some(id)
        } else {
            None
        };
        store::insert_send(
            conn,
            &SendRow {
                verification_id: row.id.clone(),
                number,
                channel: channel.as_str().into(),
                message_id,
                created_at: now,
            },
        )
    }

    /// Cancels the still-queued messages of earlier sends (after a resend, or when the verification ends).
    fn cancel_earlier_messages(
        conn: &mut AnyConnection,
        id: &str,
        reason: &str,
        now: NaiveDateTime,
    ) -> Result<(), DbError> {
        let ids: Vec<String> = store::sends(conn, id)?
            .into_iter()
            .filter_map(|s| s.message_id)
            .collect();
        outbox::cancel_queued(conn, &ids, reason, now)?;
        Ok(())
    }

    /// Loads a verification for a change: `NotFound`, or `Finished` when it is no longer pending (an expired
    /// one is marked expired and its code wiped on the way).
    fn load_pending(
        conn: &mut AnyConnection,
        id: &str,
        now: NaiveDateTime,
    ) -> Result<Result<VerificationRow, VerificationError>, DbError> {
        let Some(row) = store::find(conn, id)? else {
            return Ok(Err(VerificationError::NotFound));
        };
        let status = Status::parse(&row.status).unwrap_or(Status::Canceled);
        if status != Status::Pending {
            return Ok(Err(VerificationError::Finished(status)));
        }
        if now >= row.expires_at {
            Self::end(conn, &row, Status::Expired, "the verification expired", now)?;
            return Ok(Err(VerificationError::Finished(Status::Expired)));
        }
        Ok(Ok(row))
    }

    /// Moves a pending verification to a final status: its code is wiped and its queued messages canceled.
    /// Returns false when another process changed it first.
    fn end(
        conn: &mut AnyConnection,
        row: &VerificationRow,
        status: Status,
        reason: &str,
        now: NaiveDateTime,
    ) -> Result<bool, DbError> {
        let checks = if status == Status::Approved || status == Status::MaxChecksReached {
            Some(row.checks + 1)
        } else {
            None
        };
        let changed = store::change_if_unchanged(
            conn,
            row,
            Change {
                status: Some(status.as_str()),
                secret_sealed: Some(""),
                checks,
                ..Change::default()
            },
            now,
        )?;
        if changed {
            Self::cancel_earlier_messages(conn, &row.id, reason, now)?;
        }
        Ok(changed)
    }

    /// Sends the verification again, on `channel` if given (SMS and voice may swap; email stays email). A
    /// code is sent unchanged; a link is replaced and the older one stops working. Earlier messages still
    /// queued are canceled.
    pub async fn resend(
        &self,
        id: String,
        channel: Option<Channel>,
        client_ip: Option<std::net::IpAddr>,
    ) -> Result<VerificationView, VerificationError> {
        let this = self.clone();
        let attempts = self.settings.verifications.max_sends + 2;
        let resent = self
            .db
            .run(move |conn| {
                // Each lost race means another send happened, so `max_sends + 2` rounds always settle.
                for _ in 0..attempts {
                    let mut refused = None;
                    // The time is read inside the transaction (and again once the row is read): another
                    // send may have committed while this request waited, and its time must not lie in
                    // this one's future.
                    let step = write_transaction(conn, |conn| {
                        this.resend_once(conn, &id, channel, client_ip, this.now(), &mut refused)
                    });
                    if let Some(refusal) = refused {
                        // The round was rolled back: nothing of it stays.
                        return Ok(Err(VerificationError::Limited(refusal)));
                    }
                    if let Some(result) = step? {
                        return Ok(result);
                    }
                }
                Ok(Err(VerificationError::Busy))
            })
            .await
            .map_err(unexpected)?;
        if resent.is_ok() {
            self.doorbell.ring();
        }
        resent
    }

    /// One round of a resend: `None` when another process changed the verification first.
    /// An abuse limit's refusal comes back in `refused`, with an error that rolls the round back (the
    /// verification's counters were already moved).
    fn resend_once(
        &self,
        conn: &mut AnyConnection,
        id: &str,
        channel: Option<Channel>,
        client_ip: Option<std::net::IpAddr>,
        now: NaiveDateTime,
        refused: &mut Option<Refusal>,
    ) -> Result<Option<Result<VerificationView, VerificationError>>, DbError> {
        let row = match Self::load_pending(conn, id, now)? {
            Ok(row) => row,
            Err(refusal) => return Ok(Some(Err(refusal))),
        };
        // Read again once the row is read: a send that committed between the first reading and the row's
        // read has a time after the first one, and the resend interval is measured from it.
        let now = self.now().max(now);
        let current = Channel::parse(&row.channel).unwrap_or(Channel::Email);
        let next = channel.unwrap_or(current);
        if next != current && !(next.uses_phone_numbers() && current.uses_phone_numbers()) {
            return Ok(Some(Err(FieldError::new(
                "channel",
                format!("this verification goes to a {current} destination; it can be resent by sms or voice only when it was started by one of them"),
            )
            .into())));
        }
        let kind = Kind::parse(&row.kind).unwrap_or(Kind::Code);
        let purpose = Purpose::parse(&row.purpose).unwrap_or(Purpose::Verification);
        if let Err(e) = self.check_template(kind, purpose, next, &row.locale, "channel") {
            return Ok(Some(Err(e.into())));
        }
        let settings = &self.settings.verifications;
        let sends = u32::try_from(row.sends).unwrap_or(u32::MAX);
        if sends >= settings.max_sends {
            return Ok(Some(Err(VerificationError::MaxSends(settings.max_sends))));
        }
        let interval = TimeDelta::seconds(
            i64::try_from(settings.resend_interval_seconds).unwrap_or(i64::MAX / 1000),
        );
        let available_at = row.last_sent_at + interval;
        if now < available_at {
            let wait = (available_at - now).to_std().unwrap_or_default();
            return Ok(Some(Err(VerificationError::TooSoon {
                interval_seconds: settings.resend_interval_seconds,
                retry_after: wait,
            })));
        }
        let context = secret_context(&row.id);
        let (secret, digest, superseded) = match kind {
            Kind::Code => {
                let code = self
                    .keyring
                    .open_text(&context, &row.secret_sealed)
                    .map_err(|e| {
                        DbError::Task(format!("the verification's code does not open: {e}"))
                    })?;
                (Secret::from_stored(code), None, None)
            }
            Kind::Link => {
                let token = Secret::generate(Kind::Link, 0);
                let digest = self.keyring.digest(&context, token.expose().as_bytes());
                let mut older: Vec<String> =
                    serde_json::from_str(&row.superseded_digests).unwrap_or_default();
                older.push(row.secret_digest.clone());
                (
                    token,
                    Some(digest),
                    Some(serde_json::to_string(&older).unwrap_or_else(|_| "[]".into())),
                )
            }
        };
        let changed = store::change_if_unchanged(
            conn,
            &row,
            Change {
                channel: Some(next.as_str()),
                secret_digest: digest.as_deref(),
                superseded_digests: superseded.as_deref(),
                sends: Some(row.sends + 1),
                last_sent_at: Some(now),
                ..Change::default()
            },
            now,
        )?;
        if !changed {
            return Ok(None);
        }
        let destination = Destination::parse(next, &row.destination)
            .map_err(|e| DbError::Task(format!("the verification's destination: {e}")))?;
        let attempt = SendAttempt {
            channel: next,
            destination: &destination,
            client_ip,
            identity_id: row.identity_id.as_deref(),
        };
        if let Err(refusal) = self.limits.admit(conn, &attempt, now)? {
            *refused = Some(refusal);
            return Err(DbError::Task("refused by an abuse limit".into()));
        }
        Self::cancel_earlier_messages(conn, &row.id, "replaced by a resend", now)?;
        let row = store::find(conn, id)?.ok_or(diesel::result::Error::NotFound)?;
        self.send(conn, &row, next, &secret, row.sends, now)?;
        tracing::info!(
            verification.id = %row.id,
            message.channel = next.as_str(),
            send = row.sends,
            "verification resent"
        );
        Ok(Some(Ok(self.view(conn, &row, now, false)?)))
    }

    /// Checks a submitted code or link token. A well-formed wrong one counts; the last allowed wrong one
    /// ends the verification. An approved verification takes no more checks.
    pub async fn check(
        &self,
        id: String,
        submitted: String,
    ) -> Result<CheckView, VerificationError> {
        let this = self.clone();
        let attempts = self.settings.verifications.max_checks + 2;
        let (view, channel, outcome) = self
            .db
            .run(move |conn| {
                for _ in 0..attempts {
                    let step = write_transaction(conn, |conn| {
                        this.check_once(conn, &id, &submitted, this.now())
                    })?;
                    if let Some(result) = step {
                        return Ok(result);
                    }
                }
                Ok(Err(VerificationError::Busy))
            })
            .await
            .map_err(unexpected)??;
        // Counted once the check's transaction committed.
        self.metrics.count_verification(
            &channel,
            match outcome {
                CheckOutcome::Approved => VerificationOutcome::Approved,
                CheckOutcome::MaxChecksReached => VerificationOutcome::MaxChecksReached,
                CheckOutcome::Wrong | CheckOutcome::Superseded => VerificationOutcome::Wrong,
            },
        );
        Ok(view)
    }

    fn check_once(
        &self,
        conn: &mut AnyConnection,
        id: &str,
        submitted: &str,
        now: NaiveDateTime,
    ) -> Result<Option<Result<Checked, VerificationError>>, DbError> {
        let row = match Self::load_pending(conn, id, now)? {
            Ok(row) => row,
            Err(refusal) => return Ok(Some(Err(refusal))),
        };
        let kind = Kind::parse(&row.kind).unwrap_or(Kind::Code);
        let secret = match Secret::parse(kind, self.code_length(), submitted) {
            Ok(secret) => secret,
            Err(e) => return Ok(Some(Err(VerificationError::BadSecret(e)))),
        };
        let context = secret_context(&row.id);
        let bytes = secret.expose().as_bytes();
        let max_checks = i32::try_from(self.settings.verifications.max_checks).unwrap_or(i32::MAX);
        let outcome = if self
            .keyring
            .digest_matches(&context, bytes, &row.secret_digest)
        {
            CheckOutcome::Approved
        } else if row.checks + 1 >= max_checks {
            CheckOutcome::MaxChecksReached
        } else if serde_json::from_str::<Vec<String>>(&row.superseded_digests)
            .unwrap_or_default()
            .iter()
            .any(|older| self.keyring.digest_matches(&context, bytes, older))
        {
            CheckOutcome::Superseded
        } else {
            CheckOutcome::Wrong
        };
        let changed = match outcome {
            CheckOutcome::Approved => Self::end(
                conn,
                &row,
                Status::Approved,
                "the verification was approved",
                now,
            )?,
            CheckOutcome::MaxChecksReached => Self::end(
                conn,
                &row,
                Status::MaxChecksReached,
                "the verification ran out of checks",
                now,
            )?,
            CheckOutcome::Wrong | CheckOutcome::Superseded => store::change_if_unchanged(
                conn,
                &row,
                Change {
                    checks: Some(row.checks + 1),
                    ..Change::default()
                },
                now,
            )?,
        };
        if !changed {
            return Ok(None);
        }
        let row = store::find(conn, id)?.ok_or(diesel::result::Error::NotFound)?;
        tracing::info!(
            verification.id = %row.id,
            outcome = ?outcome,
            checks = row.checks,
            "verification checked"
        );
        Ok(Some(Ok((
            CheckView::new(&row, outcome, max_checks),
            row.channel.clone(),
            outcome,
        ))))
    }

    /// Cancels a pending verification: its code stops working and its queued messages are dropped.
    pub async fn cancel(&self, id: String) -> Result<VerificationView, VerificationError> {
        let this = self.clone();
        let view = self
            .db
            .run(move |conn| {
                write_transaction(conn, |conn| {
                    let now = this.now();
                    // A cancel changes no counter, so it is retried until it lands or finds a final state.
                    loop {
                        let row = match Self::load_pending(conn, &id, now)? {
                            Ok(row) => row,
                            Err(refusal) => return Ok(Err(refusal)),
                        };
                        if Self::end(
                            conn,
                            &row,
                            Status::Canceled,
                            "the verification was canceled",
                            now,
                        )? {
                            let row =
                                store::find(conn, &id)?.ok_or(diesel::result::Error::NotFound)?;
                            return Ok(Ok(this.view(conn, &row, now, false)?));
                        }
                    }
                })
            })
            .await
            .map_err(unexpected)??;
        self.metrics
            .count_verification(&view.channel, VerificationOutcome::Canceled);
        Ok(view)
    }

    /// A verification with its sends and their messages' statuses.
    pub async fn show(&self, id: String) -> Result<VerificationView, VerificationError> {
        let now = self.now();
        let this = self.clone();
        self.db
            .run(move |conn| {
                let Some(row) = store::find(conn, &id)? else {
                    return Ok(Err(VerificationError::NotFound));
                };
                Ok(Ok(this.view(conn, &row, now, true)?))
            })
            .await
            .map_err(unexpected)?
    }

    fn view(
        &self,
        conn: &mut AnyConnection,
        row: &VerificationRow,
        now: NaiveDateTime,
        with_sends: bool,
    ) -> Result<VerificationView, DbError> {
        let sends = if with_sends {
            let mut views = Vec::new();
            for send in store::sends(conn, &row.id)? {
                let message = match &send.message_id {
                    Some(message_id) => outbox::find(conn, message_id)?,
                    None => None,
                };
                views.push(SendView::new(&send, message.as_ref().map(|(m, _)| m)));
            }
            Some(views)
        } else {
            None
        };
        Ok(VerificationView::new(
            row,
            now,
            &self.settings.verifications,
            sends,
        ))
    }
}

/// The link a message carries: the caller's URL with the token added as `token`.
fn link(row: &VerificationRow, token: &Secret) -> String {
    let Some(mut url) = row
        .link_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
    else {
        return String::new();
    };
    url.query_pairs_mut().append_pair("token", token.expose());
    url.to_string()
}

fn unexpected(error: DbError) -> VerificationError {
    VerificationError::Unexpected(anyhow::Error::new(error))
}
