//! Which provider failures are worth retrying. Pure functions, shared by every provider client.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry later (with backoff, honouring `Retry-After`).
    Transient,
    /// Retrying cannot help: fall back to the next channel, or fail.
    Permanent,
}

/// Twilio error codes that no retry can fix: the number is wrong, unreachable for good, or has opted out.
/// Sources: twilio.com/docs/api/errors.
const TWILIO_PERMANENT: &[u32] = &[
    21211, // invalid 'To' phone number
    21214, // 'To' number cannot be reached (not a valid mobile/landline)
    21217, // phone number does not appear to be valid (voice)
    21219, // 'To' number not verified (trial account)
    21407, // this phone number type does not support SMS
    21408, // permission to send an SMS has not been enabled for the region
    21610, // attempt to send to an unsubscribed recipient (STOP)
    21612, // the 'To' number is not currently reachable via SMS
    21614, // 'To' number is not a valid mobile number
    21215, // geo permission: international calling not enabled for the number
    30004, // message blocked
    30005, // unknown destination handset
    30006, // landline or unreachable carrier
    30007, // message filtered as spam by the carrier
];

/// Classifies a Twilio REST failure from the HTTP status and the `code` of Twilio's error body.
///
/// 429 and 5xx are transient whatever the code; known permanent codes are permanent; every other code
/// (including 20429 "too many requests" and 30001 "queue overflow", and codes Twilio adds later) is
/// transient, so an unknown answer never throws a message away.
pub fn twilio(http_status: u16, code: Option<u32>) -> ErrorClass {
    if http_status == 429 || http_status >= 500 {
        return ErrorClass::Transient;
    }
    match code {
        Some(code) if TWILIO_PERMANENT.contains(&code) => ErrorClass::Permanent,
        _ => ErrorClass::Transient,
    }
}

/// `Retry-After` as seconds (the HTTP-date form is rare from APIs and treated as absent).
pub fn retry_after(header: Option<&str>) -> Option<Duration> {
    header
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
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
    fn twilio_codes_are_classified_per_the_table() {
        for code in [21211, 21408, 21610, 21612, 21614] {
            assert_eq!(twilio(400, Some(code)), ErrorClass::Permanent, "{code}");
        }
        for code in [20429, 30001, 99999] {
            assert_eq!(twilio(400, Some(code)), ErrorClass::Transient, "{code}");
        }
        assert_eq!(twilio(429, Some(21211)), ErrorClass::Transient);
        assert_eq!(twilio(503, None), ErrorClass::Transient);
        assert_eq!(twilio(400, None), ErrorClass::Transient);
    }

    #[test]
    fn smtp_and_retry_after_are_read() {
        assert_eq!(smtp_reply(451), ErrorClass::Transient);
        assert_eq!(smtp_reply(550), ErrorClass::Permanent);
        assert_eq!(retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
    }
}
