//! The body of a ZITADEL HTTP provider call (`serializableData` of the notification's JSON message):
//! `contextInfo` (why and to whom), `templateData` (ZITADEL's rendered texts), `args` (user fields and the
//! event's values, such as `code`). Fields ZITADEL may add later are ignored.

use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderBody {
    pub context_info: ContextInfo,
    #[serde(default)]
    pub template_data: TemplateData,
    /// User fields (lowerCamelCase) plus the event's values: `code` (codes), `otp` (one-time passwords).
    #[serde(default)]
    pub args: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextInfo {
    /// The event that asked for the message, e.g. `user.human.password.code.added`.
    pub event_type: String,
    /// Set by the email provider.
    #[serde(default)]
    pub recipient_email_address: Option<String>,
    /// Set by the SMS provider.
    #[serde(default)]
    pub recipient_phone_number: Option<String>,
}

/// ZITADEL's texts for the message, in the user's language (only the parts a message needs; colours and
/// fonts are ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TemplateData {
    pub subject: String,
    pub greeting: String,
    pub text: String,
    pub url: String,
    pub button_text: String,
}
