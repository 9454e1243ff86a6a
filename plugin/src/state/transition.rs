//! State transitions: the read-modify-write of an identity's row inside a transaction, the profile an
//! identity falls under, and the policy facts read from its row.

use super::store::{self, StateRow};
use super::view::{view, PasswordState};
use crate::history;
use crate::identity::Identity;
use crate::policy::{ChangeFacts, IdentityTraits, LoginFacts, MustChangeReason, Policy, Profile};
use chrono::{DateTime, Utc};
use reclaim_common::db::{AnyConnection, DbError};
use std::collections::BTreeMap;

/// Inside a transaction: hands the identity's row (created if new) and its profile to `change`, then saves
/// the row, prunes the history to what the profile keeps, and returns the resulting state.
pub(crate) fn change_row<F>(
    c: &mut AnyConnection,
    policy: &Policy,
    identity: &Identity,
    now: DateTime<Utc>,
    change: F,
) -> Result<PasswordState, DbError>
where
    F: FnOnce(&mut AnyConnection, &mut StateRow, &Profile, DateTime<Utc>) -> Result<(), DbError>,
{
    let mut row = store::ensure(c, identity.id.as_str(), now)?;
    let profile = resolve_in(policy, None, identity, Some(&row));
    change(c, &mut row, profile, now)?;
    row.updated_at = now.naive_utc();
    store::save(c, &row)?;
    history::store::prune(c, identity.id.as_str(), profile, now)?;
    view(policy, c, row, now)
}

/// Profile for an identity: what its traits select, else what its stored schema selects or its stored
/// profile names.
pub(crate) fn resolve_in<'p>(
    policy: &'p Policy,
    explicit: Option<&str>,
    identity: &Identity,
    row: Option<&StateRow>,
) -> &'p Profile {
    if let Some(profile) = explicit.and_then(|n| policy.profile(n)) {
        return profile;
    }
    if identity.has_traits() {
        return policy.select(&identity.traits());
    }
    let empty = BTreeMap::new();
    let stored_traits = IdentityTraits {
        schema_id: row.and_then(|r| r.schema_id.as_deref()),
        metadata: Some(&empty),
    };
    policy.stored_or_select(row.and_then(|r| r.profile.as_deref()), &stored_traits)
}

pub(crate) fn refresh_identity(row: &mut StateRow, profile: &Profile, identity: &Identity) {
    row.profile = Some(profile.name.clone());
    if identity.schema_id.is_some() {
        row.schema_id.clone_from(&identity.schema_id);
    }
    if identity.email.is_some() {
        row.email.clone_from(&identity.email);
    }
    if identity.phone.is_some() {
        row.phone.clone_from(&identity.phone);
    }
}

/// A new current password: the clock restarts, marks and grace logins are cleared.
pub(crate) fn apply_change(
    row: &mut StateRow,
    profile: &Profile,
    identity: &Identity,
    changed_at: DateTime<Utc>,
) {
    refresh_identity(row, profile, identity);
    row.changed_at = Some(changed_at.naive_utc());
    row.expires_at = profile.expires_at(changed_at).map(|e| e.naive_utc());
    row.must_change_reason = None;
    row.grace_logins_used = 0;
}

pub(crate) fn must_change_of(row: &StateRow) -> Option<MustChangeReason> {
    row.must_change_reason
        .as_deref()
        .and_then(MustChangeReason::parse)
}

pub(crate) fn change_facts(row: &StateRow) -> ChangeFacts {
    ChangeFacts {
        changed_at: row.changed_at.map(|c| c.and_utc()),
        must_change: must_change_of(row),
    }
}

pub(crate) fn login_facts(row: &StateRow) -> LoginFacts {
    LoginFacts {
        changed_at: row.changed_at.map(|c| c.and_utc()),
        must_change: must_change_of(row),
        grace_logins_used: u32::try_from(row.grace_logins_used).unwrap_or(0),
    }
}
