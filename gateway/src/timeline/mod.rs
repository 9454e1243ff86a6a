//! The support timeline: everything the gateway did for one address, for the operator answering "I never
//! got the code" (`GET /admin/recipients/{address}/timeline`). Messages and verifications to the address,
//! newest first, each attempt with its provider, outcome, error code and what that code means in words
//! (`meaning`), the fallback steps taken, the delivery report, and where the address stands with the
//! per-destination abuse limits (which limit refuses a send now, and when it lifts).
//!
//! The address asked for is shown in full; every other address (a fallback step to another address) is
//! masked.

mod meaning;

pub use meaning::{code_meaning, meaning};

use crate::address::Destination;
use crate::channel::Channel;
use crate::limits::{Limits, Reason};
use crate::outbox::{self, AttemptRow, MessageRow, MessageStatus};
use crate::schema::{gateway_verification_sends, gateway_verifications};
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};
use reclaim_common::db::{AnyConnection, DbError};
use reclaim_common::secret::mask_address;
use serde::Serialize;
use utoipa::ToSchema;

/// Most messages, and most verifications, one timeline shows.
pub const MAX_ENTRIES: i64 = 200;

/// An address asked about: an email address (any case) or an E.164 phone number.
#[derive(Debug, Clone)]
pub struct Recipient {
    destination: Destination,
    /// As messages and verifications are found by it ([`outbox::recipient_key`]).
    key: String,
}

impl Recipient {
    /// Parses `raw` as the API parses a `to`: `+` and digits for a phone number, else an email address.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let channel = if raw.starts_with('+') {
            Channel::Sms
        } else if raw.contains('@') {
            Channel::Email
        } else {
            return Err(
                "must be an email address or a phone number in E.164 form, e.g. +14155550100"
                    .into(),
            );
        };
        let destination = Destination::parse(channel, raw)?;
        let key = outbox::recipient_key(destination.as_str());
        Ok(Self { destination, key })
    }

    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// For logs: `j***@example.com`.
    pub fn masked(&self) -> String {
        self.destination.masked()
    }

    /// `address` in full when it is this recipient, masked otherwise.
    fn show(&self, address: &str) -> String {
        if outbox::recipient_key(address) == self.key {
            self.key.clone()
        } else {
            mask_address(address)
        }
    }
}

/// Everything sent to one address since a time.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineView {
    /// The address asked for, normalised (email addresses lowercased).
    pub address: String,
    pub since: DateTime<Utc>,
    /// Messages and verifications, newest first.
    pub entries: Vec<TimelineEntry>,
    /// Where the address stands with the per-destination limits now.
    pub limits: LimitsView,
}

/// One message or verification.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEntry {
    pub id: String,
    /// `message` or `verification`.
    pub kind: String,
    /// Messages: the template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Verifications: why it was started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The channel it is (or was last) on.
    pub channel: String,
    /// Messages: `queued | sending | sent | delivered | undelivered | failed | expired | canceled`;
    /// verifications: `pending | approved | max_checks_reached | expired | canceled`.
    pub status: String,
    /// Messages: where the current fallback step sends it (the asked address in full, any other masked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Messages: when the provider reported it delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
    /// Messages: why it is not (yet) delivered, as the worker last recorded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Messages: every attempt, oldest first.
    pub attempts: Vec<AttemptEntry>,
    /// Messages: the fallback chain, and which of its steps were taken.
    pub fallbacks: Vec<FallbackEntry>,
    /// Verifications: each send, with the message that carried it.
    pub sends: Vec<SendEntry>,
}

/// One attempt of a message.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptEntry {
    pub number: i32,
    pub channel: String,
    pub provider: String,
    /// `sent | transient | permanent | timeout | delivered | undelivered`
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// What the outcome and error code mean, in words.
    pub meaning: String,
    pub started_at: DateTime<Utc>,
    pub latency_ms: i64,
}

/// One step of a message's fallback chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct FallbackEntry {
    pub channel: String,
    /// The asked address in full, any other masked.
    pub to: String,
    /// Whether the message moved on to this step.
    pub taken: bool,
}

/// One send of a verification.
#[derive(Debug, Serialize, ToSchema)]
pub struct SendEntry {
    pub number: i32,
    pub channel: String,
    pub sent_at: DateTime<Utc>,
    /// The message that carried it (none when nothing was sent to an unknown destination).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// The per-destination limits on the address now.
#[derive(Debug, Serialize, ToSchema)]
pub struct LimitsView {
    /// Sends to the address the limits still count, newest first.
    pub counted_sends: Vec<DateTime<Utc>>,
    /// Each limit that would refuse a send now; empty when a send would be let through.
    pub refusals: Vec<RefusalEntry>,
}

/// A limit that refuses sends to the address, until `lifts_at`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefusalEntry {
    /// `destination_cooldown` or `destination_window`.
    pub limit: String,
    /// What it means, in words.
    pub meaning: String,
    pub lifts_at: DateTime<Utc>,
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = gateway_verifications)]
struct VerificationRow {
    id: String,
    purpose: String,
    channel: String,
    status: String,
    expires_at: NaiveDateTime,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = gateway_verification_sends)]
struct SendRow {
    number: i32,
    channel: String,
    message_id: Option<String>,
    created_at: NaiveDateTime,
}

fn utc(time: NaiveDateTime) -> DateTime<Utc> {
    time.and_utc()
}

/// The timeline of `recipient` since `since`, as it stands at `now`.
pub fn build(
    conn: &mut AnyConnection,
    limits: &Limits,
    recipient: &Recipient,
    since: NaiveDateTime,
    now: NaiveDateTime,
) -> Result<TimelineView, DbError> {
    let mut entries: Vec<TimelineEntry> =
        outbox::to_recipient(conn, &recipient.key, since, MAX_ENTRIES)?
            .into_iter()
            .map(|(message, attempts)| message_entry(recipient, &message, &attempts))
            .collect();
    for verification in verifications_to(conn, &recipient.key, since)? {
        let sends = gateway_verification_sends::table
            .filter(gateway_verification_sends::verification_id.eq(&verification.id))
            .order(gateway_verification_sends::number.asc())
            .select(SendRow::as_select())
            .load(conn)?;
        entries.push(verification_entry(&verification, sends, now));
    }
    entries.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    let standing = limits.standing(conn, recipient.destination(), now)?;
    Ok(TimelineView {
        address: recipient.key.clone(),
        since: utc(since),
        entries,
        limits: LimitsView {
            counted_sends: standing.counted_sends.into_iter().map(utc).collect(),
            refusals: standing
                .refusals
                .into_iter()
                .map(|(reason, lifts_at)| RefusalEntry {
                    limit: reason.as_str().into(),
                    meaning: refusal_meaning(reason).into(),
                    lifts_at: utc(lifts_at),
                })
                .collect(),
        },
    })
}

fn refusal_meaning(reason: Reason) -> &'static str {
    match reason {
        Reason::DestinationCooldown => {
            "a message was sent to this address moments ago; the next waits for the cooldown"
        }
        Reason::DestinationWindow => {
            "the most messages allowed to this address in the window were sent"
        }
        _ => "a limit refuses sends to this address",
    }
}

fn verifications_to(
    conn: &mut AnyConnection,
    key: &str,
    since: NaiveDateTime,
) -> Result<Vec<VerificationRow>, DbError> {
    use gateway_verifications::dsl as v;
    Ok(v::gateway_verifications
        .filter(diesel::dsl::sql::<Bool>("lower(destination) = ").bind::<Text, _>(key.to_string()))
        .filter(v::created_at.ge(since))
        .order((v::created_at.desc(), v::id.desc()))
        .limit(MAX_ENTRIES)
        .select(VerificationRow::as_select())
        .load(conn)?)
}

fn message_entry(
    recipient: &Recipient,
    message: &MessageRow,
    attempts: &[AttemptRow],
) -> TimelineEntry {
    let taken = usize::try_from(message.fallback_position).unwrap_or(0);
    TimelineEntry {
        id: message.id.clone(),
        kind: "message".into(),
        template: Some(message.template.clone()),
        purpose: None,
        channel: message.channel.clone(),
        status: message.status.as_str().into(),
        to: Some(recipient.show(&message.destination)),
        created_at: utc(message.created_at),
        updated_at: utc(message.updated_at),
        expires_at: message.expires_at.map(utc),
        delivered_at: (message.status == MessageStatus::Delivered).then(|| utc(message.updated_at)),
        last_error: message.last_error.clone(),
        attempts: attempts
            .iter()
            .map(|a| AttemptEntry {
                number: a.number,
                channel: a.channel.clone(),
                provider: a.provider.clone(),
                outcome: a.outcome.as_str().into(),
                error_code: a.error_code.clone(),
                meaning: meaning(a.outcome, a.error_code.as_deref()),
                started_at: utc(a.started_at),
                latency_ms: a.latency_ms,
            })
            .collect(),
        fallbacks: message
            .fallback_steps()
            .into_iter()
            .enumerate()
            .map(|(i, step)| FallbackEntry {
                channel: step.channel.as_str().into(),
                to: recipient.show(&step.to),
                taken: i < taken,
            })
            .collect(),
        sends: Vec::new(),
    }
}

fn verification_entry(
    row: &VerificationRow,
    sends: Vec<SendRow>,
    now: NaiveDateTime,
) -> TimelineEntry {
    use crate::verifications::Status;
    let mut status = row.status.clone();
    if status == Status::Pending.as_str() && now >= row.expires_at {
        status = Status::Expired.as_str().into();
    }
    TimelineEntry {
        id: row.id.clone(),
        kind: "verification".into(),
        template: None,
        purpose: Some(row.purpose.clone()),
        channel: row.channel.clone(),
        status,
        to: None,
        created_at: utc(row.created_at),
        updated_at: utc(row.updated_at),
        expires_at: Some(utc(row.expires_at)),
        delivered_at: None,
        last_error: None,
        attempts: Vec::new(),
        fallbacks: Vec::new(),
        sends: sends
            .into_iter()
            .map(|s| SendEntry {
                number: s.number,
                channel: s.channel,
                sent_at: utc(s.created_at),
                message_id: s.message_id,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_emails_or_e164_numbers_and_only_the_asked_one_is_shown() {
        let email = Recipient::parse("Jane@Example.com").expect("email");
        assert_eq!(email.show("jane@example.com"), "jane@example.com");
        assert_eq!(email.show("JANE@example.COM"), "jane@example.com");
        assert_eq!(email.show("+14155550100"), mask_address("+14155550100"));
        let phone = Recipient::parse("+14155550100").expect("phone");
        assert_eq!(phone.show("+14155550100"), "+14155550100");
        for bad in [
            "jane",
            "4155550100",
            "+1 415",
            "+999123",
            "a b@example.com",
            "",
        ] {
            assert!(Recipient::parse(bad).is_err(), "{bad}");
        }
    }
}
