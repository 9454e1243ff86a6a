//! A ZITADEL notification as a domain value and its outbox message.
//!
//! ZITADEL retries a notification whose provider call failed, re-sending the same body, so a retry carries
//! the same recipient, event type and code (or text). [`ZitadelMessage::handoff`] gives those to
//! [`crate::handoff::queue`] (scope [`DEDUPE_SCOPE`]), which remembers the answer for
//! `gateway.zitadel.dedupe_window_seconds`.

use super::payload::ProviderBody;
use crate::address::Destination;
use crate::channel::Channel;
use crate::handoff::{self, Handoff};
use crate::outbox::NewMessage;
use crate::templates::{Templates, PASS_THROUGH};
use chrono::NaiveDateTime;
use reclaim_common::json::FieldError;
use reclaim_common::settings::GatewaySettings;
use serde_json::{json, Value};

/// The idempotency scope of ZITADEL dedupe records, and the context of their keyed digests.
pub const DEDUPE_SCOPE: &str = "gateway.zitadel.provider";

/// The ZITADEL events whose code our own templates can carry; every other event is sent as ZITADEL
/// rendered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeEvent {
    /// `user.human.password.code.added`: a password reset code.
    PasswordReset,
    /// `user.human.email.code.added`, `user.human.phone.code.added`: an address or number to verify.
    Verification,
    /// `user.human.mfa.otp.{sms,email}.code.added`, `session.otp.{sms,email}.challenged`: a one-time
    /// password to sign in.
    Otp,
}

impl CodeEvent {
    pub fn of(event_type: &str) -> Option<Self> {
        Some(match event_type {
            "user.human.password.code.added" => Self::PasswordReset,
            "user.human.email.code.added" | "user.human.phone.code.added" => Self::Verification,
            "user.human.mfa.otp.sms.code.added"
            | "user.human.mfa.otp.email.code.added"
            | "session.otp.sms.challenged"
            | "session.otp.email.challenged" => Self::Otp,
            _ => return None,
        })
    }

    /// Our template for the event (a folder of `config/templates`).
    pub fn own_template(self) -> &'static str {
        match self {
            Self::PasswordReset => "recovery_code",
            Self::Verification => "verification_code",
            Self::Otp => "login_code",
        }
    }

    /// The `args` fields that carry the code, first found wins (ZITADEL names a one-time password `otp`).
    fn code_fields(self) -> &'static [&'static str] {
        match self {
            Self::Otp => &["otp", "code"],
            Self::PasswordReset | Self::Verification => &["code"],
        }
    }
}

/// A notification ZITADEL asked us to deliver, checked.
#[derive(Debug, Clone)]
pub struct ZitadelMessage {
    pub event_type: String,
    pub channel: Channel,
    pub destination: Destination,
    /// The event's code, when the event is one of [`CodeEvent`] and `args` carries it.
    code: Option<(CodeEvent, String)>,
    subject: String,
    /// ZITADEL's text: greeting, text and link for email; the text alone for SMS (as ZITADEL's own SMS).
    text: String,
}

impl ZitadelMessage {
    /// Maps the body a provider of `channel` (email or SMS) sent; what cannot be delivered is named.
    pub fn parse(body: ProviderBody, channel: Channel) -> Result<Self, FieldError> {
        let event_type = body.context_info.event_type.trim().to_string();
        if event_type.is_empty() {
            return Err(FieldError::new(
                "contextInfo.eventType",
                "must not be empty",
            ));
        }
        let (field, recipient) = match channel {
            Channel::Email => (
                "contextInfo.recipientEmailAddress",
                body.context_info.recipient_email_address,
            ),
            _ => (
                "contextInfo.recipientPhoneNumber",
                body.context_info.recipient_phone_number,
            ),
        };
        let recipient = recipient
            .filter(|r| !r.trim().is_empty())
            .ok_or_else(|| FieldError::new(field, "is required"))?;
        let destination =
            Destination::parse(channel, &recipient).map_err(|m| FieldError::new(field, m))?;
        let code = CodeEvent::of(&event_type).and_then(|event| {
            event
                .code_fields()
                .iter()
                .find_map(|name| body.args.get(*name).and_then(Value::as_str))
                .map(str::trim)
                .filter(|code| !code.is_empty())
                .map(|code| (event, code.to_string()))
        });
        let data = body.template_data;
        let text = match channel {
            Channel::Email => {
                let mut parts = vec![data.greeting.trim(), data.text.trim()];
                let link = match (data.button_text.trim(), data.url.trim()) {
                    (_, "") => String::new(),
                    ("", url) => url.to_string(),
                    (label, url) => format!("{label}: {url}"),
                };
                parts.push(&link);
                parts
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .collect::<Vec<_>>()
                    .join("\n\n")
            }
            _ => data.text.trim().to_string(),
        };
        Ok(Self {
            event_type,
            channel,
            destination,
            code,
            subject: data.subject.trim().to_string(),
            text,
        })
    }

    /// The template the message goes out with: ours when `gateway.zitadel.use_own_templates`, the event
    /// carries a code and the template exists for the channel; else [`PASS_THROUGH`].
    fn template(&self, settings: &GatewaySettings, templates: &Templates) -> &'static str {
        match &self.code {
            Some((event, _))
                if settings.zitadel.use_own_templates
                    && templates.supports(
                        event.own_template(),
                        &settings.messages.default_locale,
                        self.channel,
                    ) =>
            {
                event.own_template()
            }
            _ => PASS_THROUGH,
        }
    }

    /// The outbox message, rendered once here so a message that cannot be rendered is refused now rather
    /// than failing in the worker. ZITADEL sends no language and no code lifetime: our templates go out in
    /// `gateway.messages.default_locale`, and the message has no expiry of its own.
    pub fn plan(
        &self,
        settings: &GatewaySettings,
        templates: &Templates,
        id: String,
        now: NaiveDateTime,
    ) -> Result<NewMessage, FieldError> {
        let template = self.template(settings, templates);
        let data = match (&self.code, template == PASS_THROUGH) {
            (Some((_, code)), false) => json!({"code": code}),
            _ => json!({"subject": self.subject, "text": self.text, "sms": self.text}),
        };
        let locale = settings.messages.default_locale.clone();
        templates
            .render(template, &locale, self.channel, &data)
            .map_err(|error| {
                let field = match error.field.as_str() {
                    "data.subject" => "templateData.subject",
                    "data.text" | "data.sms" => "templateData.text",
                    _ => "args",
                };
                FieldError::new(field, error.message)
            })?;
        Ok(handoff::new_message(
            settings,
            templates,
            template,
            &locale,
            self.channel,
            &self.destination,
            &data,
            None,
            id,
            now,
        ))
    }

    /// What [`crate::handoff::queue`] needs to queue this message once per ZITADEL retry window: recipient,
    /// event type and the code (the text, for events without one: fixed once ZITADEL rendered it).
    pub fn handoff(&self) -> Handoff {
        let what = match &self.code {
            Some((_, code)) => code.as_str(),
            None => self.text.as_str(),
        };
        Handoff {
            scope: DEDUPE_SCOPE,
            material: format!(
                "{}\n{}\n{}\n{what}",
                self.channel.as_str(),
                self.destination.as_str(),
                self.event_type
            ),
            channel: self.channel,
            destination: self.destination.clone(),
            identity_id: None,
            answers: &handoff::ID_ANSWERS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(name: &str) -> ProviderBody {
        let path = format!(
            "{}/../../shared/contracts/zitadel/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("contract");
        reclaim_common::json::parse(text.as_bytes()).expect("contract parses")
    }

    #[test]
    fn the_contract_payloads_map_to_their_channel_and_code() {
        let sms = ZitadelMessage::parse(
            contract("http-sms-provider-password-code.json"),
            Channel::Sms,
        )
        .expect("sms");
        assert_eq!(sms.destination.as_str(), "+41791234567");
        assert_eq!(sms.code, Some((CodeEvent::PasswordReset, "K3NQ7P".into())));
        assert!(sms.text.starts_with("We received a password reset request"));
        let email = ZitadelMessage::parse(
            contract("http-email-provider.docs-example.json"),
            Channel::Email,
        )
        .expect("email");
        assert_eq!(email.destination.as_str(), "example@zitadel.com");
        // An initialization code has no template of ours: ZITADEL's text goes out.
        assert_eq!(email.code, None);
        assert!(email
            .text
            .starts_with("Hello GivenName FamilyName,\n\nThis user"));
        assert!(email.text.ends_with("&code=0M53RF&loginname=Username&orgID=275353657317327214&passwordset=false&userID=285181014567813483"));
    }

    #[test]
    fn an_sms_body_sent_to_the_email_hook_names_the_missing_address() {
        let error = ZitadelMessage::parse(
            contract("http-sms-provider-password-code.json"),
            Channel::Email,
        )
        .expect_err("no email address");
        assert_eq!(error.field, "contextInfo.recipientEmailAddress");
    }

    #[test]
    fn one_time_passwords_are_read_from_otp() {
        let mut body = contract("http-sms-provider-password-code.json");
        body.context_info.event_type = "session.otp.sms.challenged".into();
        body.args.insert("otp".into(), json!("402913"));
        let message = ZitadelMessage::parse(body, Channel::Sms).expect("otp");
        assert_eq!(message.code, Some((CodeEvent::Otp, "402913".into())));
    }

    #[test]
    fn the_dedupe_material_separates_recipients_events_and_codes() {
        let first = ZitadelMessage::parse(
            contract("http-sms-provider-password-code.json"),
            Channel::Sms,
        )
        .expect("parse");
        let mut other_code = first.clone();
        other_code.code = Some((CodeEvent::PasswordReset, "AAAAAA".into()));
        let mut other_event = first.clone();
        other_event.event_type = "user.human.phone.code.added".into();
        let materials = [
            first.handoff().material,
            other_code.handoff().material,
            other_event.handoff().material,
        ];
        assert_ne!(materials[0], materials[1]);
        assert_ne!(materials[0], materials[2]);
        assert_eq!(materials[0], first.clone().handoff().material);
    }
}
