//! Security notices: "your password was changed", "your password expires in N days", "you must change your
//! password", sent to the identity's own address through the gateway.
//!
//! - `store.rs`: the `notices` table, the plugin's small outbox. A notice is written in the same
//!   transaction as the change that causes it ([`queue`]), so a committed change always has its notice and a
//!   rolled-back one never has; a unique `dedupe_key` keeps it to one per change, per expiry date, per mark.
//! - `worker.rs`: [`NoticeWorker`] hands due notices to the gateway's `POST /v1/messages` (bearer token,
//!   the notice's id as `Idempotency-Key`, so a retry after a lost answer is not a second message), retries
//!   with backoff while the gateway is down, and scans for identities entering their expiry-warning window.
//!   It never runs inside a hook: hooks only write rows.
//!
//! Where a notice goes: the identity's email as the adapters saw it (Kratos traits by JSON pointer, ZITADEL
//! and Supabase payloads, the generic API's `email`), else its phone by SMS; with neither, no notice. The
//! addresses live on the identity's state row and in pending notices, and are erased with the identity.

mod store;
mod worker;

use store::NewNotice;
pub use store::{of_identity, NoticeRow};
pub use worker::{GatewayLink, NoticeWorker};

use crate::policy::MustChangeReason;
use crate::state::StateRow;
use chrono::{DateTime, NaiveDate, Utc};
use reclaim_common::db::{AnyConnection, DbError};
use reclaim_common::settings::NoticeSettings;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::Notify;

/// The three notices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    PasswordChanged,
    PasswordExpiring,
    PasswordChangeRequired,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordChanged => "password_changed",
            Self::PasswordExpiring => "password_expiring",
            Self::PasswordChangeRequired => "password_change_required",
        }
    }

    /// The gateway template that renders it (a folder under `gateway.templates_dir`).
    pub fn template(self) -> &'static str {
        self.as_str()
    }
}

/// Why a notice is queued, with what its template says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A new password was committed at this time.
    Changed { at: DateTime<Utc> },
    /// The password expires on this date, `days_left` days from now.
    Expiring {
        expires_at: DateTime<Utc>,
        days_left: i64,
    },
    /// A change is required now, for this reason.
    MustChange {
        reason: MustChangeReason,
        at: DateTime<Utc>,
    },
}

impl Cause {
    fn kind(&self) -> NoticeKind {
        match self {
            Self::Changed { .. } => NoticeKind::PasswordChanged,
            Self::Expiring { .. } => NoticeKind::PasswordExpiring,
            Self::MustChange { .. } => NoticeKind::PasswordChangeRequired,
        }
    }

    /// At most one notice per key.
    fn dedupe_key(&self, identity_id: &str) -> String {
        match self {
            Self::Changed { at } => format!("changed:{identity_id}:{}", at.timestamp_micros()),
            Self::Expiring { expires_at, .. } => {
                format!("expiring:{identity_id}:{}", expiry_date(*expires_at))
            }
            Self::MustChange { reason, at } => format!(
                "must_change:{identity_id}:{}:{}",
                reason.as_str(),
                at.timestamp_micros()
            ),
        }
    }

    fn data(&self) -> serde_json::Value {
        match self {
            Self::Changed { .. } => json!({}),
            Self::Expiring {
                expires_at,
                days_left,
            } => json!({
                "days": days_left,
                "expires_on": expiry_date(*expires_at).to_string(),
            }),
            Self::MustChange { reason, .. } => json!({ "reason": reason.as_str() }),
        }
    }
}

fn expiry_date(expires_at: DateTime<Utc>) -> NaiveDate {
    expires_at.date_naive()
}

/// Which notices are on, their language, and how to wake the worker: what the facade needs to queue one.
#[derive(Clone)]
pub struct NoticeQueue {
    settings: NoticeSettings,
    locale: &'static str,
    wake: Arc<Notify>,
}

impl NoticeQueue {
    pub fn new(settings: &NoticeSettings, locale: &'static str) -> Self {
        Self {
            settings: settings.clone(),
            locale,
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn settings(&self) -> &NoticeSettings {
        &self.settings
    }

    fn wants(&self, kind: NoticeKind) -> bool {
        self.settings.enabled
            && match kind {
                NoticeKind::PasswordChanged => self.settings.password_changed,
                NoticeKind::PasswordExpiring => self.settings.expiry_warnings,
                NoticeKind::PasswordChangeRequired => self.settings.must_change,
            }
    }

    /// Inside the caller's transaction: queues the notice `cause` calls for, to the contact on `row`. True
    /// when a new notice was written (false: notices of its kind are off, the identity has no contact, or
    /// the same notice exists already).
    pub fn queue(
        &self,
        c: &mut AnyConnection,
        row: &StateRow,
        cause: &Cause,
        now: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        let kind = cause.kind();
        if !self.wants(kind) {
            return Ok(false);
        }
        let Some((channel, recipient)) = contact(row) else {
            tracing::info!(identity.id = %row.identity_id, notice.kind = kind.as_str(),
                "no notice: the identity has no email or phone on record");
            return Ok(false);
        };
        let notice = NoticeRow::pending(
            NewNotice {
                identity_id: &row.identity_id,
                kind: kind.as_str(),
                dedupe_key: cause.dedupe_key(&row.identity_id),
                channel,
                recipient,
                locale: self.locale,
                data: cause.data(),
            },
            now,
        );
        store::insert_new(c, &notice)
    }

    /// Wakes the worker after a transaction that queued a notice has committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

/// Where a notice to this identity goes: its email, else its phone by SMS.
fn contact(row: &StateRow) -> Option<(&'static str, String)> {
    fn present(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }
    if let Some(email) = present(&row.email) {
        return Some(("email", email.to_string()));
    }
    present(&row.phone).map(|phone| ("sms", phone.to_string()))
}

/// Right to erasure: the identity's notices, pending ones with their addresses included.
pub fn erase(c: &mut AnyConnection, identity_id: &str) -> Result<usize, DbError> {
    store::erase(c, identity_id)
}
