//! Static screening of phone numbers for SMS and voice: the country allow-list and the refused number types
//! (`[gateway.sms]`). No database, no counting: the same number always gets the same answer.

use super::refusal::{Reason, Refusal};
use crate::address::Destination;
use crate::channel::Channel;
use phonenumber::metadata::DATABASE;
use reclaim_common::settings::{AllowedCountry, NumberType, SmsSettings};

#[derive(Debug, Clone)]
pub(crate) struct Screen {
    allowed: Vec<AllowedCountry>,
    refused: Vec<NumberType>,
}

impl Screen {
    pub(crate) fn new(settings: &SmsSettings) -> Self {
        Self {
            allowed: settings.allowed_countries(),
            refused: settings.refused_number_types.clone(),
        }
    }

    /// Email passes; a phone number passes when its country is allowed and its type is not refused.
    pub(crate) fn check(&self, channel: Channel, destination: &Destination) -> Result<(), Refusal> {
        if !channel.uses_phone_numbers() || (self.allowed.is_empty() && self.refused.is_empty()) {
            return Ok(());
        }
        let refuse = |reason| {
            Err(Refusal {
                reason,
                retry_after: None,
            })
        };
        // A `Destination` for SMS or voice was parsed by this same library; a number that no longer parses
        // would be a bug, and is refused rather than let through unscreened.
        let Ok(number) = phonenumber::parse(None, destination.as_str()) else {
            return refuse(Reason::NumberTypeRefused);
        };
        if !self.allowed.is_empty() {
            let code = number.code().value();
            let region = number.metadata(&DATABASE).map(|m| m.id());
            let allowed = self.allowed.iter().any(|entry| match entry {
                AllowedCountry::Code(c) => *c == code,
                AllowedCountry::Region(r) => region == Some(r.as_str()),
            });
            if !allowed {
                return refuse(Reason::CountryNotAllowed);
            }
        }
        if self.refused.contains(&number_type(&number)) {
            return refuse(Reason::NumberTypeRefused);
        }
        Ok(())
    }
}

/// The number's type as the metadata tells it from the digits.
pub(crate) fn number_type(number: &phonenumber::PhoneNumber) -> NumberType {
    use phonenumber::Type;
    match number.number_type(&DATABASE) {
        Type::FixedLine => NumberType::FixedLine,
        Type::Mobile => NumberType::Mobile,
        Type::FixedLineOrMobile => NumberType::FixedLineOrMobile,
        Type::TollFree => NumberType::TollFree,
        Type::PremiumRate => NumberType::PremiumRate,
        Type::SharedCost => NumberType::SharedCost,
        Type::PersonalNumber => NumberType::PersonalNumber,
        Type::Voip => NumberType::Voip,
        Type::Pager => NumberType::Pager,
        Type::Uan => NumberType::Uan,
        Type::Voicemail => NumberType::Voicemail,
        // Emergency, short codes and the like are never valid E.164 destinations; `Destination` refuses them.
        _ => NumberType::Unknown,
    }
}
