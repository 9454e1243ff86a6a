//! The gateway's abuse limits: `[gateway.limits]` (sends per destination, client IP and identity, decided in
//! the database) and `[gateway.sms]` (which phone numbers SMS and voice may reach, and the cap per number
//! prefix against SMS pumping).

use super::{check_range, Problem};
use serde::{Deserialize, Serialize};

/// Longest window any limit may count over: 30 days.
const MAX_WINDOW_SECONDS: u64 = 30 * 24 * 3600;
/// Most sends any limit may allow per window.
const MAX_SENDS: u32 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSettings {
    /// Most steps in a fallback chain a caller supplies with `POST /v1/messages` (each step is one more
    /// send; SMS and voice steps stay on the message's own number).
    pub max_fallback_steps: u32,
    pub destination: DestinationLimit,
    pub ip: IpLimit,
    pub identity: IdentityLimit,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        Self {
            max_fallback_steps: 2,
            destination: DestinationLimit::default(),
            ip: IpLimit::default(),
            identity: IdentityLimit::default(),
        }
    }
}

/// Sends to one phone number or email address, whatever the channel (SMS and voice to one number count
/// together).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DestinationLimit {
    pub enabled: bool,
    /// Least time between two sends to the destination; 0 = no cooldown.
    pub cooldown_seconds: u64,
    /// Most sends to the destination in any `window_seconds`.
    pub max_sends: u32,
    pub window_seconds: u64,
}

impl Default for DestinationLimit {
    fn default() -> Self {
        Self {
            enabled: true,
            cooldown_seconds: 30,
            max_sends: 5,
            window_seconds: 3600,
        }
    }
}

/// Sends asked for by one client IP address (IPv6: its /64 network).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpLimit {
    pub enabled: bool,
    pub max_sends: u32,
    pub window_seconds: u64,
}

impl Default for IpLimit {
    fn default() -> Self {
        Self {
            enabled: true,
            max_sends: 20,
            window_seconds: 3600,
        }
    }
}

/// Sends for one identity (the IdP's user id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityLimit {
    pub enabled: bool,
    pub max_sends: u32,
    pub window_seconds: u64,
}

impl Default for IdentityLimit {
    fn default() -> Self {
        Self {
            enabled: true,
            max_sends: 10,
            window_seconds: 3600,
        }
    }
}

/// What SMS and voice may reach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsSettings {
    /// Countries SMS and voice may reach: calling codes (`"44"` or `"+44"`) or ISO 3166 regions (`"GB"`; the
    /// only way to tell apart countries that share a code, such as the US and Jamaica under +1). Empty = all.
    pub allowed_countries: Vec<String>,
    /// Number types refused for SMS and voice, as the phone-number metadata classifies them.
    pub refused_number_types: Vec<NumberType>,
    /// Length of the number prefix (leading digits of the E.164 number, without `+`) that
    /// `prefix_max_sends_per_hour` counts by.
    pub prefix_digits: u32,
    /// Most SMS and voice sends to numbers sharing a prefix in any hour (SMS pumping walks through a range
    /// of numbers); 0 = no cap.
    pub prefix_max_sends_per_hour: u32,
}

impl Default for SmsSettings {
    fn default() -> Self {
        Self {
            allowed_countries: Vec::new(),
            refused_number_types: vec![
                NumberType::PremiumRate,
                NumberType::SharedCost,
                NumberType::TollFree,
                NumberType::PersonalNumber,
                NumberType::Uan,
                NumberType::Pager,
                NumberType::Voicemail,
            ],
            prefix_digits: 7,
            prefix_max_sends_per_hour: 100,
        }
    }
}

/// A phone number type the metadata can tell from the digits. Where fixed-line and mobile numbers share
/// their ranges (the US, Canada) the type is `fixed_line_or_mobile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberType {
    FixedLine,
    Mobile,
    FixedLineOrMobile,
    TollFree,
    PremiumRate,
    SharedCost,
    PersonalNumber,
    Voip,
    Pager,
    Uan,
    Voicemail,
    /// Valid for its country, but in no range of a known type.
    Unknown,
}

impl NumberType {
    pub fn as_str(self) -> &'static str {
        match self {
            NumberType::FixedLine => "fixed_line",
            NumberType::Mobile => "mobile",
            NumberType::FixedLineOrMobile => "fixed_line_or_mobile",
            NumberType::TollFree => "toll_free",
            NumberType::PremiumRate => "premium_rate",
            NumberType::SharedCost => "shared_cost",
            NumberType::PersonalNumber => "personal_number",
            NumberType::Voip => "voip",
            NumberType::Pager => "pager",
            NumberType::Uan => "uan",
            NumberType::Voicemail => "voicemail",
            NumberType::Unknown => "unknown",
        }
    }
}

/// An entry of `gateway.sms.allowed_countries`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedCountry {
    /// A calling code, e.g. 44.
    Code(u16),
    /// An ISO 3166 region as the phone-number metadata names it, e.g. `GB`.
    Region(String),
}

impl AllowedCountry {
    /// `"44"`, `"+44"` (a calling code the metadata knows) or `"GB"` (a region it knows).
    pub fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        let digits = entry.strip_prefix('+').unwrap_or(entry);
        if !digits.is_empty() && digits.len() <= 3 && digits.bytes().all(|b| b.is_ascii_digit()) {
            let code: u16 = digits
                .parse()
                .map_err(|_| "is not a calling code".to_string())?;
            return match phonenumber::metadata::DATABASE.by_code(&code) {
                Some(_) => Ok(Self::Code(code)),
                None => Err(format!("+{code} is not a known calling code")),
            };
        }
        let region = entry.to_ascii_uppercase();
        if region.len() == 2
            && region.bytes().all(|b| b.is_ascii_uppercase())
            && phonenumber::metadata::DATABASE
                .by_id(region.as_str())
                .is_some()
        {
            return Ok(Self::Region(region));
        }
        Err(
            "must be a calling code such as \"44\" or \"+44\", or an ISO 3166 region such as \"GB\""
                .into(),
        )
    }
}

impl LimitsSettings {
    pub(crate) fn validate(&self, problems: &mut Vec<Problem>) {
        check_range(
            "gateway.limits.max_fallback_steps",
            self.max_fallback_steps,
            0..=5,
            problems,
        );
        let d = &self.destination;
        check_range(
            "gateway.limits.destination.cooldown_seconds",
            d.cooldown_seconds,
            0..=86_400,
            problems,
        );
        for (scope, max_sends, window_seconds) in [
            ("destination", d.max_sends, d.window_seconds),
            ("ip", self.ip.max_sends, self.ip.window_seconds),
            (
                "identity",
                self.identity.max_sends,
                self.identity.window_seconds,
            ),
        ] {
            check_range(
                &format!("gateway.limits.{scope}.max_sends"),
                max_sends,
                1..=MAX_SENDS,
                problems,
            );
            check_range(
                &format!("gateway.limits.{scope}.window_seconds"),
                window_seconds,
                1..=MAX_WINDOW_SECONDS,
                problems,
            );
        }
    }
}

impl SmsSettings {
    pub(crate) fn validate(&self, problems: &mut Vec<Problem>) {
        for (i, entry) in self.allowed_countries.iter().enumerate() {
            if let Err(message) = AllowedCountry::parse(entry) {
                problems.push(Problem::new(
                    format!("gateway.sms.allowed_countries[{i}]"),
                    message,
                ));
            }
        }
        check_range(
            "gateway.sms.prefix_digits",
            self.prefix_digits,
            1..=15,
            problems,
        );
        check_range(
            "gateway.sms.prefix_max_sends_per_hour",
            self.prefix_max_sends_per_hour,
            0..=MAX_SENDS,
            problems,
        );
    }

    /// The allow-list, parsed; entries that do not parse (refused by validation) are left out.
    pub fn allowed_countries(&self) -> Vec<AllowedCountry> {
        self.allowed_countries
            .iter()
            .filter_map(|entry| AllowedCountry::parse(entry).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::from_value;
    use serde_json::json;

    fn problems(value: serde_json::Value) -> Vec<String> {
        from_value(value)
            .err()
            .map(|e| e.problems.into_iter().map(|p| p.key).collect())
            .unwrap_or_default()
    }

    #[test]
    fn allowed_countries_are_known_calling_codes_or_regions() {
        assert_eq!(AllowedCountry::parse("44"), Ok(AllowedCountry::Code(44)));
        assert_eq!(AllowedCountry::parse("+1"), Ok(AllowedCountry::Code(1)));
        assert_eq!(
            AllowedCountry::parse("gb"),
            Ok(AllowedCountry::Region("GB".into()))
        );
        for bad in ["", "+", "999", "+0", "XX", "GBR", "4 4", "+1234"] {
            assert!(AllowedCountry::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            problems(json!({"gateway": {"sms": {"allowed_countries": ["44", "ZZ", "US"]}}})),
            vec!["gateway.sms.allowed_countries[1]".to_string()]
        );
    }

    #[test]
    fn limit_bounds_are_checked_and_named() {
        assert_eq!(
            problems(json!({"gateway": {
                "limits": {
                    "destination": {"max_sends": 0, "cooldown_seconds": 90000},
                    "ip": {"window_seconds": 0},
                    "identity": {"max_sends": 2000000},
                },
                "sms": {"prefix_digits": 16, "refused_number_types": ["premium_rate", "mobile"]},
            }})),
            vec![
                "gateway.limits.destination.cooldown_seconds".to_string(),
                "gateway.limits.destination.max_sends".to_string(),
                "gateway.limits.ip.window_seconds".to_string(),
                "gateway.limits.identity.max_sends".to_string(),
                "gateway.sms.prefix_digits".to_string(),
            ]
        );
        let unknown_type =
            from_value(json!({"gateway": {"sms": {"refused_number_types": ["landline"]}}}))
                .err()
                .map(|e| e.problems.into_iter().map(|p| p.key).collect::<Vec<_>>());
        assert_eq!(
            unknown_type,
            Some(vec!["gateway.sms.refused_number_types[0]".to_string()])
        );
    }
}
