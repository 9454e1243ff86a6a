//! The outbox: durable messages and their attempts, and the few storage steps the delivery worker takes
//! (claim with a lease, record an outcome). Every function runs inside the caller's connection; none holds a
//! transaction across a provider call.

use crate::channel::Channel;
use crate::schema::{gateway_attempts, gateway_messages};
use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;
use reclaim_common::db::{write_transaction, AnyConnection, DbError};
use serde::{Deserialize, Serialize};

/// Message states; `queued` and `sending` are the live ones.
pub mod status {
    pub const QUEUED: &str = "queued";
    pub const SENDING: &str = "sending";
    pub const SENT: &str = "sent";
    pub const DELIVERED: &str = "delivered";
    pub const UNDELIVERED: &str = "undelivered";
    pub const FAILED: &str = "failed";
    pub const EXPIRED: &str = "expired";
    pub const CANCELED: &str = "canceled";
    pub const ALL: [&str; 8] = [
        QUEUED,
        SENDING,
        SENT,
        DELIVERED,
        UNDELIVERED,
        FAILED,
        EXPIRED,
        CANCELED,
    ];
}

/// One step of a fallback chain: the channel to try next, and the address when it is not the current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackStep {
    pub channel: Channel,
    pub to: String,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = gateway_messages)]
pub struct MessageRow {
    pub id: String,
    pub channel: String,
    pub destination: String,
    pub template: String,
    pub locale: String,
    pub data: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub lease_owner: Option<String>,
    pub lease_until: Option<NaiveDateTime>,
    pub expires_at: Option<NaiveDateTime>,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    pub last_error: Option<String>,
    pub fallback: String,
    pub fallback_position: i32,
    pub idempotency_key: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl MessageRow {
    pub fn fallback_steps(&self) -> Vec<FallbackStep> {
        serde_json::from_str(&self.fallback).unwrap_or_default()
    }

    /// The next fallback step, if the chain has one left.
    pub fn next_fallback(&self) -> Option<FallbackStep> {
        usize::try_from(self.fallback_position)
            .ok()
            .and_then(|i| self.fallback_steps().into_iter().nth(i))
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = gateway_attempts)]
pub struct AttemptRow {
    pub message_id: String,
    pub number: i32,
    pub channel: String,
    pub provider: String,
    /// `sent`, `transient`, `permanent`, `timeout`, later `delivered` / `undelivered` from callbacks.
    pub outcome: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub provider_message_id: Option<String>,
    pub latency_ms: i64,
    pub started_at: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = gateway_messages)]
pub struct NewMessage {
    pub id: String,
    pub channel: String,
    pub destination: String,
    pub template: String,
    pub locale: String,
    pub data: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub expires_at: Option<NaiveDateTime>,
    pub fallback: String,
    pub fallback_position: i32,
    pub idempotency_key: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

pub fn insert(conn: &mut AnyConnection, message: &NewMessage) -> Result<(), DbError> {
    diesel::insert_into(gateway_messages::table)
        .values(message.clone())
        .execute(conn)?;
    Ok(())
}

pub fn find(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<(MessageRow, Vec<AttemptRow>)>, DbError> {
    let Some(message) = gateway_messages::table
        .find(id)
        .select(MessageRow::as_select())
        .first(conn)
        .optional()?
    else {
        return Ok(None);
    };
    let attempts = gateway_attempts::table
        .filter(gateway_attempts::message_id.eq(id))
        .order(gateway_attempts::number.asc())
        .select(AttemptRow::as_select())
        .load(conn)?;
    Ok(Some((message, attempts)))
}

pub fn find_by_provider_message_id(
    conn: &mut AnyConnection,
    provider_message_id: &str,
) -> Result<Option<MessageRow>, DbError> {
    Ok(gateway_messages::table
        .filter(gateway_messages::provider_message_id.eq(provider_message_id))
        .select(MessageRow::as_select())
        .first(conn)
        .optional()?)
}

/// Takes the most overdue message that is queued and due, or whose lease ran out (its worker died), and
/// leases it to `owner` until `now + lease`. The claim is committed before the caller sends anything.
pub fn claim(
    conn: &mut AnyConnection,
    owner: &str,
    now: NaiveDateTime,
    lease: TimeDelta,
) -> Result<Option<MessageRow>, DbError> {
    use gateway_messages::dsl as m;
    write_transaction(conn, |conn| {
        let due = m::gateway_messages
            .filter(
                m::status
                    .eq(status::QUEUED)
                    .and(m::next_attempt_at.le(now))
                    .or(m::status.eq(status::SENDING).and(m::lease_until.lt(now))),
            )
            .order(m::next_attempt_at.asc())
            .select(m::id);
        let id: Option<String> = match conn {
            // Other workers skip the row we lock instead of waiting for it.
            AnyConnection::Postgresql(c) => due.for_update().skip_locked().first(c).optional()?,
            // BEGIN IMMEDIATE already serialises writers on SQLite.
            AnyConnection::Sqlite(c) => due.first(c).optional()?,
        };
        let Some(id) = id else { return Ok(None) };
        diesel::update(m::gateway_messages.find(&id))
            .set((
                m::status.eq(status::SENDING),
                m::lease_owner.eq(owner),
                m::lease_until.eq(now + lease),
                m::attempts.eq(m::attempts + 1),
                m::updated_at.eq(now),
            ))
            .execute(conn)?;
        Ok(m::gateway_messages
            .find(&id)
            .select(MessageRow::as_select())
            .first(conn)
            .optional()?)
    })
}

/// Where a message goes after an attempt.
#[derive(Debug, Clone)]
pub enum Transition {
    Sent {
        provider: String,
        provider_message_id: Option<String>,
    },
    Retry {
        at: NaiveDateTime,
        error: String,
    },
    Fallback {
        step: FallbackStep,
        position: i32,
        error: String,
    },
    /// `failed` or `expired`.
    Final {
        status: &'static str,
        error: String,
    },
}

/// Records an attempt and moves the message on, if `owner` still holds its lease. Returns false when the
/// lease was lost (another worker took the message over); nothing is written then.
pub fn record(
    conn: &mut AnyConnection,
    owner: &str,
    attempt: Option<AttemptRow>,
    message_id: &str,
    transition: Transition,
    now: NaiveDateTime,
) -> Result<bool, DbError> {
    write_transaction(conn, |conn| {
        let updated = apply(conn, message_id, Some(owner), &transition, now)?;
        if updated == 0 {
            return Ok(false);
        }
        if let Some(attempt) = attempt {
            diesel::insert_into(gateway_attempts::table)
                .values(attempt)
                .execute(conn)?;
        }
        Ok(true)
    })
}

fn apply(
    conn: &mut AnyConnection,
    message_id: &str,
    owner: Option<&str>,
    transition: &Transition,
    now: NaiveDateTime,
) -> Result<usize, DbError> {
    use gateway_messages::dsl as m;
    let target = m::gateway_messages.filter(m::id.eq(message_id));
    let no_lease = (
        m::lease_owner.eq(None::<String>),
        m::lease_until.eq(None::<NaiveDateTime>),
        m::updated_at.eq(now),
    );
    macro_rules! update {
        ($changes:expr) => {
            match owner {
                Some(owner) => diesel::update(
                    target
                        .filter(m::lease_owner.eq(owner))
                        .filter(m::status.eq(status::SENDING)),
                )
                .set(($changes, no_lease))
                .execute(conn)?,
                None => diesel::update(target)
                    .set(($changes, no_lease))
                    .execute(conn)?,
            }
        };
    }
    Ok(match transition {
        Transition::Sent {
            provider,
            provider_message_id,
        } => update!((
            m::status.eq(status::SENT),
            m::provider.eq(provider),
            m::provider_message_id.eq(provider_message_id),
        )),
        Transition::Retry { at, error } => update!((
            m::status.eq(status::QUEUED),
            m::next_attempt_at.eq(at),
            m::last_error.eq(error),
        )),
        Transition::Fallback {
            step,
            position,
            error,
        } => update!((
            m::status.eq(status::QUEUED),
            m::next_attempt_at.eq(now),
            m::channel.eq(step.channel.as_str()),
            m::destination.eq(&step.to),
            m::fallback_position.eq(position),
            m::last_error.eq(error),
            m::provider_message_id.eq(None::<String>),
        )),
        Transition::Final { status, error } => {
            update!((m::status.eq(*status), m::last_error.eq(error)))
        }
    })
}

/// A provider's later report on a sent message (status callback): `delivered`, or `undelivered` followed by
/// the next fallback step when there is one. Returns the message's new status ([`UNCHANGED`] for a late or
/// repeated report), or None if the message is unknown.
pub fn report_delivery(
    conn: &mut AnyConnection,
    provider_message_id: &str,
    delivered: bool,
    error_code: Option<&str>,
    now: NaiveDateTime,
) -> Result<Option<(MessageRow, &'static str)>, DbError> {
    use gateway_messages::dsl as m;
    write_transaction(conn, |conn| {
        let Some(message) = find_by_provider_message_id(conn, provider_message_id)? else {
            return Ok(None);
        };
        let outcome = if delivered {
            "delivered"
        } else {
            "undelivered"
        };
        diesel::update(
            gateway_attempts::table
                .filter(gateway_attempts::message_id.eq(&message.id))
                .filter(gateway_attempts::provider_message_id.eq(provider_message_id)),
        )
        .set((
            gateway_attempts::outcome.eq(outcome),
            gateway_attempts::error_code.eq(error_code),
        ))
        .execute(conn)?;
        // Reports may arrive late or twice; only a message still waiting for news changes.
        if message.status != status::SENT {
            return Ok(Some((message, UNCHANGED)));
        }
        let new_status = if delivered {
            diesel::update(m::gateway_messages.find(&message.id))
                .set((m::status.eq(status::DELIVERED), m::updated_at.eq(now)))
                .execute(conn)?;
            status::DELIVERED
        } else {
            let error = format!(
                "provider reported undelivered{}",
                error_code.map(|c| format!(" ({c})")).unwrap_or_default()
            );
            let transition = match message.next_fallback() {
                Some(step) => Transition::Fallback {
                    step,
                    position: message.fallback_position + 1,
                    error,
                },
                None => Transition::Final {
                    status: status::UNDELIVERED,
                    error,
                },
            };
            apply(conn, &message.id, None, &transition, now)?;
            match transition {
                Transition::Fallback { .. } => status::QUEUED,
                _ => status::UNDELIVERED,
            }
        };
        Ok(Some((message, new_status)))
    })
}

/// What [`report_delivery`] answers when the message had already moved on.
pub const UNCHANGED: &str = "unchanged";

/// Messages per status, for the `reclaim_gateway_outbox` gauge.
pub fn count_by_status(conn: &mut AnyConnection) -> Result<Vec<(String, i64)>, DbError> {
    use gateway_messages::dsl as m;
    Ok(m::gateway_messages
        .group_by(m::status)
        .select((m::status, diesel::dsl::count_star()))
        .load(conn)?)
}

/// When the longest-waiting due message became due.
pub fn oldest_due(
    conn: &mut AnyConnection,
    now: NaiveDateTime,
) -> Result<Option<NaiveDateTime>, DbError> {
    use gateway_messages::dsl as m;
    Ok(m::gateway_messages
        .filter(m::status.eq(status::QUEUED).and(m::next_attempt_at.le(now)))
        .select(m::next_attempt_at)
        .order(m::next_attempt_at.asc())
        .first(conn)
        .optional()?)
}
