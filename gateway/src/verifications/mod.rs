//! Verifications: one-time codes and links with a lifecycle, shaped after Twilio Verify.
//!
//! A verification is started for one destination and purpose, sends its code (or, for email with a
//! `link_url`, a link) through the outbox, may be resent (the same code while it is valid, possibly on
//! another phone channel; a new link that supersedes the older one), and is checked until it is approved,
//! runs out of checks, expires or is canceled. The code is stored as a keyed digest for checks and sealed
//! only so a resend can repeat it; both end with the verification.
//!
//! What lives here: the domain values (`secret`: codes and link tokens; this file: purpose, kind, status),
//! storage (`store`), the lifecycle (`lifecycle`) and the answers (`view`). The HTTP handlers are in
//! `routes::verifications`.

mod lifecycle;
mod secret;
mod store;
mod view;

pub use lifecycle::{CheckOutcome, NewVerification, VerificationError, Verifications};
pub use secret::{Secret, SecretFormatError};
pub use store::delete_expired;
pub use view::{CheckView, SendView, VerificationView};

use serde::{Deserialize, Serialize};

/// Why a verification was started; picks the template (`<purpose>_code` or `<purpose>_link`) and may pick
/// the lifetime (`gateway.verifications.purpose_ttl_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Recovery,
    Verification,
    Login,
    Device,
}

impl Purpose {
    pub const ALL: [Purpose; 4] = [
        Purpose::Recovery,
        Purpose::Verification,
        Purpose::Login,
        Purpose::Device,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Recovery => "recovery",
            Purpose::Verification => "verification",
            Purpose::Login => "login",
            Purpose::Device => "device",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

/// What the person receives: a code to type, or a link to open (email only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Code,
    Link,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Code => "code",
            Kind::Link => "link",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Kind::Code, Kind::Link]
            .into_iter()
            .find(|k| k.as_str() == text)
    }

    /// The template that carries this kind of secret for `purpose`.
    pub fn template(self, purpose: Purpose) -> String {
        format!("{}_{}", purpose.as_str(), self.as_str())
    }
}

/// Where a verification is. Only `pending` takes checks and resends; the others are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Approved,
    MaxChecksReached,
    Expired,
    Canceled,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Approved,
        Status::MaxChecksReached,
        Status::Expired,
        Status::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::MaxChecksReached => "max_checks_reached",
            Status::Expired => "expired",
            Status::Canceled => "canceled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}
