//! What an attempt's outcome and error code mean, in words an operator can read to the person asking:
//! Twilio's error codes (REST answers and status callbacks), SMTP reply codes, and the codes our own
//! providers and worker record (`timeout`, `connection`, `http_429`, `expired`, ...).

use crate::outbox::AttemptOutcome;

/// The meaning of one attempt: its error code when there is one we know, else its outcome.
pub fn meaning(outcome: AttemptOutcome, code: Option<&str>) -> String {
    if let Some(text) = code.and_then(code_meaning) {
        return text.to_string();
    }
    let base = match outcome {
        AttemptOutcome::Sent => "handed to the provider; no delivery report yet",
        AttemptOutcome::Delivered => "the provider reported the message delivered",
        AttemptOutcome::Undelivered => "the provider reported the message could not be delivered",
        AttemptOutcome::Transient => "a temporary failure; the gateway retries",
        AttemptOutcome::Permanent => "a permanent failure; retrying the same way cannot help",
        AttemptOutcome::Timeout => "the provider did not answer in time; the gateway retries",
    };
    match code {
        Some(code) => format!("{base} (code {code})"),
        None => base.to_string(),
    }
}

/// The sentence for a code we know, `None` for any other.
pub fn code_meaning(code: &str) -> Option<&'static str> {
    Some(match code {
        // Our own codes (providers and worker).
        "timeout" => "the provider did not answer in time",
        "connection" => "the provider could not be reached (connection refused or failed)",
        "transport" => "the connection to the provider broke off",
        "expired" => "the message expired before it could be sent",
        "not_configured" => "the provider is not configured for this channel",
        "unsupported_channel" => "the provider cannot send on this channel",
        "twiml_too_long" => "the spoken message is longer than Twilio allows",
        "http_429" | "20429" | "429" => "the provider is rate limiting us (too many requests)",
        "http_500" | "http_502" | "http_503" | "http_504" | "20500" | "20503" => {
            "the provider had an internal error"
        }
        "http_401" | "20003" => "the provider refused our credentials",
        // Twilio.
        "21211" => "the number is not a valid phone number",
        "21214" => "the number cannot be reached by a call",
        "21401" => "the number is not a valid phone number",
        "21407" => "the number type cannot receive SMS",
        "21408" => "sending to this region is not enabled on the account",
        "21421" => "the number is not a valid phone number",
        "21606" => "the sending number cannot send SMS",
        "21608" => "a trial account cannot send to an unverified number",
        "21610" => "the recipient replied STOP (opted out of messages from us)",
        "21612" => "the carrier cannot route messages from our number to this one",
        "21614" => "the number is not a mobile number",
        "21617" => "the message is too long",
        "21611" => "our sending number's queue is full",
        "14107" => "the account's SMS rate limit was reached",
        "30001" => "the provider's queue overflowed",
        "30002" => "the provider account is suspended",
        "30003" => "the handset is unreachable (switched off or out of coverage)",
        "30004" => "the recipient blocked the message",
        "30005" => "the number is unknown to its carrier (it may no longer exist)",
        "30006" => "the number is a landline or its carrier cannot receive SMS",
        "30007" => "the carrier filtered the message as spam",
        "30008" => "the carrier reported an unknown delivery error",
        // SMTP reply codes.
        "421" => "the mail server is unavailable for now",
        "450" => "the mailbox is unavailable for now (busy or greylisting)",
        "451" => "the mail server had a local error; it may work later",
        "452" => "the mail server is out of storage for now",
        "550" => "the mailbox does not exist or refused the message",
        "551" => "the mailbox is not local to that server",
        "552" => "the mailbox is full",
        "553" => "the mailbox name is not allowed",
        "554" => "the mail server refused the message (often as spam or by policy)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_read_as_sentences_and_unknown_ones_fall_back_to_the_outcome() {
        assert_eq!(
            meaning(AttemptOutcome::Permanent, Some("21211")),
            "the number is not a valid phone number"
        );
        assert!(meaning(AttemptOutcome::Permanent, Some("21610")).contains("STOP"));
        assert!(meaning(AttemptOutcome::Undelivered, Some("30003")).contains("unreachable"));
        assert!(meaning(AttemptOutcome::Permanent, Some("550")).contains("does not exist"));
        assert!(meaning(AttemptOutcome::Transient, Some("http_429")).contains("rate limiting"));
        assert!(meaning(AttemptOutcome::Timeout, Some("timeout")).contains("in time"));
        let unknown = meaning(AttemptOutcome::Transient, Some("99999"));
        assert!(
            unknown.contains("temporary") && unknown.contains("99999"),
            "{unknown}"
        );
        assert_eq!(
            meaning(AttemptOutcome::Delivered, None),
            "the provider reported the message delivered"
        );
    }
}
