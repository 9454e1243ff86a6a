//! A string that must never reach a log line or an error message.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;

/// A secret value from configuration (token, pepper, password, key).
///
/// `Debug` and `Serialize` show `***` so the effective configuration can be printed and logged safely; the
/// value itself is reached only through [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time comparison with a presented value.
    pub fn matches(&self, presented: &[u8]) -> bool {
        !self.0.is_empty() && constant_time_eq(self.0.as_bytes(), presented)
    }
}

/// Compares two byte strings without leaking where they differ. The length may leak; callers compare
/// fixed-length digests or tokens whose length is not secret.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// Masks an email address or phone number for logs: `j***@example.com`, `+4915******89`.
pub fn mask_address(address: &str) -> String {
    if let Some((local, domain)) = address.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let chars: Vec<char> = address.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 6))
}

/// Masks every email address and phone number found in a free text (a provider's error message, an SMTP
/// reply): words with an `@` become `j***@example.com`, runs of 7 or more digits (with `+`, spaces or
/// dashes between them) keep only their first four and last two characters. The rest is left as it is.
pub fn mask_addresses_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let is_separator = |c: char| c.is_whitespace() || "<>()[]{},;\"'`".contains(c);
    for c in text.chars() {
        if is_separator(c) {
            out.push_str(&mask_word(&word));
            word.clear();
            out.push(c);
        } else {
            word.push(c);
        }
    }
    out.push_str(&mask_word(&word));
    mask_digit_runs(&out)
}

fn mask_word(word: &str) -> String {
    // `mailbox:` or `user@host.` at the end of a sentence: keep the punctuation, mask the address.
    let trimmed = word.trim_end_matches(['.', ':', '!', '?']);
    match trimmed.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
            format!("{}{}", mask_address(trimmed), &word[trimmed.len()..])
        }
        _ => word.to_string(),
    }
}

/// Phone numbers: a `+` or digit starting a run of digits, spaces and dashes holding at least 7 digits.
fn mask_digit_runs(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i] == '+' || chars[i].is_ascii_digit();
        let after_word = i > 0 && chars[i - 1].is_alphanumeric();
        if starts && !after_word {
            let mut end = i + 1;
            while end < chars.len()
                && (chars[end].is_ascii_digit()
                    || (matches!(chars[end], ' ' | '-')
                        && chars.get(end + 1).is_some_and(char::is_ascii_digit)))
            {
                end += 1;
            }
            let digits = chars[i..end].iter().filter(|c| c.is_ascii_digit()).count();
            if digits >= 7 {
                let run: String = chars[i..end]
                    .iter()
                    .filter(|c| **c != ' ' && **c != '-')
                    .collect();
                out.push_str(&mask_address(&run));
                i = end;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_or_serialized_form() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "\"***\"");
        assert_eq!(
            serde_json::to_string(&secret).ok().as_deref(),
            Some("\"***\"")
        );
        assert!(secret.matches(b"hunter2"));
        assert!(!secret.matches(b"hunter3"));
        assert!(!Secret::default().matches(b""));
    }

    #[test]
    fn addresses_are_masked() {
        assert_eq!(mask_address("jane@example.com"), "j***@example.com");
        assert_eq!(mask_address("+4915112345689"), "+491********89");
    }

    #[test]
    fn addresses_inside_provider_texts_are_masked() {
        assert_eq!(
            mask_addresses_in(
                "permanent error (550): 5.1.1 <reject@example.com>: mailbox unavailable"
            ),
            "permanent error (550): 5.1.1 <r***@example.com>: mailbox unavailable"
        );
        assert_eq!(
            mask_addresses_in("The 'To' number +14155550100 is not a valid phone number."),
            "The 'To' number +141******00 is not a valid phone number."
        );
        assert_eq!(
            mask_addresses_in("call 415 555 0100 or mail jane.doe@example.org."),
            "call 4155****00 or mail j***@example.org."
        );
        // Codes such as SMTP's 5.1.1, Twilio's 21211 and times stay readable.
        assert_eq!(
            mask_addresses_in("Twilio error 21211 at 12:30, 550 5.1.1"),
            "Twilio error 21211 at 12:30, 550 5.1.1"
        );
    }
}
