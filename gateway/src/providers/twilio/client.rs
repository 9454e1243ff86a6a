//! The provider: one form-encoded POST per attempt, Basic auth, a whole-request timeout, typed answers.

use super::errors::{classify_failure, parse_retry_after};
use super::twiml::{spoken_message, VoiceStyle, MAX_TWIML_CHARS};
use crate::providers::{Accepted, Channel, Content, Outgoing, Provider, SendError};
use anyhow::Context;
use reclaim_common::secret::mask_address;
use reclaim_common::settings::TwilioSettings;
use reclaim_common::Secret;
use std::time::{Duration, SystemTime};
use tracing::Instrument;

/// Twilio's REST API as a [`Provider`] for the `sms` and `voice` channels.
pub struct TwilioProvider {
    http: reqwest::Client,
    messages_url: url::Url,
    calls_url: url::Url,
    username: String,
    password: Secret,
    from: String,
    messaging_service_sid: String,
    voice_from: Option<String>,
    max_validity_period_seconds: u32,
    voice: VoiceStyle,
}

/// The part of Twilio's Message and Call resources we use.
#[derive(Debug, serde::Deserialize)]
struct CreatedResource {
    sid: String,
    #[serde(default)]
    status: Option<String>,
}

type Form = Vec<(&'static str, String)>;

impl TwilioProvider {
    /// Builds the client. Fails when no account or credential is configured; whether a sender is configured
    /// for each channel is checked by [`TwilioSettings::require_complete`] and
    /// [`TwilioSettings::require_voice`] at start-up and again when a message is sent.
    pub fn new(settings: &TwilioSettings) -> anyhow::Result<Self> {
        if settings.account_sid.is_empty() {
            anyhow::bail!("gateway.twilio.account_sid is not set");
        }
        let (username, password) = if settings.api_key_sid.is_empty() {
            (settings.account_sid.clone(), settings.auth_token.clone())
        } else {
            (
                settings.api_key_sid.clone(),
                settings.api_key_secret.clone(),
            )
        };
        if password.is_empty() {
            anyhow::bail!(
                "gateway.twilio.auth_token (or api_key_sid and api_key_secret) is not set"
            );
        }
        let base = url::Url::parse(&settings.base_url)
            .with_context(|| format!("gateway.twilio.base_url `{}`", settings.base_url))?;
        let resource_url = |resource: &str| -> anyhow::Result<url::Url> {
            let mut url = base.clone();
            url.path_segments_mut()
                .map_err(|()| anyhow::anyhow!("gateway.twilio.base_url cannot have a path"))?
                .pop_if_empty()
                .extend(["2010-04-01", "Accounts", &settings.account_sid, resource]);
            Ok(url)
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .connect_timeout(Duration::from_millis(settings.timeout_ms))
            .user_agent(concat!("reclaim-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the Twilio HTTP client")?;
        Ok(Self {
            http,
            messages_url: resource_url("Messages.json")?,
            calls_url: resource_url("Calls.json")?,
            username,
            password,
            from: settings.from.clone(),
            messaging_service_sid: settings.messaging_service_sid.clone(),
            voice_from: settings.voice_caller().map(str::to_string),
            max_validity_period_seconds: settings.max_validity_period_seconds,
            voice: VoiceStyle {
                voice: settings.voice_name.clone(),
                digit_pause_seconds: settings.voice_digit_pause_seconds,
            },
        })
    }

    /// `Messages.json`: sender, body, and a `ValidityPeriod` that ends no later than the code.
    fn sms_form(&self, message: &Outgoing, body: &str) -> Result<Form, SendError> {
        let mut form: Form = vec![("To", message.to.clone())];
        if !self.messaging_service_sid.is_empty() {
            form.push(("MessagingServiceSid", self.messaging_service_sid.clone()));
        } else if !self.from.is_empty() {
            form.push(("From", self.from.clone()));
        } else {
            return Err(not_configured("gateway.twilio.from"));
        }
        form.push(("Body", body.to_string()));
        let validity = validity_period_seconds(
            self.max_validity_period_seconds,
            message.expires_at,
            chrono::Utc::now(),
        )?;
        form.push(("ValidityPeriod", validity.to_string()));
        if let Some(callback) = &message.status_callback {
            form.push(("StatusCallback", callback.clone()));
        }
        Ok(form)
    }

    /// `Calls.json`: caller id and the inline TwiML of the spoken message.
    fn voice_form(
        &self,
        message: &Outgoing,
        intro: &str,
        digits: Option<&str>,
        outro: Option<&str>,
    ) -> Result<Form, SendError> {
        let Some(caller) = &self.voice_from else {
            return Err(not_configured("gateway.twilio.voice_from"));
        };
        if let Some(expires_at) = message.expires_at {
            if expires_at <= chrono::Utc::now() {
                return Err(expired());
            }
        }
        let twiml =
            spoken_message(intro, digits, outro, &message.locale, &self.voice).map_err(|e| {
                SendError::Permanent {
                    code: Some("twiml".into()),
                    message: format!("could not write the TwiML of the call: {e}"),
                }
            })?;
        if twiml.chars().count() > MAX_TWIML_CHARS {
            return Err(SendError::Permanent {
                code: Some("twiml_too_long".into()),
                message: format!(
                    "the spoken message is longer than Twilio's {MAX_TWIML_CHARS} characters of TwiML"
                ),
            });
        }
        let mut form: Form = vec![
            ("To", message.to.clone()),
            ("From", caller.clone()),
            ("Twiml", twiml),
        ];
        if let Some(callback) = &message.status_callback {
            form.push(("StatusCallback", callback.clone()));
        }
        Ok(form)
    }

    async fn post(&self, url: &url::Url, form: &Form) -> Result<Accepted, SendError> {
        let response = self
            .http
            .post(url.clone())
            .basic_auth(&self.username, Some(self.password.expose()))
            .form(form)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = response.bytes().await.map_err(transport_error)?;
        if !status.is_success() {
            return Err(classify_failure(status.as_u16(), retry_after, &body));
        }
        // A 2xx whose body is not a Twilio resource is not taken as delivery: it is what a proxy or a wrong
        // base_url answers, and counting it as sent would lose the message.
        match serde_json::from_slice::<CreatedResource>(&body) {
            Ok(created) if !created.sid.is_empty() => {
                tracing::debug!(
                    twilio.sid = %created.sid,
                    twilio.status = created.status.as_deref().unwrap_or(""),
                    "Twilio created the resource"
                );
                Ok(Accepted {
                    provider_message_id: Some(created.sid),
                })
            }
            _ => Err(SendError::Transient {
                code: Some("invalid_response".into()),
                message: format!("Twilio answered {status} without a resource sid"),
                retry_after: None,
            }),
        }
    }
}

#[async_trait::async_trait]
impl Provider for TwilioProvider {
    fn name(&self) -> &'static str {
        "twilio"
    }

    async fn send(&self, message: &Outgoing) -> Result<Accepted, SendError> {
        let (channel, url, form) =
            match (&message.channel, &message.content) {
                (Channel::Sms, Content::Sms { body }) => {
                    ("sms", &self.messages_url, self.sms_form(message, body))
                }
                (
                    Channel::Voice,
                    Content::Voice {
                        intro,
                        digits,
                        outro,
                    },
                ) => (
                    "voice",
                    &self.calls_url,
                    self.voice_form(message, intro, digits.as_deref(), outro.as_deref()),
                ),
                _ => return Err(SendError::Permanent {
                    code: Some("unsupported_channel".into()),
                    message:
                        "Twilio delivers sms with an SMS body and voice with a spoken message only"
                            .into(),
                }),
            };
        let span = tracing::info_span!(
            "twilio.send",
            message.id = %message.message_id,
            message.channel = channel,
            attempt = message.attempt,
            twilio.to = %mask_address(&message.to),
        );
        async {
            let outcome = match form {
                Ok(form) => self.post(url, &form).await,
                Err(error) => Err(error),
            };
            match &outcome {
                Ok(accepted) => tracing::info!(
                    twilio.sid = accepted.provider_message_id.as_deref().unwrap_or(""),
                    "accepted by Twilio"
                ),
                Err(SendError::Transient { code, message, .. }) => tracing::warn!(
                    error.code = code.as_deref().unwrap_or(""),
                    error.message = %message,
                    "Twilio failed transiently"
                ),
                Err(SendError::Permanent { code, message }) => tracing::warn!(
                    error.code = code.as_deref().unwrap_or(""),
                    error.message = %message,
                    "Twilio failed permanently"
                ),
            }
            outcome
        }
        .instrument(span)
        .await
    }
}

/// The SMS `ValidityPeriod`: the configured maximum, lowered to the code's remaining lifetime in whole
/// seconds. A code with less than a second left is not sent at all.
pub fn validity_period_seconds(
    max_seconds: u32,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u32, SendError> {
    let max_seconds = max_seconds.clamp(1, 36_000);
    let Some(expires_at) = expires_at else {
        return Ok(max_seconds);
    };
    let remaining = (expires_at - now).num_seconds();
    if remaining < 1 {
        return Err(expired());
    }
    Ok(u32::try_from(remaining).map_or(max_seconds, |r| r.min(max_seconds)))
}

fn expired() -> SendError {
    SendError::Permanent {
        code: Some(crate::delivery::EXPIRED_CODE.into()),
        message: "the message expired before it could be handed to Twilio".into(),
    }
}

fn not_configured(key: &str) -> SendError {
    SendError::Permanent {
        code: Some("not_configured".into()),
        message: format!("{key} is not set"),
    }
}

fn transport_error(error: reqwest::Error) -> SendError {
    let code = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection"
    } else {
        "transport"
    };
    SendError::Transient {
        code: Some(code.into()),
        message: format!("talking to Twilio failed: {}", error.without_url()),
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn the_validity_period_never_outlives_the_code() {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 22, 10, 0, 0)
            .single()
            .expect("date");
        let in_secs = |s: i64| Some(now + chrono::Duration::seconds(s));
        let period = |max, expires| validity_period_seconds(max, expires, now).ok();
        assert_eq!(period(36_000, None), Some(36_000));
        assert_eq!(period(36_000, in_secs(1_200)), Some(1_200));
        assert_eq!(period(600, in_secs(1_200)), Some(600));
        assert_eq!(period(36_000, in_secs(100_000)), Some(36_000));
        assert_eq!(period(36_000, in_secs(1)), Some(1));
        assert!(matches!(
            validity_period_seconds(36_000, in_secs(0), now),
            Err(SendError::Permanent { code: Some(c), .. }) if c == "expired"
        ));
    }

    #[test]
    fn a_client_needs_an_account_and_a_credential() {
        let mut settings = TwilioSettings::default();
        assert!(TwilioProvider::new(&settings).is_err());
        settings.account_sid = "AC0123456789abcdef0123456789abcdef".into();
        assert!(TwilioProvider::new(&settings).is_err());
        settings.auth_token = Secret::new("token");
        let provider = TwilioProvider::new(&settings).expect("provider");
        assert_eq!(
            provider.messages_url.as_str(),
            "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json"
        );
        settings.base_url = "https://api.dublin.ie1.twilio.com/".into();
        let provider = TwilioProvider::new(&settings).expect("provider");
        assert_eq!(
            provider.calls_url.as_str(),
            "https://api.dublin.ie1.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls.json"
        );
    }
}
