//! Destinations, validated once at the door: E.164 phone numbers and RFC 5322 addr-specs.

use crate::channel::Channel;

/// A destination that is known to suit its channel. Its text is what providers receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination(String);

impl Destination {
    /// Parses `to` for `channel`: an E.164 number (`+` and digits, valid for its country) for SMS and voice,
    /// a bare addr-spec (`jane@example.com`, no display name) for email.
    pub fn parse(channel: Channel, to: &str) -> Result<Self, String> {
        let to = to.trim();
        if channel.uses_phone_numbers() {
            let digits = to.strip_prefix('+').unwrap_or("");
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 15
            {
                return Err("must be a phone number in E.164 form, e.g. +14155550100".into());
            }
            let number = phonenumber::parse(None, to)
                .map_err(|_| "is not a phone number in E.164 form".to_string())?;
            if !number.is_valid() {
                return Err("is not a valid phone number for its country code".into());
            }
            Ok(Self(
                number.format().mode(phonenumber::Mode::E164).to_string(),
            ))
        } else {
            if to.contains('<') || to.contains(char::is_whitespace) {
                return Err("must be a bare email address such as jane@example.com".into());
            }
            let address: lettre::Address = to
                .parse()
                .map_err(|_| "is not a valid email address".to_string())?;
            Ok(Self(address.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For logs and API answers: `j***@example.com`, `+141******00`.
    pub fn masked(&self) -> String {
        reclaim_common::secret::mask_address(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_must_be_valid_e164() {
        assert_eq!(
            Destination::parse(Channel::Sms, "+14155550100").map(|d| d.0),
            Ok("+14155550100".to_string())
        );
        assert!(Destination::parse(Channel::Voice, "+34612345678").is_ok());
        for bad in [
            "4155550100",
            "+1 415 555 0100",
            "+999123",
            "+1415555010012345",
            "",
            "+",
        ] {
            assert!(Destination::parse(Channel::Sms, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn email_addresses_must_be_bare_addr_specs() {
        assert!(Destination::parse(Channel::Email, "jane@example.com").is_ok());
        for bad in [
            "jane",
            "jane@",
            "@example.com",
            "Jane <jane@example.com>",
            "a b@example.com",
        ] {
            assert!(Destination::parse(Channel::Email, bad).is_err(), "{bad}");
        }
    }
}
