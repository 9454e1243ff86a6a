//! Queueing a message an identity provider handed over (Kratos's courier, ZITADEL's HTTP providers,
//! Supabase's send hooks): once per retry window, under the abuse limits, in one write transaction; and the
//! outbox message they all build ([`new_message`]).
//!
//! The providers send no message id and retry after any non-2xx answer, re-sending the same body. A
//! [`Handoff`] names what tells a retry from a new message (its `material`: recipient, message type, code);
//! [`queue`] keys a remembered answer (`reclaim_common::idempotency`, one scope per provider) on a keyed
//! digest of it, so no code or address is stored in clear, only inside the sealed message data.

use crate::address::Destination;
use crate::channel::Channel;
use crate::limits::{Limits, Refusal, SendAttempt};
use crate::outbox::{self, MessageStatus, NewMessage};
use crate::templates::Templates;
use chrono::{NaiveDateTime, TimeDelta};
use reclaim_common::db::{write_transaction, AnyConnection, DbError};
use reclaim_common::idempotency::{self, Claim, IdempotencyKey, Remembered};
use reclaim_common::sealed::Keyring;
use reclaim_common::settings::GatewaySettings;
use reclaim_common::Db;
use serde_json::{json, Value};

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
    /// What the provider is answered, and a retry again.
    pub answers: &'static Answers,
}

/// The answers [`queue`] gives and remembers: their HTTP status and bodies.
#[derive(Debug)]
pub struct Answers {
    pub status: u16,
    /// The body once `planned` is queued.
    pub queued: fn(&NewMessage) -> String,
    /// The body when the abuse limits refuse the send.
    pub throttled: fn(&Refusal) -> String,
}

/// Kratos's and ZITADEL's answers: 202 with `{"id": ...}`, or `{"id": null, "throttled": <reason>}`.
pub const ID_ANSWERS: Answers = Answers {
    status: 202,
    queued: |planned| json!({"id": planned.id}).to_string(),
    throttled: |refusal| json!({"id": null, "throttled": refusal.reason.as_str()}).to_string(),
};

/// What [`queue`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoffOutcome {
    /// Queued as a new message; `answer` is the JSON answer ([`Answers::queued`]) also remembered for retries.
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
    let answers = handoff.answers;
    if let Err(refusal) = limits.admit(conn, &attempt, now)? {
        let answer = (answers.throttled)(&refusal);
        idempotency::complete(conn, &once, answers.status, &answer)?;
        return Ok(HandoffOutcome::Throttled { refusal, answer });
    }
    outbox::insert(conn, planned, keyring)?;
    let answer = (answers.queued)(planned);
    idempotency::complete(conn, &once, answers.status, &answer)?;
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

/// An outbox message of `template` (already rendered once by the caller, so it is known to render), queued
/// now with the fallback chain configured for it.
#[allow(clippy::too_many_arguments)]
pub fn new_message(
    settings: &GatewaySettings,
    templates: &Templates,
    template: &str,
    locale: &str,
    channel: Channel,
    destination: &Destination,
    data: &Value,
    expires_at: Option<NaiveDateTime>,
    id: String,
    now: NaiveDateTime,
) -> NewMessage {
    let fallback = crate::fallback::configured(
        &settings.channels,
        templates,
        template,
        locale,
        channel,
        destination,
    );
    NewMessage {
        id,
        channel: channel.as_str().into(),
        destination: destination.as_str().into(),
        template: template.into(),
        locale: locale.into(),
        data: data.to_string(),
        status: MessageStatus::Queued,
        attempts: 0,
        next_attempt_at: now,
        expires_at,
        fallback: serde_json::to_string(&fallback).unwrap_or_else(|_| "[]".into()),
        fallback_position: 0,
        idempotency_key: None,
        created_at: now,
        updated_at: now,
    }
}
