//! Supabase Auth's `SendSMSInput` and `SendEmailInput`, the fields the gateway reads. Unknown fields are
//! ignored: `user` is GoTrue's whole user model and grows with every release.

use serde::Deserialize;

/// `metadata`, present since GoTrue added it to every hook input (the documentation examples predate it).
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    /// Fixed for one hook invocation, so identical across Supabase's retries.
    pub uuid: String,
    /// When GoTrue called the hook (RFC 3339).
    #[serde(default)]
    pub time: String,
}

/// The part of `models.User` the gateway needs. `email` and `phone` are `""` when unset.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: String,
    #[serde(default)]
    pub email: String,
    /// E.164 without the leading `+` (GoTrue strips it).
    #[serde(default)]
    pub phone: String,
    /// When the user row was last saved (RFC 3339): for `password_changed_notification`, the change.
    #[serde(default)]
    pub updated_at: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Sms {
    pub otp: String,
    /// `mfa` for an MFA challenge; absent for every other OTP (sign-in, confirmation, phone change): GoTrue
    /// sets no other value (`internal/api/mfa.go`).
    #[serde(default)]
    pub sms_type: Option<String>,
    /// The number to send to (newer GoTrue versions), E.164 without `+`; else `user.phone`.
    #[serde(default)]
    pub phone: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SendSmsInput {
    pub metadata: Metadata,
    pub user: User,
    pub sms: Sms,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EmailData {
    /// The 6-digit OTP; `""` for notifications.
    #[serde(default)]
    pub token: String,
    pub email_action_type: String,
    /// Hex SHA-224 of email and OTP (`pkce_`-prefixed for PKCE flows): the `token` of a `/verify` link.
    #[serde(default)]
    pub token_hash: String,
    /// Where `/verify` sends the person afterwards.
    #[serde(default)]
    pub redirect_to: String,
    /// The Auth API's external URL (`…/auth/v1`), not `SITE_URL`.
    #[serde(default)]
    pub site_url: String,
    /// `email_changed_notification`: the address before the change, where GoTrue's own mailer sends it.
    #[serde(default)]
    pub old_email: String,
    /// `identity_linked_notification`, `identity_unlinked_notification`: the provider, e.g. `google`.
    #[serde(default)]
    pub provider: String,
    /// `mfa_factor_enrolled_notification`, `mfa_factor_unenrolled_notification`: `totp`, `phone`, ...
    #[serde(default)]
    pub factor_type: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SendEmailInput {
    pub metadata: Metadata,
    pub user: User,
    pub email_data: EmailData,
}
