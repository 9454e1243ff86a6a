//! What every identity provider hook does with a message it planned, in the caller's write transaction:
//! claim its idempotency record (a retry gets the first answer), pass the abuse limits, insert it into the
//! outbox, remember the answer. The claim and the answer commit together, so no claim is ever seen pending.
//!
//! Used by the Kratos courier (`kratos::courier`) and Supabase's send hooks (`supabase`); each picks its
//! dedupe key and its answers.

use crate::address::Destination;
use crate::channel::Channel;
use crate::limits::{Limits, Refusal, SendAttempt};
use crate::outbox::{self, MessageStatus, NewMessage};
use crate::templates::Templates;
use chrono::NaiveDateTime;
use reclaim_common::db::{AnyConnection, DbError};
use reclaim_common::idempotency::{self, Claim, Remembered};
use reclaim_common::sealed::Keyring;
use reclaim_common::settings::GatewaySettings;
use serde_json::Value;

/// What [`admit_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Queued now as message `id`; `answer` is the body remembered for retries.
    Queued { id: String, answer: String },
    /// A retry of a call already answered: nothing queued; the first answer.
    Duplicate(Remembered),
    /// Refused by the abuse limits: nothing queued; the answer is remembered, so a retry gets the same.
    Throttled { refusal: Refusal, answer: String },
}

/// The answers [`admit_once`] remembers: their HTTP status and bodies.
pub struct Answers<'a> {
    pub status: u16,
    pub queued: String,
    pub throttled: &'a dyn Fn(&Refusal) -> String,
}

/// Queues `planned` once per `once` (see the module doc). Runs inside the caller's write transaction.
pub fn admit_once(
    conn: &mut AnyConnection,
    once: &idempotency::Request,
    attempt: &SendAttempt<'_>,
    planned: &NewMessage,
    keyring: &Keyring,
    limits: &Limits,
    answers: &Answers<'_>,
) -> Result<Admission, DbError> {
    let now = planned.created_at;
    match idempotency::claim(conn, once, now)? {
        Claim::Claimed => {}
        Claim::Answered(first) => return Ok(Admission::Duplicate(first)),
        Claim::Pending { .. } => {
            return Err(DbError::Task(format!(
                "a {} dedupe key is pending",
                once.scope()
            )))
        }
    }
    if let Err(refusal) = limits.admit(conn, attempt, now)? {
        let answer = (answers.throttled)(&refusal);
        idempotency::complete(conn, once, answers.status, &answer)?;
        return Ok(Admission::Throttled { refusal, answer });
    }
    outbox::insert(conn, planned, keyring)?;
    idempotency::complete(conn, once, answers.status, &answers.queued)?;
    Ok(Admission::Queued {
        id: planned.id.clone(),
        answer: answers.queued.clone(),
    })
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
