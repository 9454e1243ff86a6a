//! What the verification endpoints answer. Destinations are masked; codes never appear.

use super::lifecycle::CheckOutcome;
use super::store::{SendRow, VerificationRow};
use super::Status;
use crate::outbox::MessageRow;
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use reclaim_common::settings::VerificationSettings;
use serde::Serialize;
use utoipa::ToSchema;

/// A verification. `GET` adds its sends.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationView {
    pub id: String,
    /// `pending | approved | max_checks_reached | expired | canceled`
    pub status: String,
    /// `recovery | verification | login | device`
    pub purpose: String,
    /// The channel of the latest send.
    pub channel: String,
    /// The destination, masked (`+141******00`, `j***@example.com`).
    pub to: String,
    /// `code`, or `link` for an email that carries a link.
    pub kind: String,
    pub expires_at: DateTime<Utc>,
    /// When a resend will be accepted; absent when none will be (no sends left, or not pending).
    pub resend_available_at: Option<DateTime<Utc>>,
    pub sends_left: u32,
    pub checks_left: u32,
    pub created_at: DateTime<Utc>,
    /// Every send, oldest first, with its message's delivery status (`GET` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sends: Option<Vec<SendView>>,
}

/// One send of a verification.
#[derive(Debug, Serialize, ToSchema)]
pub struct SendView {
    pub number: i32,
    pub channel: String,
    pub sent_at: DateTime<Utc>,
    /// The outbox message (`GET /v1/messages/{id}` has its attempts); absent when nothing was sent.
    pub message_id: Option<String>,
    /// The message's status: `queued | sending | sent | delivered | undelivered | failed | expired |
    /// canceled`; absent when nothing was sent or the message was deleted by retention.
    pub message_status: Option<String>,
}

/// The answer to a check.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckView {
    pub id: String,
    /// The verification's status after the check: `approved`, `pending` (wrong; `checks_left` more) or
    /// `max_checks_reached` (wrong, and it was the last check).
    pub status: String,
    /// True when the submitted token belongs to a link that a resend replaced.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub superseded: bool,
    pub checks_left: u32,
}

fn utc(time: NaiveDateTime) -> DateTime<Utc> {
    time.and_utc()
}

fn left(limit: u32, used: i32) -> u32 {
    limit.saturating_sub(u32::try_from(used).unwrap_or(u32::MAX))
}

impl VerificationView {
    pub(super) fn new(
        row: &VerificationRow,
        now: NaiveDateTime,
        settings: &VerificationSettings,
        sends: Option<Vec<SendView>>,
    ) -> Self {
        let mut status = Status::parse(&row.status).unwrap_or(Status::Canceled);
        if status == Status::Pending && now >= row.expires_at {
            status = Status::Expired;
        }
        let sends_left = left(settings.max_sends, row.sends);
        let resend_available_at = (status == Status::Pending && sends_left > 0)
            .then(|| {
                let interval = TimeDelta::seconds(
                    i64::try_from(settings.resend_interval_seconds).unwrap_or(0),
                );
                (row.last_sent_at + interval).max(now)
            })
            .filter(|at| *at < row.expires_at)
            .map(utc);
        Self {
            id: row.id.clone(),
            status: status.as_str().into(),
            purpose: row.purpose.clone(),
            channel: row.channel.clone(),
            to: reclaim_common::secret::mask_address(&row.destination),
            kind: row.kind.clone(),
            expires_at: utc(row.expires_at),
            resend_available_at,
            sends_left: if status == Status::Pending {
                sends_left
            } else {
                0
            },
            checks_left: if status == Status::Pending {
                left(settings.max_checks, row.checks)
            } else {
                0
            },
            created_at: utc(row.created_at),
            sends,
        }
    }
}

impl SendView {
    pub(super) fn new(send: &SendRow, message: Option<&MessageRow>) -> Self {
        Self {
            number: send.number,
            channel: send.channel.clone(),
            sent_at: utc(send.created_at),
            message_id: send.message_id.clone(),
            message_status: message.map(|m| m.status.as_str().to_string()),
        }
    }
}

impl CheckView {
    pub(super) fn new(row: &VerificationRow, outcome: CheckOutcome, max_checks: i32) -> Self {
        let checks_left = u32::try_from((max_checks - row.checks).max(0)).unwrap_or(0);
        Self {
            id: row.id.clone(),
            status: row.status.clone(),
            superseded: outcome == CheckOutcome::Superseded,
            checks_left: if outcome == CheckOutcome::Approved {
                0
            } else {
                checks_left
            },
        }
    }
}
