//! [`PasswordState`]: an identity's password state as callers see it, computed from its row and profile.

use super::store::StateRow;
use super::transition::{must_change_of, resolve_in};
use crate::identity::{Identity, IdentityId};
use crate::policy::{MustChangeReason, Policy, Profile};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use reclaim_common::db::{AnyConnection, DbError};
use serde::Serialize;

/// The state of an identity's password as callers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PasswordState {
    pub identity_id: String,
    pub profile: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_id: Option<String>,
    /// `None` when the plugin has not seen a change yet.
    pub changed_at: Option<DateTime<Utc>>,
    /// `None` = never expires by age.
    pub expires_at: Option<DateTime<Utc>>,
    /// Whole days until expiry, rounded up; 0 once expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_left: Option<i64>,
    pub expired: bool,
    /// True when a change is required before the password may be used again (under this profile).
    pub must_change: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub must_change_reason: Option<MustChangeReason>,
    pub grace_logins_used: u32,
    pub history_entries: usize,
    /// Contacts for notices; never part of API answers.
    #[serde(skip)]
    pub email: Option<String>,
    #[serde(skip)]
    pub phone: Option<String>,
}

/// The state `row` stands for at `now`, under the profile the identity falls under.
pub(crate) fn view(
    policy: &Policy,
    conn: &mut AnyConnection,
    row: StateRow,
    now: DateTime<Utc>,
) -> Result<PasswordState, DbError> {
    use crate::schema::password_history::dsl as h;
    let entries: i64 = h::password_history
        .filter(h::identity_id.eq(&row.identity_id))
        .count()
        .get_result(conn)?;
    let identity = Identity::new(
        IdentityId::parse(&row.identity_id).map_err(|e| DbError::Task(e.to_string()))?,
    );
    let profile = resolve_in(policy, None, &identity, Some(&row));
    let changed_at = row.changed_at.map(|c| c.and_utc());
    let expires_at = changed_at.and_then(|c| profile.expires_at(c));
    let reason = must_change_of(&row);
    Ok(PasswordState {
        identity_id: row.identity_id,
        profile: profile.name.clone(),
        schema_id: row.schema_id,
        changed_at,
        expires_at,
        days_left: expires_at.map(|e| Profile::days_left(e, now)),
        expired: expires_at.is_some_and(|e| now >= e),
        must_change: reason.is_some_and(|r| profile.enforces(r)),
        must_change_reason: reason,
        grace_logins_used: u32::try_from(row.grace_logins_used).unwrap_or(0),
        history_entries: usize::try_from(entries).unwrap_or(0),
        email: row.email,
        phone: row.phone,
    })
}
