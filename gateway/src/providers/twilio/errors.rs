//! Twilio's failures sorted into "retry later" and "will never work".
//!
//! The rule behind the table: a failure is permanent when the same request would fail the same way for this
//! recipient (invalid or unreachable number, opted out, wrong number type, region not allowed, content
//! refused), so the outbox should move to a fallback channel. Failures of our account or credentials (20003,
//! 20404, 30002) are left transient on purpose: an operator can fix them while codes are still valid, and
//! the failed attempts are visible in the metrics meanwhile. Unknown codes are transient too.

use crate::providers::SendError;
use reclaim_common::secret::mask_address;
use std::time::{Duration, SystemTime};

pub use crate::providers::classify::ErrorClass;

/// Classifies a Twilio error code (REST error bodies and the `ErrorCode` of status callbacks).
pub fn classify_twilio_code(code: u32) -> ErrorClass {
    match code {
        // Dial/call destination: invalid number, forbidden, invalid country code, no geo permission.
        13223..=13227
        // Calls: caller id not verified or invalid, To unreachable, no geo permission, blocked, invalid
        // number, trial account calling an unverified number.
        | 21210 | 21212 | 21214 | 21215 | 21216 | 21217 | 21219
        // Invalid To / phone number, number type cannot receive SMS, no permission for the region.
        | 21211 | 21401 | 21407 | 21408 | 21421
        // Messages: number not SMS-capable, missing body/From/To, From not message-capable, trial
        // unverified number, opted out (STOP), cannot route From→To, not a mobile number, body too long.
        | 21601 | 21602 | 21603 | 21604 | 21606 | 21608 | 21610 | 21612 | 21614 | 21617
        // Delivery receipts: blocked, unknown handset, landline or unreachable carrier, filtered by the
        // carrier.
        | 30004 | 30005 | 30006 | 30007 => ErrorClass::Permanent,
        // 20429 too many requests, 30001 queue overflow, 21611 From's queue full, 14107 SMS rate limit,
        // 30003 unreachable handset (switched off or out of coverage: it may be back before the code
        // expires), 30008 unknown delivery error, 20500/20503 Twilio's own trouble, and every code not
        // listed.
        _ => ErrorClass::Transient,
    }
}

/// The error body of Twilio's REST API: `{"code": 21211, "message": "...", "more_info": "...", "status": 400}`.
/// Every field is optional so that a partial body still yields what it has.
#[derive(Debug, Default, serde::Deserialize)]
pub struct TwilioErrorBody {
    #[serde(default, deserialize_with = "lenient_code")]
    pub code: Option<u32>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub more_info: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
}

/// Twilio sends the code as a number; some proxies and older docs show it as a string.
fn lenient_code<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let value: Option<serde_json::Value> = serde::Deserialize::deserialize(d)?;
    Ok(match value {
        Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Sorts a non-2xx answer: 429 and 5xx are transient whatever the body says; other statuses are classified
/// by Twilio's code, and a body without a readable code is transient.
pub fn classify_failure(status: u16, retry_after: Option<Duration>, body: &[u8]) -> SendError {
    let parsed = serde_json::from_slice::<TwilioErrorBody>(body).ok();
    let twilio_code = parsed.as_ref().and_then(|b| b.code);
    let code = Some(match twilio_code {
        Some(code) => code.to_string(),
        None => format!("http_{status}"),
    });
    let message = match parsed.as_ref().and_then(|b| b.message.as_deref()) {
        Some(text) => format!("Twilio answered {status}: {}", redact_numbers(text)),
        None if parsed.is_some() => format!("Twilio answered {status} without a message"),
        None => format!("Twilio answered {status} with a body that is not Twilio's error JSON"),
    };
    let class = if status == 429 || status >= 500 {
        ErrorClass::Transient
    } else {
        twilio_code.map_or(ErrorClass::Transient, classify_twilio_code)
    };
    match class {
        ErrorClass::Transient => SendError::Transient {
            code,
            message,
            retry_after,
        },
        ErrorClass::Permanent => SendError::Permanent { code, message },
    }
}

/// Reads `Retry-After`: delay-seconds or an HTTP date (a date in the past means "now").
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Twilio's messages quote the numbers they refuse ("The 'To' number +15005550001 is not valid"); they end
/// up in logs and in the outbox, so every phone-number-like run (digits with `+`, spaces, dashes, dots or
/// parentheses between them) holding 7 or more digits is masked. Long texts are cut.
pub fn redact_numbers(text: &str) -> String {
    const MAX_CHARS: usize = 300;
    let is_number_char = |c: char| c.is_ascii_digit() || "+ -.()".contains(c);
    let chars: Vec<char> = text.chars().take(MAX_CHARS).collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() && chars[i] != '+' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let mut end = i;
        while end < chars.len() && is_number_char(chars[end]) {
            end += 1;
        }
        // The run ends at its last digit; separators after it belong to the text.
        let last_digit = (i..end).rev().find(|&j| chars[j].is_ascii_digit());
        let Some(last_digit) = last_digit else {
            out.push(chars[i]);
            i += 1;
            continue;
        };
        let run: String = chars[i..=last_digit].iter().collect();
        if run.chars().filter(char::is_ascii_digit).count() >= 7 {
            out.push_str(&mask_address(&run));
        } else {
            out.push_str(&run);
        }
        i = last_digit + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class_of(error: &SendError) -> ErrorClass {
        match error {
            SendError::Transient { .. } => ErrorClass::Transient,
            SendError::Permanent { .. } => ErrorClass::Permanent,
        }
    }

    #[test]
    fn the_codes_named_in_the_issue_are_classified_as_documented() {
        for code in [21211, 21408, 21610, 21612, 21614] {
            assert_eq!(classify_twilio_code(code), ErrorClass::Permanent, "{code}");
        }
        for code in [30004, 30005, 30006, 30007] {
            assert_eq!(classify_twilio_code(code), ErrorClass::Permanent, "{code}");
        }
        for code in [20429, 30001, 30003, 30008, 20003, 20500, 12345, 0] {
            assert_eq!(classify_twilio_code(code), ErrorClass::Transient, "{code}");
        }
    }

    #[test]
    fn rate_limits_and_server_errors_are_transient_whatever_the_body_says() {
        let body = br#"{"code": 21211, "message": "Invalid To", "status": 429}"#;
        let error = classify_failure(429, Some(Duration::from_secs(3)), body);
        assert!(matches!(
            error,
            SendError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        assert_eq!(
            class_of(&classify_failure(503, None, body)),
            ErrorClass::Transient
        );
    }

    #[test]
    fn a_permanent_twilio_code_in_a_400_is_permanent_and_keeps_the_code() {
        let body = br#"{"code": 21614, "message": "'To' number is not a valid mobile number", "more_info": "https://www.twilio.com/docs/errors/21614", "status": 400}"#;
        match classify_failure(400, None, body) {
            SendError::Permanent { code, message } => {
                assert_eq!(code.as_deref(), Some("21614"));
                assert!(message.contains("not a valid mobile number"), "{message}");
            }
            other => panic!("expected permanent, got {other:?}"),
        }
    }

    #[test]
    fn garbage_or_codeless_bodies_are_transient_and_named_by_status() {
        for body in [
            &b"<html>Bad Gateway</html>"[..],
            b"",
            b"{\"message\": 7}",
            b"{}",
        ] {
            match classify_failure(400, None, body) {
                SendError::Transient { code, .. } => assert_eq!(code.as_deref(), Some("http_400")),
                other => panic!("expected transient, got {other:?}"),
            }
        }
        let string_code = classify_failure(400, None, br#"{"code": "21610"}"#);
        assert_eq!(class_of(&string_code), ErrorClass::Permanent);
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:27 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn phone_numbers_in_twilio_messages_are_masked() {
        let text = "The 'To' number +15005550001 is not a valid phone number. Error 21211.";
        let redacted = redact_numbers(text);
        assert!(!redacted.contains("5005550001"), "{redacted}");
        assert!(redacted.contains("+150******01"), "{redacted}");
        assert!(redacted.ends_with("Error 21211."), "{redacted}");
        let spaced = redact_numbers("Cannot reach +1 (415) 555-2671, sorry. Code 30003 at 10:45.");
        assert!(!spaced.contains("555-2671"), "{spaced}");
        assert!(
            spaced.ends_with(", sorry. Code 30003 at 10:45."),
            "{spaced}"
        );
        assert_eq!(redact_numbers("+ plus and 12 items"), "+ plus and 12 items");
    }
}
