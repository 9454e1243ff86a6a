//! The `guard_verdicts` table: what an edge guard (the Kratos guard, `crate::kratos::guard`) decided about a
//! password submission the identity provider never shows us, kept under the IdP's flow id until a hook of the
//! same flow uses it. A verdict is used once: the settings pre-persist hook
//! removes a refused one when it shows it and marks an allowed one accepted; the post-persist hooks remove
//! the one they commit.

use crate::history::{KdfParams, PasswordDigest};
use crate::schema::guard_verdicts::{self, dsl};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use reclaim_common::db::{AnyConnection, DbError};
use serde_json::Value;

/// The self-service flow a verdict belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Settings,
    Registration,
    /// A recovery flow: the guard keeps the notice of a refused code send for the flow's next fetch.
    Recovery,
}

impl Flow {
    pub fn name(self) -> &'static str {
        match self {
            Self::Settings => "settings",
            Self::Registration => "registration",
            Self::Recovery => "recovery",
        }
    }
}

/// A flow id as Kratos makes them: a UUID, kept in its hyphenated lower-case form (verdicts are keyed by
/// it, so nothing else is accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowId(String);

impl FlowId {
    pub fn parse(text: &str) -> Option<Self> {
        uuid::Uuid::parse_str(text)
            .ok()
            .map(|id| Self(id.hyphenated().to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for FlowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = guard_verdicts)]
struct Row {
    kind: String,
    flow_id: String,
    identity_id: Option<String>,
    allowed: bool,
    codes: String,
    messages: String,
    digest: Option<Vec<u8>>,
    params: Option<String>,
    salt: Option<Vec<u8>>,
    created_at: chrono::NaiveDateTime,
    expires_at: chrono::NaiveDateTime,
    accepted_at: Option<chrono::NaiveDateTime>,
}

/// The candidate's keyed digest, ready to become a history entry.
#[derive(Debug, Clone)]
pub struct StagedDigest {
    pub digest: PasswordDigest,
    pub params: KdfParams,
}

/// What the guard decided.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// The password may be saved; commit this digest once Kratos saved it.
    Allowed(StagedDigest),
    /// Refused: the violation codes, and the Kratos UI messages to show on the password field.
    Refused { codes: Vec<String>, messages: Value },
}

/// Stages the verdict of a settings submission by `identity_id`, replacing an earlier one of the same flow
/// (the user tried again). Expired verdicts of any flow are dropped on the way.
pub fn stage_settings(
    conn: &mut AnyConnection,
    flow: &FlowId,
    identity_id: &str,
    verdict: &Verdict,
    now: DateTime<Utc>,
    ttl: chrono::Duration,
) -> Result<(), DbError> {
    let mut row = row(Flow::Settings, flow, now, ttl);
    row.identity_id = Some(identity_id.to_string());
    match verdict {
        Verdict::Allowed(staged) => {
            row.allowed = true;
            row.digest = Some(staged.digest.as_bytes().to_vec());
            row.params = Some(staged.params.encode());
        }
        Verdict::Refused { codes, messages } => {
            row.codes = codes.join(",");
            row.messages = messages.to_string();
        }
    }
    replace(conn, row, now)
}

/// Stages the digest of a registration's password with the salt it was made with: the identity does not
/// exist yet, so the registration post-persist hook makes that salt its history salt.
pub fn stage_registration(
    conn: &mut AnyConnection,
    flow: &FlowId,
    staged: &StagedDigest,
    salt: &[u8],
    now: DateTime<Utc>,
    ttl: chrono::Duration,
) -> Result<(), DbError> {
    let mut row = row(Flow::Registration, flow, now, ttl);
    row.allowed = true;
    row.digest = Some(staged.digest.as_bytes().to_vec());
    row.params = Some(staged.params.encode());
    row.salt = Some(salt.to_vec());
    replace(conn, row, now)
}

fn row(flow: Flow, id: &FlowId, now: DateTime<Utc>, ttl: chrono::Duration) -> Row {
    Row {
        kind: flow.name().to_string(),
        flow_id: id.as_str().to_string(),
        identity_id: None,
        allowed: false,
        codes: String::new(),
        messages: "[]".into(),
        digest: None,
        params: None,
        salt: None,
        created_at: now.naive_utc(),
        expires_at: (now + ttl).naive_utc(),
        accepted_at: None,
    }
}

fn replace(conn: &mut AnyConnection, row: Row, now: DateTime<Utc>) -> Result<(), DbError> {
    reclaim_common::db::write_transaction(conn, |c| {
        diesel::delete(dsl::guard_verdicts.filter(dsl::expires_at.le(now.naive_utc())))
            .execute(c)?;
        diesel::delete(dsl::guard_verdicts.find((&row.kind, &row.flow_id))).execute(c)?;
        diesel::insert_into(dsl::guard_verdicts)
            .values(&row)
            .execute(c)?;
        Ok(())
    })
}

fn find(
    conn: &mut AnyConnection,
    flow: Flow,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Option<Row>, DbError> {
    Ok(dsl::guard_verdicts
        .find((flow.name(), id))
        .filter(dsl::expires_at.gt(now.naive_utc()))
        .select(Row::as_select())
        .first(conn)
        .optional()?)
}

fn remove(conn: &mut AnyConnection, row: &Row) -> Result<(), DbError> {
    diesel::delete(dsl::guard_verdicts.find((&row.kind, &row.flow_id))).execute(conn)?;
    Ok(())
}

fn staged_digest(row: &Row) -> Option<StagedDigest> {
    let digest = PasswordDigest::from_slice(row.digest.as_deref()?)?;
    let params = KdfParams::decode(row.params.as_deref()?)?;
    Some(StagedDigest { digest, params })
}

/// The settings pre-persist hook's look at the verdict for this flow and identity: a refused verdict is
/// removed (Kratos shows it, the user tries again and the guard stages anew), an allowed one is marked
/// accepted for the post-persist hook. A verdict of another identity, an expired one, or one already
/// accepted is not there. Call inside a write transaction.
pub fn take_for_settings(
    conn: &mut AnyConnection,
    flow_id: &FlowId,
    identity_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<Verdict>, DbError> {
    let Some(row) = find(conn, Flow::Settings, flow_id.as_str(), now)? else {
        return Ok(None);
    };
    if row.identity_id.as_deref() != Some(identity_id) || row.accepted_at.is_some() {
        return Ok(None);
    }
    if !row.allowed {
        remove(conn, &row)?;
        let codes = row
            .codes
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        let messages = serde_json::from_str(&row.messages).unwrap_or(Value::Array(Vec::new()));
        return Ok(Some(Verdict::Refused { codes, messages }));
    }
    let Some(staged) = staged_digest(&row) else {
        remove(conn, &row)?;
        return Ok(None);
    };
    diesel::update(dsl::guard_verdicts.find((&row.kind, &row.flow_id)))
        .set(dsl::accepted_at.eq(Some(now.naive_utc())))
        .execute(conn)?;
    Ok(Some(Verdict::Allowed(staged)))
}

/// The settings post-persist hook's commit: the accepted verdict of this flow and identity, removed.
/// Accepted verdicts are committed even past their expiry (Kratos saved the password moments after the
/// pre-persist hook accepted it). Call inside the write transaction that records the change.
pub fn take_accepted(
    conn: &mut AnyConnection,
    flow_id: &FlowId,
    identity_id: &str,
) -> Result<Option<StagedDigest>, DbError> {
    let row: Option<Row> = dsl::guard_verdicts
        .find((Flow::Settings.name(), flow_id.as_str()))
        .filter(dsl::accepted_at.is_not_null())
        .select(Row::as_select())
        .first(conn)
        .optional()?;
    let Some(row) = row.filter(|r| r.identity_id.as_deref() == Some(identity_id)) else {
        return Ok(None);
    };
    remove(conn, &row)?;
    Ok(staged_digest(&row))
}

/// The registration post-persist hook's commit: the digest staged for this flow and its salt, removed.
pub fn take_registration(
    conn: &mut AnyConnection,
    flow_id: &FlowId,
    now: DateTime<Utc>,
) -> Result<Option<(StagedDigest, Vec<u8>)>, DbError> {
    let Some(row) = find(conn, Flow::Registration, flow_id.as_str(), now)? else {
        return Ok(None);
    };
    remove(conn, &row)?;
    Ok(staged_digest(&row).zip(row.salt))
}

/// Keeps the messages the guard refused a recovery code send with (browser clients are sent back to the
/// UI, which fetches the flow: the guard adds them to that answer once).
pub fn stage_recovery_notice(
    conn: &mut AnyConnection,
    flow: &FlowId,
    reason: &str,
    messages: &Value,
    now: DateTime<Utc>,
    ttl: chrono::Duration,
) -> Result<(), DbError> {
    let mut row = row(Flow::Recovery, flow, now, ttl);
    row.codes = reason.to_string();
    row.messages = messages.to_string();
    replace(conn, row, now)
}

/// The messages kept for a recovery flow, removed: they are shown once.
pub fn take_recovery_notice(
    conn: &mut AnyConnection,
    flow: &FlowId,
    now: DateTime<Utc>,
) -> Result<Option<Value>, DbError> {
    let Some(row) = find(conn, Flow::Recovery, flow.as_str(), now)? else {
        return Ok(None);
    };
    remove(conn, &row)?;
    Ok(serde_json::from_str(&row.messages).ok())
}

/// Erasure: every verdict about this identity.
pub fn erase(conn: &mut AnyConnection, identity_id: &str) -> Result<usize, DbError> {
    Ok(
        diesel::delete(dsl::guard_verdicts.filter(dsl::identity_id.eq(identity_id)))
            .execute(conn)?,
    )
}
