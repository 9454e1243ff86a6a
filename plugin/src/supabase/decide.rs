//! What one password verification attempt gets: Supabase's sign-in goes on unless the password was
//! correct and the identity's profile refuses it (expired past its grace logins, or a pending must-change
//! mark the profile enforces).

use super::payload::VerificationAnswer;
use crate::identity::Identity;
use crate::passwords::{Passwords, PasswordsError};
use chrono::{DateTime, Utc};

/// One attempt, parsed.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub identity: Identity,
    pub valid: bool,
    /// Supabase's `metadata.uuid`: the same for every retry of one call.
    pub invocation: Option<String>,
}

/// Decides `attempt` at `now`. A wrong password is Supabase's to refuse: nothing is recorded. An identity
/// seen for the first time starts being tracked with its password changed `now` (Supabase tells no change
/// time; the send-email hook's `password_changed_notification` is where a later one shows).
pub async fn decide(
    passwords: &Passwords,
    attempt: &Attempt,
    logout_on_reject: bool,
    now: DateTime<Utc>,
) -> Result<VerificationAnswer, PasswordsError> {
    if !attempt.valid {
        return Ok(VerificationAnswer::Continue);
    }
    if passwords.state(&attempt.identity.id).await?.is_none() {
        passwords.initialise(&attempt.identity, now).await?;
    }
    let outcome = passwords.on_login(&attempt.identity, now, None).await?;
    if outcome.allowed {
        return Ok(VerificationAnswer::Continue);
    }
    let message = outcome
        .notice
        .map(|violation| violation.message)
        .unwrap_or_else(|| "Your password must be changed.".to_string());
    tracing::info!(identity.id = %attempt.identity.id, status = ?outcome.status, "Supabase sign-in refused");
    Ok(VerificationAnswer::Reject {
        message,
        should_logout_user: logout_on_reject,
    })
}
