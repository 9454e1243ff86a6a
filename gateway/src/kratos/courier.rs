//! A Kratos courier message as a domain value, its outbox message, and queueing it once per retry window.
//!
//! Kratos sends no message id and retries a message after any non-2xx answer (up to
//! `courier.message_retries`), re-sending the body it stored, so a retry carries the same recipient,
//! template type and code. [`queue`] hands those three to [`crate::handoff::queue`] (scope
//! [`DEDUPE_SCOPE`]), which remembers the answer for `gateway.kratos.dedupe_window_seconds`.

use super::payload::CourierBody;
use crate::address::Destination;
use crate::channel::Channel;
use crate::handoff::{self, Handoff, HandoffOutcome};
use crate::limits::Limits;
use crate::outbox::NewMessage;
use crate::templates::{self, Templates, PASS_THROUGH};
use chrono::{NaiveDateTime, TimeDelta};
use reclaim_common::db::{AnyConnection, DbError};
use reclaim_common::json::FieldError;
use reclaim_common::sealed::Keyring;
use reclaim_common::settings::GatewaySettings;
use reclaim_common::Db;
use serde_json::{json, Map, Value};

/// The idempotency scope of courier dedupe records, and the context of their keyed digests.
pub const DEDUPE_SCOPE: &str = "gateway.kratos.courier";

/// Every template type Kratos's courier sends (`courier/template/type.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TemplateType {
    RecoveryInvalid,
    RecoveryValid,
    RecoveryCodeInvalid,
    RecoveryCodeValid,
    VerificationInvalid,
    VerificationValid,
    VerificationCodeInvalid,
    VerificationCodeValid,
    LoginCodeValid,
    RegistrationCodeValid,
    VerifiableAddressChanged,
    AuthenticatorKeyAdded,
    /// Kratos's test template (`stub`): only its rendering exists.
    Stub,
}

/// What a template type carries that the person needs: nothing, a code, or a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carries {
    Nothing,
    /// The code, under the first of these `template_data` fields that is present.
    Code(&'static [&'static str]),
    Link(&'static str),
}

impl TemplateType {
    pub const ALL: [TemplateType; 13] = [
        Self::RecoveryInvalid,
        Self::RecoveryValid,
        Self::RecoveryCodeInvalid,
        Self::RecoveryCodeValid,
        Self::VerificationInvalid,
        Self::VerificationValid,
        Self::VerificationCodeInvalid,
        Self::VerificationCodeValid,
        Self::LoginCodeValid,
        Self::RegistrationCodeValid,
        Self::VerifiableAddressChanged,
        Self::AuthenticatorKeyAdded,
        Self::Stub,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RecoveryInvalid => "recovery_invalid",
            Self::RecoveryValid => "recovery_valid",
            Self::RecoveryCodeInvalid => "recovery_code_invalid",
            Self::RecoveryCodeValid => "recovery_code_valid",
            Self::VerificationInvalid => "verification_invalid",
            Self::VerificationValid => "verification_valid",
            Self::VerificationCodeInvalid => "verification_code_invalid",
            Self::VerificationCodeValid => "verification_code_valid",
            Self::LoginCodeValid => "login_code_valid",
            Self::RegistrationCodeValid => "registration_code_valid",
            Self::VerifiableAddressChanged => "verifiable_address_changed",
            Self::AuthenticatorKeyAdded => "authenticator_key_added",
            Self::Stub => "stub",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    fn carries(self) -> Carries {
        match self {
            // Kratos's SMS recovery model tags its code `verification_code` (`courier/template/sms/recovery_code.go`).
            Self::RecoveryCodeValid => Carries::Code(&["recovery_code", "verification_code"]),
            Self::VerificationCodeValid => Carries::Code(&["verification_code"]),
            Self::LoginCodeValid => Carries::Code(&["login_code"]),
            Self::RegistrationCodeValid => Carries::Code(&["registration_code"]),
            Self::RecoveryValid => Carries::Link("recovery_url"),
            Self::VerificationValid => Carries::Link("verification_url"),
            Self::RecoveryInvalid
            | Self::RecoveryCodeInvalid
            | Self::VerificationInvalid
            | Self::VerificationCodeInvalid
            | Self::VerifiableAddressChanged
            | Self::AuthenticatorKeyAdded
            | Self::Stub => Carries::Nothing,
        }
    }

    /// Our template for this type (a folder of `config/templates`), if there is one.
    pub fn own_template(self) -> Option<&'static str> {
        Some(match self {
            Self::RecoveryCodeValid => "recovery_code",
            Self::RecoveryValid => "recovery_link",
            Self::VerificationCodeValid => "verification_code",
            Self::VerificationValid => "verification_link",
            Self::LoginCodeValid => "login_code",
            Self::RegistrationCodeValid => "registration_code",
            Self::RecoveryInvalid | Self::RecoveryCodeInvalid => "recovery_no_account",
            Self::VerificationInvalid | Self::VerificationCodeInvalid => "verification_no_account",
            Self::VerifiableAddressChanged => "address_changed",
            Self::AuthenticatorKeyAdded => "authenticator_added",
            Self::Stub => return None,
        })
    }
}

/// The code or link a message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Secret {
    Code(String),
    Link(String),
}

/// A courier message Kratos asked us to deliver, checked.
#[derive(Debug, Clone)]
pub struct CourierMessage {
    pub template_type: TemplateType,
    pub channel: Channel,
    pub destination: Destination,
    /// BCP 47, from the user's Accept-Language, else `gateway.messages.default_locale`.
    pub locale: String,
    /// Kratos's `expires_in_minutes`: the code's or link's lifetime.
    pub ttl_minutes: Option<u32>,
    /// The identity the message is about, so erasing it forgets the dedupe record.
    pub identity_id: Option<String>,
    secret: Option<Secret>,
    subject: String,
    body: String,
    html_body: Option<String>,
}

impl CourierMessage {
    /// Maps Kratos's courier body; anything that cannot be delivered as asked is named in the error.
    pub fn parse(body: CourierBody, default_locale: &str) -> Result<Self, FieldError> {
        let template_type = TemplateType::parse(&body.template_type).ok_or_else(|| {
            FieldError::new("template_type", "is not a template type Kratos sends")
        })?;
        let delivery_field = "template_data.transient_payload.delivery";
        let delivery = match body.transient("delivery") {
            None | Some(Value::Null) => None,
            Some(Value::String(value)) => Some(value.as_str()),
            Some(_) => return Err(FieldError::new(delivery_field, "must be a string")),
        };
        let channel = match (body.message_type.as_str(), delivery) {
            ("email", None | Some("email")) => Channel::Email,
            ("sms", None | Some("sms")) => Channel::Sms,
            ("sms", Some("voice")) => Channel::Voice,
            ("email", Some(_)) => {
                return Err(FieldError::new(
                    delivery_field,
                    "an email message cannot be delivered another way",
                ))
            }
            ("sms", Some(_)) => {
                return Err(FieldError::new(
                    delivery_field,
                    "must be \"sms\" or \"voice\"",
                ))
            }
            _ => return Err(FieldError::new("message_type", "must be email or sms")),
        };
        let destination = Destination::parse(channel, &body.recipient)
            .map_err(|message| FieldError::new("recipient", message))?;
        let secret = match template_type.carries() {
            Carries::Nothing => None,
            Carries::Code(fields) => Some(Secret::Code(required_text(&body, fields)?)),
            Carries::Link(field) => Some(Secret::Link(required_text(&body, &[field])?)),
        };
        if channel == Channel::Voice && !matches!(secret, Some(Secret::Code(_))) {
            return Err(FieldError::new(
                delivery_field,
                format!(
                    "a call reads out a code, and `{}` carries none",
                    template_type.as_str()
                ),
            ));
        }
        let locale = body
            .accept_language()
            .filter(|tag| templates::is_well_formed_locale(tag))
            .unwrap_or(default_locale)
            .to_string();
        let ttl_minutes = body
            .template_data
            .get("expires_in_minutes")
            .and_then(Value::as_u64)
            .filter(|minutes| *minutes > 0)
            .map(|minutes| u32::try_from(minutes).unwrap_or(u32::MAX));
        Ok(Self {
            template_type,
            channel,
            destination,
            locale,
            ttl_minutes,
            identity_id: body.identity_id().map(str::to_string),
            secret,
            subject: body.subject,
            body: body.body,
            html_body: body.html_body.filter(|html| !html.is_empty()),
        })
    }

    /// The outbox message: our template when `gateway.kratos.use_own_templates` (and always for a call) and
    /// the template exists for the channel, else what Kratos rendered. It is rendered once here, so a message
    /// that cannot be rendered is refused now rather than failing in the worker.
    pub fn plan(
        &self,
        settings: &GatewaySettings,
        templates: &Templates,
        id: String,
        now: NaiveDateTime,
    ) -> Result<NewMessage, FieldError> {
        let own = self
            .template_type
            .own_template()
            .filter(|_| settings.kratos.use_own_templates || self.channel == Channel::Voice)
            .filter(|name| templates.supports(name, &self.locale, self.channel));
        let (template, data) = match own {
            Some(name) => (name, self.own_data()),
            None if self.channel == Channel::Voice => {
                return Err(FieldError::new(
                    "template_data.transient_payload.delivery",
                    format!(
                        "no template of ours reads `{}` out in a call",
                        self.template_type.as_str()
                    ),
                ))
            }
            None => (PASS_THROUGH, self.rendered_data()),
        };
        templates
            .render(template, &self.locale, self.channel, &data)
            .map_err(|error| {
                let field = match error.field.as_str() {
                    "data.subject" => "subject",
                    "data.text" | "data.sms" => "body",
                    _ => "template_data",
                };
                FieldError::new(field, error.message)
            })?;
        let lifetime = self.ttl_minutes.map(|minutes| {
            TimeDelta::minutes(i64::from(minutes)).min(TimeDelta::seconds(
                i64::try_from(settings.messages.max_expires_in_seconds).unwrap_or(i64::MAX),
            ))
        });
        Ok(handoff::new_message(
            settings,
            templates,
            template,
            &self.locale,
            self.channel,
            &self.destination,
            &data,
            lifetime.map(|lifetime| now + lifetime),
            id,
            now,
        ))
    }

    /// The variables of our templates: `code` or `link`, and `ttl_minutes`.
    fn own_data(&self) -> Value {
        let mut data = Map::new();
        match &self.secret {
            Some(Secret::Code(code)) => {
                data.insert("code".into(), json!(code));
            }
            Some(Secret::Link(link)) => {
                data.insert("link".into(), json!(link));
            }
            None => {}
        }
        if let Some(minutes) = self.ttl_minutes {
            data.insert("ttl_minutes".into(), json!(minutes));
        }
        Value::Object(data)
    }

    /// The parts Kratos rendered, for [`PASS_THROUGH`].
    fn rendered_data(&self) -> Value {
        let mut data = json!({"subject": self.subject, "text": self.body, "sms": self.body});
        if let Some(html) = &self.html_body {
            data["html"] = json!(html);
        }
        data
    }

    /// What tells a retry from a new message: recipient, template type, and the code or link (a message
    /// without either: Kratos's rendered body, which is fixed once Kratos stored the message).
    fn dedupe_material(&self) -> String {
        let what = match &self.secret {
            Some(Secret::Code(code)) => code.as_str(),
            Some(Secret::Link(link)) => link.as_str(),
            None => self.body.as_str(),
        };
        format!(
            "{}\n{}\n{}\n{what}",
            self.channel.as_str(),
            self.destination.as_str(),
            self.template_type.as_str()
        )
    }
}

/// A string field of `template_data` that must be present and not empty: the first of `fields` found.
fn required_text(body: &CourierBody, fields: &[&str]) -> Result<String, FieldError> {
    let found = fields
        .iter()
        .find_map(|field| body.template_data.get(*field).and_then(Value::as_str))
        .map(str::trim)
        .filter(|value| !value.is_empty());
    found.map(str::to_string).ok_or_else(|| {
        FieldError::new(
            format!("template_data.{}", fields[0]),
            format!("is required for `{}`", body.template_type),
        )
    })
}

/// What [`queue`] did (see [`HandoffOutcome`]).
pub type CourierOutcome = HandoffOutcome;

impl CourierMessage {
    /// What [`crate::handoff::queue`] needs to queue this message once per Kratos retry window.
    pub fn handoff(&self) -> Handoff {
        Handoff {
            scope: DEDUPE_SCOPE,
            material: self.dedupe_material(),
            channel: self.channel,
            destination: self.destination.clone(),
            identity_id: self.identity_id.clone(),
            answers: &handoff::ID_ANSWERS,
        }
    }
}

/// Queues `message` (planned as `planned`) unless the same message was queued within `window` of `now`.
/// Runs inside the caller's write transaction.
pub fn queue(
    conn: &mut AnyConnection,
    message: &CourierMessage,
    planned: &NewMessage,
    keyring: &Keyring,
    limits: &Limits,
    window: TimeDelta,
) -> Result<CourierOutcome, DbError> {
    handoff::queue(conn, &message.handoff(), planned, keyring, limits, window)
}

/// [`queue`] in a write transaction of its own, off the async threads.
pub async fn queue_in_transaction(
    db: &Db,
    message: CourierMessage,
    planned: NewMessage,
    keyring: Keyring,
    limits: Limits,
    window: TimeDelta,
) -> Result<CourierOutcome, DbError> {
    handoff::queue_in_transaction(db, message.handoff(), planned, keyring, limits, window).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(name: &str) -> CourierBody {
        let path = format!(
            "{}/../../shared/contracts/kratos/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        // The contracts' number is in the fictional 555-01XX range, which libphonenumber (and so every
        // gateway input) holds invalid; a real one takes its place.
        let text = std::fs::read_to_string(&path)
            .expect("contract")
            .replace("+15555550123", "+14155550100");
        reclaim_common::json::parse(text.as_bytes()).expect("contract parses")
    }

    #[test]
    fn every_own_template_ships_in_english_and_spanish() {
        let templates = Templates::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/templates"),
            "en",
        )
        .expect("shipped templates load");
        for template_type in TemplateType::ALL {
            let Some(name) = template_type.own_template() else {
                continue;
            };
            for locale in ["en", "es"] {
                assert_eq!(
                    templates.resolve_locale(name, locale).as_deref(),
                    Some(locale),
                    "{name}"
                );
            }
            assert!(templates.supports(name, "en", Channel::Email), "{name}");
            assert!(templates.supports(name, "en", Channel::Sms), "{name}");
            let calls = matches!(template_type.carries(), Carries::Code(_));
            assert_eq!(
                templates.supports(name, "en", Channel::Voice),
                calls,
                "{name}"
            );
        }
    }

    #[test]
    fn every_template_type_name_round_trips() {
        for template_type in TemplateType::ALL {
            assert_eq!(
                TemplateType::parse(template_type.as_str()),
                Some(template_type)
            );
        }
        assert_eq!(TemplateType::parse("recovery_code"), None);
    }

    #[test]
    fn the_contract_payloads_map_to_their_channel_code_and_locale() {
        let cases = [
            (
                "courier-email-recovery_code_valid.json",
                Channel::Email,
                "482913",
                "en-US",
            ),
            (
                "courier-sms-recovery_code_valid.json",
                Channel::Sms,
                "205718",
                "en-US",
            ),
            (
                "courier-sms-login_code_valid.json",
                Channel::Sms,
                "390514",
                "en-US",
            ),
            (
                "courier-email-verification_code_valid.json",
                Channel::Email,
                "715304",
                "en",
            ),
        ];
        for (file, channel, code, locale) in cases {
            let message = CourierMessage::parse(contract(file), "en").expect(file);
            assert_eq!(message.channel, channel, "{file}");
            assert_eq!(message.secret, Some(Secret::Code(code.into())), "{file}");
            assert_eq!(message.locale, locale, "{file}");
            assert_eq!(message.ttl_minutes, Some(60), "{file}");
        }
        let link = CourierMessage::parse(contract("courier-email-recovery_valid.json"), "es")
            .expect("link");
        assert!(matches!(link.secret, Some(Secret::Link(ref l)) if l.contains("token=")));
        assert_eq!(link.locale, "es");
    }

    #[test]
    fn a_call_needs_a_code_and_an_sms() {
        let mut body = contract("courier-email-recovery_valid.json");
        body.template_data
            .insert("transient_payload".into(), json!({"delivery": "voice"}));
        let error = CourierMessage::parse(body, "en").expect_err("email cannot be a call");
        assert_eq!(error.field, "template_data.transient_payload.delivery");
        let mut body = contract("courier-sms-login_code_valid.json");
        body.template_data
            .insert("transient_payload".into(), json!({"delivery": "voice"}));
        let call = CourierMessage::parse(body, "en").expect("sms becomes a call");
        assert_eq!(call.channel, Channel::Voice);
    }

    #[test]
    fn the_dedupe_material_separates_recipients_types_and_codes() {
        let first = CourierMessage::parse(contract("courier-sms-login_code_valid.json"), "en")
            .expect("parse");
        let mut other_code = first.clone();
        other_code.secret = Some(Secret::Code("000000".into()));
        let mut other_type = first.clone();
        other_type.template_type = TemplateType::RegistrationCodeValid;
        let materials = [
            first.dedupe_material(),
            other_code.dedupe_material(),
            other_type.dedupe_material(),
        ];
        assert_ne!(materials[0], materials[1]);
        assert_ne!(materials[0], materials[2]);
        assert_eq!(materials[0], first.clone().dedupe_material());
    }
}
