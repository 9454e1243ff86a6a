//! Queueing a message an identity provider handed over (Kratos's courier, ZITADEL's HTTP providers): once
//! per retry window, under the abuse limits, in one write transaction.
//!
//! The providers send no message id and retry after any non-2xx answer, re-sending the same body. A
//! [`Handoff`] names what tells a retry from a new message (its `material`: recipient, message type, code);
//! [`queue`] keys a remembered answer (`reclaim_common::idempotency`, one scope per provider) on a keyed
//! digest of it, so no code or address is stored in clear, only inside the sealed message data.

use crate::address::Destination;
use crate::channel::Channel;
use crate::limits::{Limits, Refusal, SendAttempt};
use crate::outbox::{self, NewMessage};
use chrono::TimeDelta;
use reclaim_common::db::{write_transaction, AnyConnection, DbError};
use reclaim_common::idempotency::{self, Claim, IdempotencyKey, Remembered};
use reclaim_common::sealed::Keyring;
use reclaim_common::Db;
use serde_json::json;

/// A message handed over by an identity provider, as far as queueing it once is concerned.
#[derive(Debug, Clone)]
pub struct Handoff {
    /// The idempotency scope of the provider's dedupe records, and the context of their keyed digests.
    pub scope: &'static str,
    /// What tells a retry from a new message; only its keyed digest is stored.
    pub material: String,
    pub channel: Channel,
    pub destination: Destination,
    /// The identity the message is about, so erasing it forgets the dedupe record.
    pub identity_id: Option<String>,
}

/// What [`queue`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoffOutcome {
    /// Queued as a new message; `answer` is the JSON answer (`{"id": ...}`) also remembered for retries.
    Queued { id: String, answer: String },
    /// The provider's retry of a message queued within the window: nothing queued; the first answer.
    Duplicate(Remembered),
    /// Refused by the abuse limits: nothing queued, answered 2xx all the same (the provider would retry
    /// anything else) and remembered, so a retry gets the same answer.
    Throttled { refusal: Refusal, answer: String },
}

/// Queues `planned` unless the same message was queued within `window` of its creation time. Runs inside the
/// caller's write transaction, so checks that must hold with the insert (abuse limits) can join it.
pub fn queue(
    conn: &mut AnyConnection,
    handoff: &Handoff,
    planned: &NewMessage,
    keyring: &Keyring,
    limits: &Limits,
    window: TimeDelta,
) -> Result<HandoffOutcome, DbError> {
    let now = planned.created_at;
    let digest = keyring.digest(handoff.scope, handoff.material.as_bytes());
    let key = IdempotencyKey::parse(&digest)
        .map_err(|e| DbError::Task(format!("a dedupe key is unusable: {e}")))?;
    let mut once = idempotency::Request::new(handoff.scope, key, b"");
    if let Some(identity) = &handoff.identity_id {
        once = once.about(identity.clone());
    }
    idempotency::forget_if_older(conn, &once, now - window)?;
    match idempotency::claim(conn, &once, now)? {
        Claim::Claimed => {}
        Claim::Answered(first) => return Ok(HandoffOutcome::Duplicate(first)),
        // Claim and answer commit together here, so no claim of this scope is ever seen pending.
        Claim::Pending { .. } => return Err(DbError::Task("a dedupe key is pending".into())),
    }
    let attempt = SendAttempt {
        channel: handoff.channel,
        destination: &handoff.destination,
        // Identity providers forward no client address we could trust (Kratos passes only headers the
        // user can write; ZITADEL none): nothing worth limiting on.
        client_ip: None,
        identity_id: handoff.identity_id.as_deref(),
    };
    if let Err(refusal) = limits.admit(conn, &attempt, now)? {
        let answer = json!({"id": null, "throttled": refusal.reason.as_str()}).to_string();
        idempotency::complete(conn, &once, 202, &answer)?;
        return Ok(HandoffOutcome::Throttled { refusal, answer });
    }
    outbox::insert(conn, planned, keyring)?;
    let answer = json!({"id": planned.id}).to_string();
    idempotency::complete(conn, &once, 202, &answer)?;
    Ok(HandoffOutcome::Queued {
        id: planned.id.clone(),
        answer,
    })
}

/// [`queue`] in a write transaction of its own, off the async threads.
pub async fn queue_in_transaction(
    db: &Db,
    handoff: Handoff,
    planned: NewMessage,
    keyring: Keyring,
    limits: Limits,
    window: TimeDelta,
) -> Result<HandoffOutcome, DbError> {
    db.run(move |conn| {
        write_transaction(conn, |conn| {
            queue(conn, &handoff, &planned, &keyring, &limits, window)
        })
    })
    .await
}
