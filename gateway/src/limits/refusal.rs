//! Why a send was refused, and the HTTP answer that says so.

use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use std::time::Duration;

/// What a limit counts by; the `scope` label of `reclaim_gateway_limit_refusals_total` and the `scope`
/// column of `gateway_limit_sends`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitScope {
    /// One phone number or email address.
    Destination,
    /// One client IP address (IPv6: its /64).
    Ip,
    /// One identity.
    Identity,
    /// Phone numbers sharing their first `gateway.sms.prefix_digits` digits.
    Prefix,
    /// The destination's country (`gateway.sms.allowed_countries`).
    Country,
    /// The destination's number type (`gateway.sms.refused_number_types`).
    NumberType,
}

impl LimitScope {
    pub const ALL: [LimitScope; 6] = [
        LimitScope::Destination,
        LimitScope::Ip,
        LimitScope::Identity,
        LimitScope::Prefix,
        LimitScope::Country,
        LimitScope::NumberType,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LimitScope::Destination => "destination",
            LimitScope::Ip => "ip",
            LimitScope::Identity => "identity",
            LimitScope::Prefix => "prefix",
            LimitScope::Country => "country",
            LimitScope::NumberType => "number_type",
        }
    }
}

/// The stable reason code of a refusal: the `code` of the error body and the `reason` label of the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Sent to the destination less than `cooldown_seconds` ago.
    DestinationCooldown,
    /// `max_sends` to the destination in the last `window_seconds`.
    DestinationWindow,
    IpWindow,
    IdentityWindow,
    /// `prefix_max_sends_per_hour` to numbers with the destination's prefix in the last hour.
    PrefixWindow,
    /// Permanent: the destination's country is not in `gateway.sms.allowed_countries`.
    CountryNotAllowed,
    /// Permanent: the destination's number type is in `gateway.sms.refused_number_types`.
    NumberTypeRefused,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::DestinationCooldown,
        Reason::DestinationWindow,
        Reason::IpWindow,
        Reason::IdentityWindow,
        Reason::PrefixWindow,
        Reason::CountryNotAllowed,
        Reason::NumberTypeRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DestinationCooldown => "destination_cooldown",
            Reason::DestinationWindow => "destination_window",
            Reason::IpWindow => "ip_window",
            Reason::IdentityWindow => "identity_window",
            Reason::PrefixWindow => "prefix_window",
            Reason::CountryNotAllowed => "country_not_allowed",
            Reason::NumberTypeRefused => "number_type_refused",
        }
    }

    pub fn scope(self) -> LimitScope {
        match self {
            Reason::DestinationCooldown | Reason::DestinationWindow => LimitScope::Destination,
            Reason::IpWindow => LimitScope::Ip,
            Reason::IdentityWindow => LimitScope::Identity,
            Reason::PrefixWindow => LimitScope::Prefix,
            Reason::CountryNotAllowed => LimitScope::Country,
            Reason::NumberTypeRefused => LimitScope::NumberType,
        }
    }

    /// The request field the refusal is about.
    pub fn field(self) -> &'static str {
        match self {
            Reason::IpWindow => "client_ip",
            Reason::IdentityWindow => "identity_id",
            _ => "to",
        }
    }
}

/// A refused send. Limits that count sends give `retry_after`, the time until a send would be allowed
/// (the longest of every limit that refused); the screening of countries and number types is permanent
/// (`retry_after` is `None`): asking again changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub retry_after: Option<Duration>,
}

impl Refusal {
    pub fn scope(&self) -> LimitScope {
        self.reason.scope()
    }

    pub fn is_permanent(&self) -> bool {
        self.retry_after.is_none()
    }

    /// 429 for limits that lift with time; 422 for the permanent ones (a valid number that this gateway
    /// does not serve: asking again later does not help, so 429 would mislead clients into retrying).
    pub fn status(&self) -> StatusCode {
        if self.is_permanent() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::TOO_MANY_REQUESTS
        }
    }

    /// `Retry-After` in whole seconds, rounded up so that a client that waits that long is let through.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        self.retry_after.map(whole_seconds_up)
    }

    /// A message for people; it names no destination, address or identity.
    pub fn message(&self) -> String {
        let wait = self
            .retry_after_seconds()
            .map(|s| format!("; try again in {s} s"))
            .unwrap_or_default();
        let what = match self.reason {
            Reason::DestinationCooldown => "a message was sent to this destination moments ago",
            Reason::DestinationWindow => "too many messages were sent to this destination",
            Reason::IpWindow => "too many messages were requested from this client address",
            Reason::IdentityWindow => "too many messages were requested for this identity",
            Reason::PrefixWindow => "too many messages were sent to numbers in this range",
            Reason::CountryNotAllowed => "messages to this country are not allowed",
            Reason::NumberTypeRefused => "messages to this kind of number are not allowed",
        };
        format!("{what}{wait}")
    }

    /// The answer in the common error shape: `{"error": {"code": <reason>, "message", "field"}}`, with
    /// `Retry-After` when the refusal lifts with time.
    pub fn error_response(&self) -> HttpResponse {
        let mut response = reclaim_common::json::error_response(
            self.status(),
            self.reason.as_str(),
            self.message(),
            Some(self.reason.field()),
        );
        if let Some(seconds) = self.retry_after_seconds() {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.message())
    }
}

fn whole_seconds_up(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(whole_seconds_up(Duration::from_secs(30)), 30);
        assert_eq!(whole_seconds_up(Duration::from_millis(29_001)), 30);
        assert_eq!(whole_seconds_up(Duration::from_nanos(1)), 1);
        assert_eq!(whole_seconds_up(Duration::ZERO), 0);
    }

    #[test]
    fn waiting_refusals_are_429_with_retry_after_and_permanent_ones_422() {
        let wait = Refusal {
            reason: Reason::IpWindow,
            retry_after: Some(Duration::from_millis(1_500)),
        };
        let response = wait.error_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers().get(RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
        let body = response.into_body().try_into_bytes().expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["error"]["code"], "ip_window");
        assert_eq!(body["error"]["field"], "client_ip");

        let permanent = Refusal {
            reason: Reason::NumberTypeRefused,
            retry_after: None,
        };
        let response = permanent.error_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(response.headers().get(RETRY_AFTER).is_none());
        assert_eq!(permanent.scope(), LimitScope::NumberType);
    }
}
