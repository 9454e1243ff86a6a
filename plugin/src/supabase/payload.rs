//! Supabase Auth's password-verification-attempt hook, as `supabase/auth` sends and parses it
//! (`internal/hooks/v0hooks`). See `../shared/contracts/supabase/`.

use serde::{Deserialize, Serialize};

/// `PasswordVerificationAttemptInput`. `metadata` is absent in older versions.
#[derive(Debug, Clone, Deserialize)]
pub struct VerificationAttempt {
    pub user_id: String,
    /// Whether the password Supabase compared was correct.
    pub valid: bool,
    pub metadata: Option<Metadata>,
}

/// The envelope's `metadata`; `uuid` is fixed for one hook invocation, so Supabase's retries of it carry the
/// same one (unlike `webhook-id`, which is new for every attempt).
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub uuid: Option<String>,
}

/// `PasswordVerificationAttemptOutput`. Supabase requires `should_logout_user` to be a JSON boolean.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum VerificationAnswer {
    Continue,
    Reject {
        message: String,
        should_logout_user: bool,
    },
}
