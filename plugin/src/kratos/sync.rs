//! Keeping Reclaim and Kratos in step through Kratos's admin API: the first contact with an identity Reclaim
//! never saw (its state, its current hash imported), and the password state mirrored into Kratos's
//! `metadata_admin`. All of it is best effort except creating the state: Kratos stays the source of truth.

use super::admin::KratosAdmin;
use crate::identity::Identity;
use crate::passwords::{PasswordState, Passwords, PasswordsError};
use crate::policy::check_change_time;
use chrono::{DateTime, Utc};
use reclaim_common::settings::KratosSettings;
use serde_json::{Map, Value};

/// First contact with an identity that registered before Reclaim was wired in: create its state (from
/// `metadata_public.password_changed_at` when we stamped it earlier and it is a time a change can have
/// happened, else now) and import its current password hash. Callers: the hooks, and the edge guard, which
/// learns the identity from Kratos's `/sessions/whoami`.
pub(crate) async fn ensure_known(
    passwords: &Passwords,
    admin: Option<&KratosAdmin>,
    settings: &KratosSettings,
    identity: &Identity,
    metadata_public: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<(), PasswordsError> {
    if passwords.state(&identity.id).await?.is_some() {
        return Ok(());
    }
    let changed_at = metadata_public
        .get("password_changed_at")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .and_then(|t| check_change_time(t.with_timezone(&Utc), now).ok())
        .unwrap_or(now);
    passwords.initialise(identity, changed_at).await?;
    import_current_hash(passwords, admin, settings, identity, changed_at).await;
    Ok(())
}

/// Best effort: without the import, history starts with the next change.
pub(crate) async fn import_current_hash(
    passwords: &Passwords,
    admin: Option<&KratosAdmin>,
    settings: &KratosSettings,
    identity: &Identity,
    changed_at: DateTime<Utc>,
) {
    let (Some(admin), true) = (admin, settings.import_password_hash) else {
        return;
    };
    let Ok(uuid) = uuid::Uuid::parse_str(identity.id.as_str()) else {
        return;
    };
    match admin.identity(&uuid).await {
        Ok(Some(found)) => {
            if let Some(phc) = found.hashed_password {
                if let Err(error) = passwords
                    .import_foreign_hash(identity, &phc, changed_at)
                    .await
                {
                    tracing::warn!(identity.id = %identity.id, error = %error, "password hash not imported");
                }
            }
        }
        Ok(None) => {
            tracing::warn!(identity.id = %identity.id, "Kratos does not know this identity")
        }
        Err(error) => {
            tracing::warn!(identity.id = %identity.id, error = %error, "Kratos admin API failed")
        }
    }
}

/// Best effort: mirrors the password state into `metadata_admin.reclaim`, so admins see it in Kratos's own
/// tools (admin API, Ory Console) without asking Reclaim.
pub(crate) async fn publish_state(admin: Option<&KratosAdmin>, state: &PasswordState) {
    let Some(admin) = admin else { return };
    let Ok(uuid) = uuid::Uuid::parse_str(&state.identity_id) else {
        return;
    };
    let summary = serde_json::json!({
        "profile": state.profile,
        "password_changed_at": state.changed_at,
        "password_expires_at": state.expires_at,
        "must_change": state.must_change,
        "must_change_reason": state.must_change_reason,
    });
    let existing = match admin.identity(&uuid).await {
        Ok(Some(found)) => found.metadata_admin,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(identity.id = %state.identity_id, error = %error, "Kratos admin API failed");
            return;
        }
    };
    if let Err(error) = admin
        .set_metadata_admin(&uuid, existing, "reclaim", summary)
        .await
    {
        tracing::warn!(identity.id = %state.identity_id, error = %error, "metadata_admin not updated");
    }
}
