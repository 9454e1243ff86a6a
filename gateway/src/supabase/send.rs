//! One Supabase send-hook call as a domain value, its outbox message, and queueing it once.
//!
//! Which of our templates a call gets (Supabase tells no locale: `gateway.messages.default_locale`):
//!
//! | hook, type | template |
//! |---|---|
//! | send-sms, `sms_type` absent (sign-in, confirmation or phone change OTP) or any other | `verification_code` |
//! | send-sms, `sms_type: mfa` | `login_code` |
//! | send-email `signup`, `invite`, `reauthentication` | `verification_code` |
//! | send-email `magiclink`, `email` | `login_code` |
//! | send-email `recovery` | `recovery_code` |
//! | send-email `password_changed_notification` | `password_changed` |
//! | send-email `email_changed_notification` (to `email_data.old_email`), `phone_changed_notification` | `address_changed` |
//! | send-email `identity_linked_notification`, `identity_unlinked_notification` | `sign_in_method_added`, `_removed` (`provider`) |
//! | send-email `mfa_factor_enrolled_notification`, `mfa_factor_unenrolled_notification` | `mfa_factor_added`, `_removed` (`factor_type`) |
//!
//! With `gateway.supabase.email_links`, `signup` and `invite` get `verification_link`, `recovery`
//! `recovery_link` and `magiclink` `login_link`: a link to Supabase's `/verify` built as Supabase documents
//! for this hook, `<site_url>/verify?token=<token_hash>&type=<email_action_type>&redirect_to=<redirect_to>`.
//!
//! Notifications go where GoTrue's own mailer sends them (`internal/mailer/templatemailer`): `user.email`, but
//! the old address for an email change. Without `email_links`, emails carry the OTP (`email_data.token`): the
//! person types the code into the app, which calls Supabase's `verifyOtp`. `email_change` (two codes to two
//! addresses) is refused as not supported yet, naming `email_data.email_action_type`.
//!
//! A retry carries the same `metadata.uuid`; [`queue`] hands it to [`crate::handoff::queue`] (scope
//! [`Hook::scope`]), which remembers the answer for `gateway.retention.idempotency_hours`.

use super::payload::{EmailData, SendEmailInput, SendSmsInput, User};
use crate::address::Destination;
use crate::channel::Channel;
use crate::handoff::{self, Answers, Handoff, HandoffOutcome};
use crate::limits::Limits;
use crate::outbox::NewMessage;
use crate::templates::Templates;
use chrono::{NaiveDateTime, TimeDelta};
use reclaim_common::db::{AnyConnection, DbError};
use reclaim_common::idempotency::IdempotencyKey;
use reclaim_common::json::FieldError;
use reclaim_common::sealed::Keyring;
use reclaim_common::settings::GatewaySettings;
use reclaim_common::Db;
use serde_json::{json, Map, Value};

/// Which send hook was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    SendSms,
    SendEmail,
}

impl Hook {
    /// The hook's name, as in `metadata.name` and the metrics' `hook` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendSms => "send-sms",
            Self::SendEmail => "send-email",
        }
    }

    /// The idempotency scope of the hook's remembered answers.
    pub fn scope(self) -> &'static str {
        match self {
            Self::SendSms => "gateway.supabase.send-sms",
            Self::SendEmail => "gateway.supabase.send-email",
        }
    }
}

/// A send-hook call, checked.
#[derive(Debug, Clone)]
pub struct HookMessage {
    pub hook: Hook,
    /// `metadata.uuid`.
    pub invocation: IdempotencyKey,
    /// `user.id`: the identity the abuse limits count and erasure forgets.
    pub identity_id: String,
    pub channel: Channel,
    pub destination: Destination,
    /// One of `config/templates`.
    pub template: &'static str,
    /// `sms_type` or `email_action_type`, for logs and metrics.
    pub kind: String,
    /// The template's variables: `code`, or a notification's `provider` or `factor_type`.
    data: Map<String, Value>,
}

/// What a send-email type puts in the message besides its template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carries {
    Code,
    Nothing,
    Provider,
    FactorType,
}

impl HookMessage {
    /// Maps a send-sms call.
    pub fn from_sms(input: SendSmsInput) -> Result<Self, FieldError> {
        let (field, number) = match input.sms.phone.as_deref().map(str::trim) {
            Some(number) if !number.is_empty() => ("sms.phone", number),
            _ => ("user.phone", input.user.phone.trim()),
        };
        // GoTrue stores and sends numbers without the `+` of E.164.
        let number = if number.is_empty() || number.starts_with('+') {
            number.to_string()
        } else {
            format!("+{number}")
        };
        let destination = Destination::parse(Channel::Sms, &number)
            .map_err(|message| FieldError::new(field, message))?;
        let kind = input.sms.sms_type.unwrap_or_default();
        let template = match kind.as_str() {
            "mfa" => "login_code",
            _ => "verification_code",
        };
        Ok(Self {
            hook: Hook::SendSms,
            invocation: invocation(&input.metadata.uuid)?,
            identity_id: identity(&input.user)?,
            channel: Channel::Sms,
            destination,
            template,
            kind: if kind.is_empty() { "otp".into() } else { kind },
            data: code_data(required("sms.otp", &input.sms.otp)?),
        })
    }

    /// Maps a send-email call; `links`: `gateway.supabase.email_links`.
    pub fn from_email(input: SendEmailInput, links: bool) -> Result<Self, FieldError> {
        let email_data = &input.email_data;
        let kind = email_data.email_action_type.trim().to_string();
        let (template, carries) = match kind.as_str() {
            "signup" | "invite" | "reauthentication" => ("verification_code", Carries::Code),
            "magiclink" | "email" => ("login_code", Carries::Code),
            "recovery" => ("recovery_code", Carries::Code),
            "password_changed_notification" => ("password_changed", Carries::Nothing),
            "email_changed_notification" | "phone_changed_notification" => {
                ("address_changed", Carries::Nothing)
            }
            "identity_linked_notification" => ("sign_in_method_added", Carries::Provider),
            "identity_unlinked_notification" => ("sign_in_method_removed", Carries::Provider),
            "mfa_factor_enrolled_notification" => ("mfa_factor_added", Carries::FactorType),
            "mfa_factor_unenrolled_notification" => ("mfa_factor_removed", Carries::FactorType),
            "" => {
                return Err(FieldError::new(
                    "email_data.email_action_type",
                    "is required",
                ))
            }
            other => {
                return Err(FieldError::new(
                    "email_data.email_action_type",
                    format!("`{other}` is not supported yet"),
                ))
            }
        };
        // The old address is told of an email change, as GoTrue's own mailer does.
        let (field, to) = match kind.as_str() {
            "email_changed_notification" => ("email_data.old_email", email_data.old_email.as_str()),
            _ => ("user.email", input.user.email.as_str()),
        };
        let destination = Destination::parse(Channel::Email, to)
            .map_err(|message| FieldError::new(field, message))?;
        let optional = |name: &str, value: &str| {
            let mut data = Map::new();
            if !value.trim().is_empty() {
                data.insert(name.into(), json!(value.trim()));
            }
            data
        };
        // The link variant of a code, when links are asked for and GoTrue's own mailer sends one.
        let link_template = match kind.as_str() {
            "signup" | "invite" => Some("verification_link"),
            "recovery" => Some("recovery_link"),
            "magiclink" => Some("login_link"),
            _ => None,
        };
        let (template, data) = match (carries, link_template) {
            (Carries::Code, Some(link_template)) if links => {
                let mut data = Map::new();
                data.insert("link".into(), json!(verify_link(email_data, &kind)?));
                (link_template, data)
            }
            (Carries::Code, _) => (
                template,
                code_data(required("email_data.token", &email_data.token)?),
            ),
            (Carries::Nothing, _) => (template, Map::new()),
            (Carries::Provider, _) => (template, optional("provider", &email_data.provider)),
            (Carries::FactorType, _) => {
                (template, optional("factor_type", &email_data.factor_type))
            }
        };
        Ok(Self {
            hook: Hook::SendEmail,
            invocation: invocation(&input.metadata.uuid)?,
            identity_id: identity(&input.user)?,
            channel: Channel::Email,
            destination,
            template,
            kind,
            data,
        })
    }

    /// The outbox message, rendered once here so a message that cannot be rendered is refused now rather
    /// than failing in the worker.
    pub fn plan(
        &self,
        settings: &GatewaySettings,
        templates: &Templates,
        id: String,
        now: NaiveDateTime,
    ) -> Result<NewMessage, FieldError> {
        let locale = settings.messages.default_locale.as_str();
        let data = Value::Object(self.data.clone());
        templates
            .render(self.template, locale, self.channel, &data)
            .map_err(|error| FieldError::new(self.hook.as_str(), error.message))?;
        Ok(handoff::new_message(
            settings,
            templates,
            self.template,
            locale,
            self.channel,
            &self.destination,
            &data,
            None,
            id,
            now,
        ))
    }
}

/// Supabase's `/verify` link for `email_data`, as its documentation builds it for this hook.
fn verify_link(email_data: &EmailData, kind: &str) -> Result<String, FieldError> {
    let token_hash = required("email_data.token_hash", &email_data.token_hash)?;
    let mut url = url::Url::parse(email_data.site_url.trim())
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
        .ok_or_else(|| FieldError::new("email_data.site_url", "must be an http(s) URL"))?;
    let path = format!("{}/verify", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_fragment(None);
    url.query_pairs_mut()
        .clear()
        .append_pair("token", &token_hash)
        .append_pair("type", kind)
        .append_pair("redirect_to", email_data.redirect_to.trim());
    Ok(url.to_string())
}

fn code_data(code: String) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("code".into(), json!(code));
    data
}

fn invocation(uuid: &str) -> Result<IdempotencyKey, FieldError> {
    uuid::Uuid::parse_str(uuid.trim())
        .map_err(|_| FieldError::new("metadata.uuid", "must be a UUID"))?;
    IdempotencyKey::parse(uuid).map_err(|message| FieldError::new("metadata.uuid", message))
}

fn identity(user: &User) -> Result<String, FieldError> {
    required("user.id", &user.id)
}

fn required(field: &str, value: &str) -> Result<String, FieldError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    Ok(value.to_string())
}

/// The answer Supabase reads as "fail the user's call with 429": a 2xx carrying Supabase's error document.
pub fn throttled_answer(message: &str) -> String {
    json!({"error": {"http_code": 429, "message": message}}).to_string()
}

/// Supabase's answers: `200 {}`, and a throttled send as [`throttled_answer`].
pub const SUPABASE_ANSWERS: Answers = Answers {
    status: 200,
    queued: |_| "{}".to_string(),
    throttled: |refusal| throttled_answer(&refusal.message()),
};

impl HookMessage {
    /// What [`handoff::queue`] needs to queue this call once: its `metadata.uuid` (the same across
    /// Supabase's retries) in the hook's scope. Identity `user.id` is counted by the limits; no client IP:
    /// `metadata.ip_address` is what GoTrue read from the user's request, X-Forwarded-For included, which the
    /// user can write unless a proxy overwrites it.
    pub fn handoff(&self) -> Handoff {
        Handoff {
            scope: self.hook.scope(),
            material: self.invocation.as_str().to_string(),
            channel: self.channel,
            destination: self.destination.clone(),
            identity_id: Some(self.identity_id.clone()),
            answers: &SUPABASE_ANSWERS,
        }
    }
}

/// Queues `message` (planned as `planned`) once per `metadata.uuid` seen within `window`, inside the
/// caller's write transaction.
pub fn queue(
    conn: &mut AnyConnection,
    message: &HookMessage,
    planned: &NewMessage,
    keyring: &Keyring,
    limits: &Limits,
    window: TimeDelta,
) -> Result<HandoffOutcome, DbError> {
    handoff::queue(conn, &message.handoff(), planned, keyring, limits, window)
}

/// [`queue`] in a write transaction of its own, off the async threads.
pub async fn queue_in_transaction(
    db: &Db,
    message: HookMessage,
    planned: NewMessage,
    keyring: Keyring,
    limits: Limits,
    window: TimeDelta,
) -> Result<HandoffOutcome, DbError> {
    handoff::queue_in_transaction(db, message.handoff(), planned, keyring, limits, window).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../shared/contracts/supabase/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        // The contracts' number is in the fictional 555-01XX range, which libphonenumber holds invalid.
        std::fs::read_to_string(&path)
            .expect("contract")
            .replace("15555550123", "14155550100")
            .into_bytes()
    }

    #[test]
    fn the_sms_contracts_map_to_a_number_with_plus_and_their_template() {
        let sms: SendSmsInput =
            reclaim_common::json::parse(&contract("send-sms-hook.request.json")).expect("parses");
        let message = HookMessage::from_sms(sms).expect("maps");
        assert_eq!(message.destination.as_str(), "+14155550100");
        assert_eq!(message.template, "verification_code");
        assert_eq!(message.data["code"], "561166");
        assert_eq!(
            message.invocation.as_str(),
            "a941e714-9c9f-41a2-ab22-2a7a6e16ff75"
        );
        let mfa: SendSmsInput =
            reclaim_common::json::parse(&contract("send-sms-hook.mfa.request.json"))
                .expect("parses");
        assert_eq!(
            HookMessage::from_sms(mfa).expect("maps").template,
            "login_code"
        );
    }

    #[test]
    fn the_email_contracts_map_to_their_templates() {
        let recovery: SendEmailInput =
            reclaim_common::json::parse(&contract("send-email-hook.recovery.request.json"))
                .expect("parses");
        let message = HookMessage::from_email(recovery, false).expect("maps");
        assert_eq!(message.template, "recovery_code");
        assert_eq!(message.data["code"], "305805");
        let changed: SendEmailInput = reclaim_common::json::parse(&contract(
            "send-email-hook.password_changed_notification.request.json",
        ))
        .expect("parses");
        let message = HookMessage::from_email(changed, false).expect("maps");
        assert_eq!(message.template, "password_changed");
        assert!(message.data.is_empty());
    }

    #[test]
    fn with_links_a_recovery_gets_supabase_verify_link() {
        let recovery: SendEmailInput =
            reclaim_common::json::parse(&contract("send-email-hook.recovery.request.json"))
                .expect("parses");
        let message = HookMessage::from_email(recovery.clone(), true).expect("maps");
        assert_eq!(message.template, "recovery_link");
        assert_eq!(
            message.data["link"],
            "https://abcdefghijklmnopqrst.supabase.co/auth/v1/verify?\
             token=b043a287982303bde2d463f552806e72aca8f0c5cf443875c14b8e3d&type=recovery&\
             redirect_to=https%3A%2F%2Fapp.example.com%2Faccount%2Fupdate-password"
        );
        let mut bad = recovery.clone();
        bad.email_data.site_url = "not a url".into();
        let error = HookMessage::from_email(bad, true).expect_err("no site");
        assert_eq!(error.field, "email_data.site_url");
        let mut bad = recovery;
        bad.email_data.token_hash = "".into();
        let error = HookMessage::from_email(bad, true).expect_err("no hash");
        assert_eq!(error.field, "email_data.token_hash");
    }

    #[test]
    fn notifications_go_where_gotrue_sends_them_with_their_detail() {
        let mut input: SendEmailInput = reclaim_common::json::parse(&contract(
            "send-email-hook.password_changed_notification.request.json",
        ))
        .expect("parses");
        input.email_data.email_action_type = "email_changed_notification".into();
        input.email_data.old_email = "old@example.com".into();
        let message = HookMessage::from_email(input.clone(), false).expect("maps");
        assert_eq!(message.destination.as_str(), "old@example.com");
        assert_eq!(message.template, "address_changed");
        input.email_data.email_action_type = "mfa_factor_enrolled_notification".into();
        input.email_data.factor_type = "totp".into();
        let message = HookMessage::from_email(input.clone(), false).expect("maps");
        assert_eq!(message.destination.as_str(), "jane.doe@example.com");
        assert_eq!(message.template, "mfa_factor_added");
        assert_eq!(message.data["factor_type"], "totp");
        input.email_data.email_action_type = "identity_unlinked_notification".into();
        input.email_data.provider = "".into();
        let message = HookMessage::from_email(input.clone(), false).expect("maps");
        assert_eq!(message.template, "sign_in_method_removed");
        assert!(message.data.is_empty());
        input.email_data.email_action_type = "email_changed_notification".into();
        input.email_data.old_email = "".into();
        let error = HookMessage::from_email(input, false).expect_err("no old address");
        assert_eq!(error.field, "email_data.old_email");
    }

    #[test]
    fn an_unsupported_action_and_a_missing_code_name_their_field() {
        let mut input: SendEmailInput =
            reclaim_common::json::parse(&contract("send-email-hook.recovery.request.json"))
                .expect("parses");
        input.email_data.email_action_type = "email_change".into();
        let error = HookMessage::from_email(input.clone(), false).expect_err("not yet");
        assert_eq!(error.field, "email_data.email_action_type");
        input.email_data.email_action_type = "signup".into();
        input.email_data.token = " ".into();
        let error = HookMessage::from_email(input, false).expect_err("no code");
        assert_eq!(error.field, "email_data.token");
    }

    #[test]
    fn a_docs_example_without_metadata_is_refused_naming_it() {
        let error = reclaim_common::json::parse::<SendSmsInput>(&contract(
            "send-sms-hook.docs-example.json",
        ))
        .expect_err("no metadata");
        assert_eq!(error.field, "metadata");
    }
}
