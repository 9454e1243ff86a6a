//! Which provider failures are worth retrying: the class every provider reports, and SMTP's reply codes.
//! Twilio's error-code table lives with its client (`twilio/errors.rs`).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry later (with backoff, honouring `Retry-After`).
    Transient,
    /// Retrying cannot help: fall back to the next channel, or fail.
    Permanent,
}

/// SMTP reply codes: 4yz is transient, 5yz permanent (RFC 5321 §4.2.1).
pub fn smtp_reply(code: u16) -> ErrorClass {
    if (500..600).contains(&code) {
        ErrorClass::Permanent
    } else {
        ErrorClass::Transient
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_replies_are_read() {
        assert_eq!(smtp_reply(451), ErrorClass::Transient);
        assert_eq!(smtp_reply(550), ErrorClass::Permanent);
    }
}
