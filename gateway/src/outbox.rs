//! The outbox: durable messages and their attempts, and the few storage steps the delivery worker takes
//! (claim with a lease, record an outcome). Every function runs inside the caller's connection; none holds a
//! transaction across a provider call.
//!
//! Message data (the template's variables: codes, links) is sealed with the gateway's keyring on insert
//! ([`insert`]), opened by the worker ([`MessageRow::open_data`]) and wiped once the message is spent
//! ([`MessageRow::data_is_spent`]), so a code or link is never readable from the database. A message that
//! failed keeps its sealed data until it expires, so that an operator can send it again
//! ([`requeue`], `POST /admin/messages/{id}/retry`).

use crate::channel::Channel;
use crate::schema::{gateway_attempts, gateway_messages};
use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;
use diesel::sql_types::Bool;
use reclaim_common::db::{write_transaction, AnyConnection, DbError};
use reclaim_common::sealed::{Keyring, OpenError};
use serde::{Deserialize, Serialize};

/// Where a message is in its life. Stored as [`MessageStatus::as_str`]; `queued` and `sending` are the live
/// states, `sent` waits for the provider's report, the rest are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Queued,
    Sending,
    Sent,
    Delivered,
    Undelivered,
    Failed,
    Expired,
    Canceled,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 8] = [
        Self::Queued,
        Self::Sending,
        Self::Sent,
        Self::Delivered,
        Self::Undelivered,
        Self::Failed,
        Self::Expired,
        Self::Canceled,
    ];

    /// States a message never leaves (on its own); `sent` is not one: a report may still move it.
    pub const FINISHED: [MessageStatus; 5] = [
        Self::Delivered,
        Self::Undelivered,
        Self::Failed,
        Self::Expired,
        Self::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Undelivered => "undelivered",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// How one attempt went. Stored as [`AttemptOutcome::as_str`]; `delivered` and `undelivered` replace `sent`
/// when the provider reports on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Sent,
    Transient,
    Permanent,
    Timeout,
    Delivered,
    Undelivered,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 6] = [
        Self::Sent,
        Self::Transient,
        Self::Permanent,
        Self::Timeout,
        Self::Delivered,
        Self::Undelivered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Timeout => "timeout",
            Self::Delivered => "delivered",
            Self::Undelivered => "undelivered",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

/// A name in the outbox that no enum variant has: a row written by a newer version, or edited by hand.
#[derive(Debug, thiserror::Error)]
#[error("unknown {kind} `{name}` in the outbox")]
pub struct UnknownName {
    kind: &'static str,
    name: String,
}

macro_rules! stored_as_text {
    ($type:ty, $kind:literal) => {
        impl TryFrom<String> for $type {
            type Error = UnknownName;

            fn try_from(name: String) -> Result<Self, UnknownName> {
                Self::parse(&name).ok_or(UnknownName { kind: $kind, name })
            }
        }

        impl From<$type> for String {
            fn from(value: $type) -> String {
                value.as_str().to_string()
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_as_text!(MessageStatus, "message status");
stored_as_text!(AttemptOutcome, "attempt outcome");

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
    #[diesel(deserialize_as = String)]
    pub status: MessageStatus,
    /// Claims so far, all steps together (attempt rows are numbered by it).
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
    /// Attempts with an outcome on the current fallback step: the retry budget is per step.
    pub step_attempts: i32,
    /// Claims since the last recorded outcome: workers that died on this message.
    pub unrecorded_claims: i32,
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

    /// Whether the message can no longer be sent at `now`, so its data (codes, links) must go: at `sent`,
    /// `delivered`, `expired` and `canceled`, and for `failed` and `undelivered` once `expires_at` has passed
    /// (until then an operator may send it again; without an expiry it stays sealed until the retention
    /// janitor deletes the message). [`record`] keeps the data of a message sent with a status callback
    /// until its report settles it (an unreachable handset retries the step, an undelivered one may fall
    /// back).
    pub fn data_is_spent(&self, now: NaiveDateTime) -> bool {
        data_is_spent(self.status, self.expires_at, now)
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

    /// After a failure that retrying this step cannot fix: the next fallback step if the chain has one, else
    /// the end with `status`. The only place a fallback step is chosen.
    pub fn fall_back_or(&self, status: MessageStatus, error: String) -> Transition {
        match self.next_fallback() {
            Some(step) => Transition::Fallback {
                step,
                position: self.fallback_position + 1,
                error,
            },
            None => Transition::Final { status, error },
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = gateway_attempts)]
pub struct AttemptRow {
    pub message_id: String,
    pub number: i32,
    pub channel: String,
    pub provider: String,
    #[diesel(deserialize_as = String, serialize_as = String)]
    pub outcome: AttemptOutcome,
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
    #[diesel(serialize_as = String)]
    pub status: MessageStatus,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub expires_at: Option<NaiveDateTime>,
    pub fallback: String,
    pub fallback_position: i32,
    pub idempotency_key: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// [`MessageRow::data_is_spent`] from the two fields it depends on.
fn data_is_spent(
    status: MessageStatus,
    expires_at: Option<NaiveDateTime>,
    now: NaiveDateTime,
) -> bool {
    match status {
        MessageStatus::Sent
        | MessageStatus::Delivered
        | MessageStatus::Expired
        | MessageStatus::Canceled => true,
        MessageStatus::Undelivered | MessageStatus::Failed => {
            expires_at.is_some_and(|expiry| expiry <= now)
        }
        MessageStatus::Queued | MessageStatus::Sending => false,
    }
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
    insert_sealed(conn, vec![message.sealed(keyring)])
}

/// Inserts messages already [`NewMessage::sealed`], with one statement.
pub fn insert_sealed(conn: &mut AnyConnection, messages: Vec<NewMessage>) -> Result<(), DbError> {
    if messages.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = messages
        .into_iter()
        .map(|message| {
            let recipient = recipient_key(&message.destination);
            (message, gateway_messages::recipient.eq(recipient))
        })
        .collect();
    reclaim_common::per_backend!(&mut *conn, |c| diesel::insert_into(gateway_messages::table)
        .values(rows)
        .execute(c))?;
    Ok(())
}

impl NewMessage {
    /// The message with its `data` (JSON text) sealed with the newest key of `keyring`, as it is stored.
    pub fn sealed(&self, keyring: &Keyring) -> NewMessage {
        let mut sealed = self.clone();
        sealed.data = keyring.seal(&data_context(&self.id), self.data.as_bytes());
        sealed
    }

    /// The row this message is once inserted, before any worker touched it (for the enqueue answer).
    pub fn as_queued_row(&self) -> MessageRow {
        MessageRow {
            id: self.id.clone(),
            channel: self.channel.clone(),
            destination: self.destination.clone(),
            template: self.template.clone(),
            locale: self.locale.clone(),
            data: self.data.clone(),
            status: self.status,
            attempts: self.attempts,
            next_attempt_at: self.next_attempt_at,
            lease_owner: None,
            lease_until: None,
            expires_at: self.expires_at,
            provider: None,
            provider_message_id: None,
            last_error: None,
            fallback: self.fallback.clone(),
            fallback_position: self.fallback_position,
            idempotency_key: self.idempotency_key.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            step_attempts: 0,
            unrecorded_claims: 0,
        }
    }
}

/// How `recipient` holds an address: email addresses lowercased (one mailbox whatever the case), E.164
/// numbers as they are.
pub fn recipient_key(address: &str) -> String {
    address.to_lowercase()
}

/// Whether the message's data (codes, links) must go once `transition` is applied: see
/// [`MessageRow::data_is_spent`]. A send that awaits the provider's report keeps it until the report settles
/// the message (an unreachable handset retries the step, an undelivered one may fall back).
fn spends_data(
    transition: &Transition,
    expires_at: Option<NaiveDateTime>,
    now: NaiveDateTime,
) -> bool {
    let awaits_report = matches!(
        transition,
        Transition::Sent {
            awaits_report: true,
            ..
        }
    );
    !awaits_report && data_is_spent(transition.status(), expires_at, now)
}

/// Cancels those of `ids` that are still queued (not being sent, not finished), e.g. the older message of a
/// verification that was resent or ended; their data (the code) is wiped. A message a worker holds is left
/// to finish. Returns how many were canceled.
pub fn cancel_queued(
    conn: &mut AnyConnection,
    ids: &[String],
    reason: &str,
    now: NaiveDateTime,
) -> Result<usize, DbError> {
    use gateway_messages::dsl as m;
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(diesel::update(
        m::gateway_messages.filter(
            m::id
                .eq_any(ids)
                .and(m::status.eq(MessageStatus::Queued.as_str())),
        ),
    )
    .set((
        m::status.eq(MessageStatus::Canceled.as_str()),
        m::data.eq(""),
        m::last_error.eq(reason),
        m::updated_at.eq(now),
    ))
    .execute(conn)?)
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

/// Takes up to `limit` messages: with `abandoned`, those whose lease ran out (their worker died) first, then
/// the most overdue queued and due ones; leases them to `owner` until `now + lease` and answers them most
/// overdue first. The claim is committed before the caller sends anything.
pub fn claim(
    conn: &mut AnyConnection,
    owner: &str,
    now: NaiveDateTime,
    lease: TimeDelta,
    limit: i64,
    abandoned: bool,
) -> Result<Vec<MessageRow>, DbError> {
    use gateway_messages::dsl as m;
    // The subquery reads the table the statement updates, which SQL allows under another name.
    let due_rows = diesel::alias!(gateway_messages as due_rows);
    let status = due_rows.field(m::status);
    let changes = (
        m::status.eq(MessageStatus::Sending.as_str()),
        m::lease_owner.eq(owner),
        m::lease_until.eq(now + lease),
        m::attempts.eq(m::attempts + 1),
        m::unrecorded_claims.eq(m::unrecorded_claims + 1),
        // A report kept for an earlier claim whose worker died describes no attempt of this one.
        m::early_report_sid.eq(None::<String>),
        m::early_report_outcome.eq(None::<String>),
        m::early_report_error_code.eq(None::<String>),
        m::updated_at.eq(now),
    );
    // One statement leases the most overdue rows that `$filter` picks and reads them back.
    macro_rules! lease_first {
        ($conn:expr, $filter:expr, $limit:expr) => {{
            let pick = due_rows
                .filter($filter)
                .order(due_rows.field(m::next_attempt_at).asc())
                .select(due_rows.field(m::id))
                .limit($limit);
            match $conn {
                // Other workers skip the row we lock instead of waiting for it.
                AnyConnection::Postgresql(c) => diesel::update(
                    m::gateway_messages.filter(m::id.eq_any(pick.for_update().skip_locked())),
                )
                .set(changes.clone())
                .returning(MessageRow::as_returning())
                .get_results(c)?,
                AnyConnection::Sqlite(c) => {
                    diesel::update(m::gateway_messages.filter(m::id.eq_any(pick)))
                        .set(changes.clone())
                        .returning(MessageRow::as_returning())
                        .get_results(c)?
                }
            }
        }};
    }
    // Two picks that each follow an index, not one with an OR, which made every claim sort the whole
    // backlog: leases that ran out (their worker died; a few rows at most), then the most overdue queued
    // messages.
    let pick = |conn: &mut AnyConnection| -> Result<Vec<MessageRow>, DbError> {
        let mut rows: Vec<MessageRow> = Vec::new();
        if abandoned {
            let lease_ran_out = status
                .eq(MessageStatus::Sending.as_str())
                .and(due_rows.field(m::lease_until).lt(now));
            rows = lease_first!(conn, lease_ran_out, limit);
        }
        let left = limit - i64::try_from(rows.len()).unwrap_or(limit);
        if left > 0 {
            let due = status
                .eq(MessageStatus::Queued.as_str())
                .and(due_rows.field(m::next_attempt_at).le(now));
            let queued: Vec<MessageRow> = lease_first!(conn, due, left);
            rows.extend(queued);
        }
        Ok(rows)
    };
    let mut rows = match conn {
        // Each statement stands alone (a row is leased whole or not at all): no transaction needed.
        AnyConnection::Postgresql(_) => pick(conn)?,
        // BEGIN IMMEDIATE serialises writers on SQLite (a plain statement could lose the race for the write
        // lock after its read began, and that is not retried).
        AnyConnection::Sqlite(_) => write_transaction(conn, pick)?,
    };
    // RETURNING follows no ORDER BY.
    rows.sort_by(|a, b| (a.next_attempt_at, &a.id).cmp(&(b.next_attempt_at, &b.id)));
    Ok(rows)
}

/// Where a message goes after an attempt or a provider's report.
#[derive(Debug, Clone)]
pub enum Transition {
    Sent {
        provider: String,
        provider_message_id: Option<String>,
        /// A status callback was asked for: its report may still retry the step or fall back, so the
        /// message keeps its (sealed) data until then.
        awaits_report: bool,
    },
    /// The provider reported the message delivered.
    Delivered,
    Retry {
        at: NaiveDateTime,
        error: String,
    },
    /// Chosen by [`MessageRow::fall_back_or`] only.
    Fallback {
        step: FallbackStep,
        position: i32,
        error: String,
    },
    /// `failed`, `expired` or `undelivered`.
    Final {
        status: MessageStatus,
        error: String,
    },
}

impl Transition {
    /// The message's status once the transition is applied.
    pub fn status(&self) -> MessageStatus {
        match self {
            Self::Sent { .. } => MessageStatus::Sent,
            Self::Delivered => MessageStatus::Delivered,
            Self::Retry { .. } | Self::Fallback { .. } => MessageStatus::Queued,
            Self::Final { status, .. } => *status,
        }
    }
}

/// What the provider said about a sent message, later (a status callback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderReport {
    /// Our id, when the callback URL carries it; older callbacks have only the provider's id.
    pub message_id: Option<String>,
    pub provider_message_id: String,
    pub outcome: ReportedOutcome,
    pub error_code: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportedOutcome {
    Delivered,
    /// Not delivered; `retry` when the provider's error says a later try on the same step may work.
    Undelivered {
        retry: bool,
    },
}

impl ReportedOutcome {
    /// How an early report is kept on the message until the worker records the send.
    fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Undelivered { retry: true } => "undelivered_transient",
            Self::Undelivered { retry: false } => "undelivered_permanent",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [
            Self::Delivered,
            Self::Undelivered { retry: true },
            Self::Undelivered { retry: false },
        ]
        .into_iter()
        .find(|o| o.as_str() == name)
    }

    fn attempt_outcome(self) -> AttemptOutcome {
        match self {
            Self::Delivered => AttemptOutcome::Delivered,
            Self::Undelivered { .. } => AttemptOutcome::Undelivered,
        }
    }
}

/// What [`record`] did with one outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Our lease ran out and another worker took the message over; nothing was written.
    LeaseLost,
    /// Written. `early_report` is a provider's report on the send just recorded that arrived before it: the
    /// caller applies it with [`report_delivery`].
    Done {
        early_report: Option<ProviderReport>,
    },
}

/// How one claim of a message ended, for [`record`].
#[derive(Debug, Clone)]
pub struct Outcome {
    pub message_id: String,
    /// The message's expiry, which decides whether a failure keeps its data (see
    /// [`MessageRow::data_is_spent`]).
    pub expires_at: Option<NaiveDateTime>,
    /// The provider call made, if one was.
    pub attempt: Option<AttemptRow>,
    pub transition: Transition,
    /// The data goes whatever the state: no configured key opens it any more.
    pub unreadable: bool,
}

/// Records outcomes of claims held by `owner`, all in one transaction: each message whose lease `owner`
/// still holds moves on, with its attempt. Answers what was done with each, in the order given.
pub fn record(
    conn: &mut AnyConnection,
    owner: &str,
    outcomes: Vec<Outcome>,
    now: NaiveDateTime,
) -> Result<Vec<Recorded>, DbError> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    write_transaction(conn, |conn| {
        let mut recorded = Vec::with_capacity(outcomes.len());
        let mut attempts = Vec::new();
        for outcome in &outcomes {
            let answer = record_one(conn, owner, outcome, now)?;
            if let (Recorded::Done { .. }, Some(attempt)) = (&answer, &outcome.attempt) {
                attempts.push(attempt.clone());
            }
            recorded.push(answer);
        }
        // One statement: a worker holds at most `gateway.worker.concurrency` (≤ 256) messages, well under
        // the backends' bind-parameter limits.
        if !attempts.is_empty() {
            reclaim_common::per_backend!(&mut *conn, |c| diesel::insert_into(
                gateway_attempts::table
            )
            .values(attempts)
            .execute(c))?;
        }
        Ok(recorded)
    })
}

/// One outcome of [`record`], its attempt row aside.
fn record_one(
    conn: &mut AnyConnection,
    owner: &str,
    outcome: &Outcome,
    now: NaiveDateTime,
) -> Result<Recorded, DbError> {
    use gateway_messages::dsl as m;
    let Outcome {
        message_id,
        expires_at,
        attempt,
        transition,
        unreadable,
    } = outcome;
    // The retry budget counts attempts on this step; a fallback starts the next step at zero.
    let counted = attempt.is_some()
        && matches!(
            transition,
            Transition::Sent { .. } | Transition::Retry { .. }
        );
    let counters = Counters::Outcome { counted };
    let wipe = *unreadable || spends_data(transition, *expires_at, now);
    let Some(applied) = apply(
        conn,
        message_id,
        Some(owner),
        transition,
        counters,
        wipe,
        now,
    )?
    else {
        return Ok(Recorded::LeaseLost);
    };
    // Returned by our update, which holds the row: a report stored concurrently is seen here or sees
    // `sent`.
    let Applied {
        early_report_sid: sid,
        early_report_outcome: reported,
        early_report_error_code: error_code,
    } = applied;
    if sid.is_some() {
        diesel::update(m::gateway_messages.find(message_id))
            .set((
                m::early_report_sid.eq(None::<String>),
                m::early_report_outcome.eq(None::<String>),
                m::early_report_error_code.eq(None::<String>),
            ))
            .execute(conn)?;
    }
    let sent_sid = match transition {
        Transition::Sent {
            provider_message_id,
            ..
        } => provider_message_id.as_deref(),
        _ => None,
    };
    let early_report = match (sid, reported.as_deref().and_then(ReportedOutcome::parse)) {
        (Some(sid), Some(reported)) if sent_sid == Some(sid.as_str()) => Some(ProviderReport {
            message_id: Some(message_id.clone()),
            provider_message_id: sid,
            outcome: reported,
            error_code,
        }),
        _ => None,
    };
    Ok(Recorded::Done { early_report })
}

/// What a state change does to the counters of claims and attempts.
#[derive(Debug, Clone, Copy)]
enum Counters {
    /// A worker recorded the outcome of its claim: no claim is unrecorded any more, and the attempt counts
    /// against its step's budget when `counted`.
    Outcome { counted: bool },
    /// A provider's report: the counters stay.
    Report,
}

/// What a state change found kept on the row, enough to finish the change without reading it again.
#[derive(Debug, Queryable)]
struct Applied {
    early_report_sid: Option<String>,
    early_report_outcome: Option<String>,
    early_report_error_code: Option<String>,
}

/// Moves the message by `transition` (only while `owner`, when given, holds its lease), emptying its data
/// when `wipe`, and answers what it kept of an early report, or `None` when no row matched.
fn apply(
    conn: &mut AnyConnection,
    message_id: &str,
    owner: Option<&str>,
    transition: &Transition,
    counters: Counters,
    wipe: bool,
    now: NaiveDateTime,
) -> Result<Option<Applied>, DbError> {
    use gateway_messages::dsl as m;
    let (keep_unrecorded, step_attempt) = match counters {
        Counters::Outcome { counted } => (0, i32::from(counted)),
        Counters::Report => (1, 0),
    };
    let bookkeeping = (
        m::lease_owner.eq(None::<String>),
        m::lease_until.eq(None::<NaiveDateTime>),
        m::updated_at.eq(now),
        m::unrecorded_claims.eq(m::unrecorded_claims * keep_unrecorded),
        m::data.eq(diesel::dsl::case_when::<_, _, diesel::sql_types::Text>(
            wipe.into_sql::<Bool>(),
            "",
        )
        .otherwise(m::data)),
    );
    let counted = m::step_attempts.eq(m::step_attempts + step_attempt);
    let returned = (
        m::early_report_sid,
        m::early_report_outcome,
        m::early_report_error_code,
    );
    let status = transition.status().as_str();
    macro_rules! update {
        ($changes:expr) => {
            match owner {
                Some(owner) => reclaim_common::per_backend!(&mut *conn, |c| diesel::update(
                    m::gateway_messages
                        .filter(m::id.eq(message_id))
                        .filter(m::lease_owner.eq(owner))
                        .filter(m::status.eq(MessageStatus::Sending.as_str())),
                )
                .set(($changes, bookkeeping))
                .returning(returned)
                .get_result::<Applied>(c)
                .optional())?,
                None => reclaim_common::per_backend!(&mut *conn, |c| diesel::update(
                    m::gateway_messages.filter(m::id.eq(message_id))
                )
                .set(($changes, bookkeeping))
                .returning(returned)
                .get_result::<Applied>(c)
                .optional())?,
            }
        };
    }
    Ok(match transition {
        Transition::Sent {
            provider,
            provider_message_id,
            ..
        } => update!((
            m::status.eq(status),
            m::provider.eq(provider),
            m::provider_message_id.eq(provider_message_id),
            counted,
        )),
        Transition::Delivered => update!((m::status.eq(status), counted)),
        Transition::Retry { at, error } => update!((
            m::status.eq(status),
            m::next_attempt_at.eq(at),
            m::last_error.eq(error),
            counted,
        )),
        Transition::Fallback {
            step,
            position,
            error,
        } => update!((
            m::status.eq(status),
            m::next_attempt_at.eq(now),
            m::channel.eq(step.channel.as_str()),
            m::destination.eq(&step.to),
            m::fallback_position.eq(position),
            m::step_attempts.eq(0),
            m::last_error.eq(error),
            m::provider_message_id.eq(None::<String>),
        )),
        Transition::Final { error, .. } => {
            update!((m::status.eq(status), m::last_error.eq(error), counted))
        }
    })
}

/// What [`report_delivery`] did with a provider's report.
#[derive(Debug, Clone)]
pub enum ReportOutcome {
    UnknownMessage,
    /// The attempt it describes is still in flight: kept until the worker records the send.
    KeptForTheWorker,
    /// Recorded on its attempt; the message had moved on already (a late or repeated report, or one about an
    /// earlier attempt).
    Unchanged(MessageRow),
    Moved {
        message: MessageRow,
        transition: Transition,
    },
}

/// Records a provider's report on the attempt it describes (by the provider's id for it); returns how many
/// attempts it matched, 0 while the worker has not yet recorded that attempt's provider id.
fn record_report_on_attempt(
    conn: &mut AnyConnection,
    message_id: &str,
    report: &ProviderReport,
) -> Result<usize, DbError> {
    let outcome = report.outcome.attempt_outcome();
    Ok(diesel::update(
        gateway_attempts::table
            .filter(gateway_attempts::message_id.eq(message_id))
            .filter(gateway_attempts::provider_message_id.eq(report.provider_message_id.as_str())),
    )
    .set((
        gateway_attempts::outcome.eq(outcome.as_str()),
        gateway_attempts::error_code.eq(&report.error_code),
    ))
    .execute(conn)?)
}

/// Applies a provider's report (status callback): records it on the attempt it describes and, when the
/// message still waits for news of that attempt, moves it: `delivered`, or what `after_undelivered` chooses
/// (a retry of the step, the next fallback step, or `undelivered`).
pub fn report_delivery(
    conn: &mut AnyConnection,
    report: &ProviderReport,
    now: NaiveDateTime,
    after_undelivered: impl FnOnce(&MessageRow, bool) -> Transition,
) -> Result<ReportOutcome, DbError> {
    use gateway_messages::dsl as m;
    let sid = report.provider_message_id.as_str();
    write_transaction(conn, |conn| {
        let found = match &report.message_id {
            Some(id) => find(conn, id)?.map(|(message, _)| message),
            None => find_by_provider_message_id(conn, sid)?,
        };
        let Some(mut message) = found else {
            return Ok(ReportOutcome::UnknownMessage);
        };
        let known_attempt = record_report_on_attempt(conn, &message.id, report)?;
        if known_attempt == 0 && message.status == MessageStatus::Sending {
            // The provider answered the worker, and reported, before the worker recorded the answer.
            let kept = diesel::update(
                m::gateway_messages
                    .find(&message.id)
                    .filter(m::status.eq(MessageStatus::Sending.as_str())),
            )
            .set((
                m::early_report_sid.eq(sid),
                m::early_report_outcome.eq(report.outcome.as_str()),
                m::early_report_error_code.eq(&report.error_code),
            ))
            .execute(conn)?;
            if kept == 1 {
                return Ok(ReportOutcome::KeptForTheWorker);
            }
            // The worker recorded in between: read what it wrote and go on as for a report after it.
            match find(conn, &message.id)? {
                Some((fresh, _)) => message = fresh,
                None => return Ok(ReportOutcome::UnknownMessage),
            }
            record_report_on_attempt(conn, &message.id, report)?;
        }
        // Reports may arrive late, twice, or about an earlier attempt; only news of the attempt the message
        // waits on moves it.
        if message.status != MessageStatus::Sent
            || message.provider_message_id.as_deref() != Some(sid)
        {
            return Ok(ReportOutcome::Unchanged(message));
        }
        let transition = match report.outcome {
            ReportedOutcome::Delivered => Transition::Delivered,
            ReportedOutcome::Undelivered { retry } => after_undelivered(&message, retry),
        };
        let wipe = spends_data(&transition, message.expires_at, now);
        apply(
            conn,
            &message.id,
            None,
            &transition,
            Counters::Report,
            wipe,
            now,
        )?;
        Ok(ReportOutcome::Moved {
            message,
            transition,
        })
    })
}

/// Empties the data of failed and undelivered messages whose `expires_at` has passed (the retention
/// janitor calls it); returns how many.
pub fn wipe_expired_data(conn: &mut AnyConnection, now: NaiveDateTime) -> Result<usize, DbError> {
    use gateway_messages::dsl as m;
    Ok(diesel::update(
        m::gateway_messages
            .filter(m::status.eq_any([
                MessageStatus::Failed.as_str(),
                MessageStatus::Undelivered.as_str(),
            ]))
            .filter(m::data.ne(""))
            .filter(m::expires_at.le(now)),
    )
    .set(m::data.eq(""))
    .execute(conn)?)
}

/// What [`requeue`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requeued {
    /// Queued again, due now; the next attempt is appended after the earlier ones.
    Queued,
    UnknownMessage,
    /// Not `failed`, `undelivered` or `expired`: it is live, sent or delivered (or was canceled).
    NotFinishedUnsent(MessageStatus),
    /// Its expiry has passed, or its data (the code or link) is gone: sending it again cannot help.
    Spent,
}

/// Queues a `failed`, `undelivered` or `expired` message again now: its attempt counter is kept (the next
/// attempt is numbered after the earlier ones), its retry budget starts afresh on the step it ended on.
pub fn requeue(
    conn: &mut AnyConnection,
    message_id: &str,
    now: NaiveDateTime,
) -> Result<Requeued, DbError> {
    use gateway_messages::dsl as m;
    write_transaction(conn, |conn| {
        let Some((message, _)) = find(conn, message_id)? else {
            return Ok(Requeued::UnknownMessage);
        };
        let retriable = [
            MessageStatus::Failed,
            MessageStatus::Undelivered,
            MessageStatus::Expired,
        ];
        if !retriable.contains(&message.status) {
            return Ok(Requeued::NotFinishedUnsent(message.status));
        }
        if message.data.is_empty() || message.expires_at.is_some_and(|expiry| expiry <= now) {
            return Ok(Requeued::Spent);
        }
        let updated = diesel::update(
            m::gateway_messages
                .find(message_id)
                .filter(m::status.eq(message.status.as_str())),
        )
        .set((
            m::status.eq(MessageStatus::Queued.as_str()),
            m::next_attempt_at.eq(now),
            m::step_attempts.eq(0),
            m::unrecorded_claims.eq(0),
            m::lease_owner.eq(None::<String>),
            m::lease_until.eq(None::<NaiveDateTime>),
            m::provider_message_id.eq(None::<String>),
            m::updated_at.eq(now),
        ))
        .execute(conn)?;
        Ok(if updated == 1 {
            Requeued::Queued
        } else {
            Requeued::NotFinishedUnsent(message.status)
        })
    })
}

/// Messages first sent to `recipient` ([`recipient_key`]) or now on their way to it, created at or after
/// `since`, newest first, with their attempts (at most `limit` messages).
pub fn to_recipient(
    conn: &mut AnyConnection,
    recipient: &str,
    since: NaiveDateTime,
    limit: i64,
) -> Result<Vec<(MessageRow, Vec<AttemptRow>)>, DbError> {
    use gateway_messages::dsl as m;
    let rows: Vec<MessageRow> = m::gateway_messages
        .filter(
            m::recipient
                .eq(recipient)
                .or(
                    diesel::dsl::sql::<diesel::sql_types::Bool>("lower(destination) = ")
                        .bind::<diesel::sql_types::Text, _>(recipient.to_string()),
                ),
        )
        .filter(m::created_at.ge(since))
        .order((m::created_at.desc(), m::id.desc()))
        .limit(limit)
        .select(MessageRow::as_select())
        .load(conn)?;
    let mut out = Vec::with_capacity(rows.len());
    for message in rows {
        let attempts = gateway_attempts::table
            .filter(gateway_attempts::message_id.eq(&message.id))
            .order(gateway_attempts::number.asc())
            .select(AttemptRow::as_select())
            .load(conn)?;
        out.push((message, attempts));
    }
    Ok(out)
}

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
        .filter(
            m::status
                .eq(MessageStatus::Queued.as_str())
                .and(m::next_attempt_at.le(now)),
        )
        .select(m::next_attempt_at)
        .order(m::next_attempt_at.asc())
        .first(conn)
        .optional()?)
}

/// Deletes messages that finished (or were sent) before `before`, with their attempts; returns how many
/// messages. Live messages (`queued`, `sending`) are never deleted, however old.
pub fn delete_finished(conn: &mut AnyConnection, before: NaiveDateTime) -> Result<usize, DbError> {
    use gateway_messages::dsl as m;
    let done: Vec<&str> = MessageStatus::FINISHED
        .iter()
        .chain([&MessageStatus::Sent])
        .map(|s| s.as_str())
        .collect();
    write_transaction(conn, |conn| {
        let old: Vec<String> = m::gateway_messages
            .filter(m::status.eq_any(done.clone()))
            .filter(m::updated_at.lt(before))
            .select(m::id)
            .load(conn)?;
        // Bounded batches keep each statement under the backends' bind-parameter limits.
        for ids in old.chunks(500) {
            // Explicitly rather than by ON DELETE CASCADE, which SQLite applies only with foreign keys on.
            diesel::delete(
                gateway_attempts::table.filter(gateway_attempts::message_id.eq_any(ids)),
            )
            .execute(conn)?;
            diesel::delete(m::gateway_messages.filter(m::id.eq_any(ids))).execute(conn)?;
        }
        Ok(old.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_outcomes_are_stored_under_their_existing_names() {
        let statuses: Vec<String> = MessageStatus::ALL.into_iter().map(String::from).collect();
        assert_eq!(
            statuses,
            [
                "queued",
                "sending",
                "sent",
                "delivered",
                "undelivered",
                "failed",
                "expired",
                "canceled"
            ]
        );
        let outcomes: Vec<&str> = AttemptOutcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(
            outcomes,
            [
                "sent",
                "transient",
                "permanent",
                "timeout",
                "delivered",
                "undelivered"
            ]
        );
        for status in MessageStatus::ALL {
            assert_eq!(
                MessageStatus::try_from(String::from(status)).ok(),
                Some(status)
            );
        }
        for outcome in AttemptOutcome::ALL {
            assert_eq!(
                AttemptOutcome::try_from(String::from(outcome)).ok(),
                Some(outcome)
            );
        }
        let unknown = MessageStatus::try_from("lost".to_string()).expect_err("unknown");
        assert_eq!(
            unknown.to_string(),
            "unknown message status `lost` in the outbox"
        );
    }

    #[test]
    fn early_reports_are_kept_under_names_that_read_back() {
        for outcome in [
            ReportedOutcome::Delivered,
            ReportedOutcome::Undelivered { retry: true },
            ReportedOutcome::Undelivered { retry: false },
        ] {
            assert_eq!(ReportedOutcome::parse(outcome.as_str()), Some(outcome));
        }
    }

    fn row(channel: &str, status: MessageStatus, fallback: &str, position: i32) -> MessageRow {
        let now = chrono::Utc::now().naive_utc();
        MessageRow {
            id: "m".into(),
            channel: channel.into(),
            destination: "+14155550100".into(),
            template: "t".into(),
            locale: "en".into(),
            data: "v1:k:x".into(),
            status,
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
            step_attempts: 0,
            unrecorded_claims: 0,
        }
    }

    #[test]
    fn data_is_kept_only_while_the_message_may_be_sent() {
        let voice = r#"[{"channel":"voice","to":"+14155550100"}]"#;
        let now = chrono::Utc::now().naive_utc();
        assert!(!row("sms", MessageStatus::Queued, "[]", 0).data_is_spent(now));
        assert!(!row("sms", MessageStatus::Sending, "[]", 0).data_is_spent(now));
        // `record` keeps a sent message's data only while a status callback's report is awaited.
        assert!(row("sms", MessageStatus::Sent, voice, 0).data_is_spent(now));
        for final_status in [
            MessageStatus::Delivered,
            MessageStatus::Expired,
            MessageStatus::Canceled,
        ] {
            assert!(row("sms", final_status, voice, 0).data_is_spent(now));
        }
        // A failure may be sent again by an operator until the message expires.
        for failed in [MessageStatus::Undelivered, MessageStatus::Failed] {
            let mut message = row("sms", failed, voice, 0);
            message.expires_at = Some(now + TimeDelta::minutes(5));
            assert!(!message.data_is_spent(now));
            assert!(message.data_is_spent(now + TimeDelta::minutes(5)));
        }
    }
}
