//! The outbox: durable messages and their attempts, and the few storage steps the delivery worker takes
//! (claim with a lease, record an outcome). Every function runs inside the caller's connection; none holds a
//! transaction across a provider call.
//!
//! Message data (the template's variables: codes, links) is sealed with the gateway's keyring on insert
//! ([`insert`]), opened by the worker ([`MessageRow::open_data`]) and wiped once the message is spent
//! ([`MessageRow::data_is_spent`]), so a code or link is never readable from the database.

use crate::channel::Channel;
use crate::schema::{gateway_attempts, gateway_messages};
use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;
use reclaim_common::db::{write_transaction, AnyConnection, DbError};
use reclaim_common::sealed::{Keyring, OpenError};
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
    /// The template variables as JSON text, opened with any key of `keyring`.
    pub fn open_data(&self, keyring: &Keyring) -> Result<String, OpenError> {
        if self.data.starts_with('{') {
            // Written before message data was sealed; `POST /admin/storage/reseal` seals such rows.
            return Ok(self.data.clone());
        }
        if self.data.is_empty() {
            return Err(OpenError::Malformed);
        }
        keyring.open_text(&data_context(&self.id), &self.data)
    }

    /// Whether the message can no longer be sent, so its data (codes, links) must go. A sent SMS or voice
    /// message with a fallback step left keeps its data: an `undelivered` status callback may still send it
    /// on the next channel. Email gets no such callback, so a sent email is spent at once.
    pub fn data_is_spent(&self) -> bool {
        match self.status.as_str() {
            status::DELIVERED
            | status::UNDELIVERED
            | status::FAILED
            | status::EXPIRED
            | status::CANCELED => true,
            status::SENT => {
                let callbacks =
                    Channel::parse(&self.channel).is_some_and(Channel::uses_phone_numbers);
                !(callbacks && self.next_fallback().is_some())
            }
            _ => false,
        }
    }

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

/// The authenticated context of a message's sealed data: it opens only in its own row.
fn data_context(message_id: &str) -> String {
    format!("gateway_messages.data:{message_id}")
}

/// Inserts a message; its `data` (JSON text) is stored sealed with the newest key of `keyring`.
pub fn insert(
    conn: &mut AnyConnection,
    message: &NewMessage,
    keyring: &Keyring,
) -> Result<(), DbError> {
    let mut sealed = message.clone();
    sealed.data = keyring.seal(&data_context(&message.id), message.data.as_bytes());
    diesel::insert_into(gateway_messages::table)
        .values(sealed)
        .execute(conn)?;
    Ok(())
}

/// Empties the data of a message that can no longer be sent (see [`MessageRow::data_is_spent`]). Runs in
/// the transaction of every state change.
fn wipe_spent_data(conn: &mut AnyConnection, message_id: &str) -> Result<(), DbError> {
    use gateway_messages::dsl as m;
    let Some(message) = m::gateway_messages
        .find(message_id)
        .select(MessageRow::as_select())
        .first(conn)
        .optional()?
    else {
        return Ok(());
    };
    if !message.data.is_empty() && message.data_is_spent() {
        diesel::update(m::gateway_messages.find(message_id))
            .set(m::data.eq(""))
            .execute(conn)?;
    }
    Ok(())
}

/// One batch of a re-seal: see [`reseal_batch`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResealBatch {
    pub resealed: usize,
    /// Sealed with a key that is no longer configured, or altered; left as they are.
    pub unreadable: usize,
    /// The last message id looked at; `None` when the batch was empty (the scan is over).
    pub last_id: Option<String>,
}

/// Re-seals with the newest key up to `limit` messages after `after` (by id) whose data another key sealed
/// or that predate sealing. Call again with `last_id` until it is `None`.
pub fn reseal_batch(
    conn: &mut AnyConnection,
    keyring: &Keyring,
    after: &str,
    limit: i64,
) -> Result<ResealBatch, DbError> {
    use gateway_messages::dsl as m;
    // Key ids may hold `_`, a LIKE wildcard.
    let current = format!("v1:{}:%", keyring.newest_id().replace('_', "\\_"));
    write_transaction(conn, |conn| {
        let rows: Vec<(String, String)> = m::gateway_messages
            .filter(m::id.gt(after))
            .filter(m::data.ne(""))
            .filter(m::data.not_like(&current).escape('\\'))
            .order(m::id.asc())
            .limit(limit)
            .select((m::id, m::data))
            .load(conn)?;
        let mut batch = ResealBatch::default();
        for (id, data) in rows {
            let context = data_context(&id);
            let opened = if data.starts_with('{') {
                Ok(data.clone())
            } else {
                keyring.open_text(&context, &data)
            };
            match opened {
                Ok(plain) => {
                    diesel::update(m::gateway_messages.find(&id))
                        .set(m::data.eq(keyring.seal(&context, plain.as_bytes())))
                        .execute(conn)?;
                    batch.resealed += 1;
                }
                Err(_) => batch.unreadable += 1,
            }
            batch.last_id = Some(id);
        }
        Ok(batch)
    })
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
        wipe_spent_data(conn, message_id)?;
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
        wipe_spent_data(conn, &message.id)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(channel: &str, status: &str, fallback: &str, position: i32) -> MessageRow {
        let now = chrono::Utc::now().naive_utc();
        MessageRow {
            id: "m".into(),
            channel: channel.into(),
            destination: "+14155550100".into(),
            template: "t".into(),
            locale: "en".into(),
            data: "v1:k:x".into(),
            status: status.into(),
            attempts: 1,
            next_attempt_at: now,
            lease_owner: None,
            lease_until: None,
            expires_at: None,
            provider: None,
            provider_message_id: None,
            last_error: None,
            fallback: fallback.into(),
            fallback_position: position,
            idempotency_key: None,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn data_is_kept_while_a_send_may_still_happen() {
        let voice = r#"[{"channel":"voice","to":"+14155550100"}]"#;
        assert!(!row("sms", status::QUEUED, "[]", 0).data_is_spent());
        assert!(!row("sms", status::SENDING, "[]", 0).data_is_spent());
        // An undelivered report may still fall back to voice.
        assert!(!row("sms", status::SENT, voice, 0).data_is_spent());
        assert!(row("sms", status::SENT, voice, 1).data_is_spent());
        assert!(row("sms", status::SENT, "[]", 0).data_is_spent());
        // Email gets no delivery reports: nothing can fall back after it was sent.
        let alternate = r#"[{"channel":"email","to":"b@example.com"}]"#;
        assert!(row("email", status::SENT, alternate, 0).data_is_spent());
        for final_status in [
            status::DELIVERED,
            status::UNDELIVERED,
            status::FAILED,
            status::EXPIRED,
            status::CANCELED,
        ] {
            assert!(row("sms", final_status, voice, 0).data_is_spent());
        }
    }
}
