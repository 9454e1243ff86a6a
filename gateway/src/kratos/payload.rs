//! The body of a Kratos courier call: `courier/http_channel.go` `httpDataModel`, as the body template
//! `function(ctx) ctx` prints it, or as our `config/kratos/courier.jsonnet` trims it.

use serde::Deserialize;
use serde_json::{Map, Value};

/// One message of Kratos's courier. Fields Kratos may add later are ignored.
#[derive(Debug, Deserialize)]
pub struct CourierBody {
    /// An email address or an E.164 number, as `message_type` says.
    pub recipient: String,
    /// Kratos's rendered subject; `""` for SMS.
    #[serde(default)]
    pub subject: String,
    /// Kratos's rendered plain text (email) or SMS text.
    #[serde(default)]
    pub body: String,
    /// Kratos's rendered HTML (email only).
    #[serde(default)]
    pub html_body: Option<String>,
    /// `recovery_code_valid`, `login_code_valid`, ... (see [`super::courier::TemplateType`]).
    pub template_type: String,
    /// The template's model: the code or link, `expires_in_minutes`, `transient_payload`, `identity`, ...
    #[serde(default)]
    pub template_data: Map<String, Value>,
    /// `email` or `sms`.
    pub message_type: String,
    /// The allow-listed headers of the user's request (`{}` for templates that carry none).
    #[serde(default)]
    pub request_headers: Option<Value>,
}

impl CourierBody {
    /// The first language of the user's `Accept-Language` header, if the request carried one.
    pub fn accept_language(&self) -> Option<&str> {
        let headers = self.request_headers.as_ref()?.as_object()?;
        let value = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("accept-language"))?
            .1;
        // Go's http.Header: a list of values; a trimmed body template may send a plain string.
        let first = match value {
            Value::Array(values) => values.first()?.as_str()?,
            Value::String(value) => value.as_str(),
            _ => return None,
        };
        first
            .split(',')
            .next()
            .and_then(|tag| tag.split(';').next())
            .map(str::trim)
            .filter(|tag| !tag.is_empty() && *tag != "*")
    }

    /// `template_data.transient_payload.<name>`, the data the user's client sent with the flow.
    pub fn transient(&self, name: &str) -> Option<&Value> {
        self.template_data
            .get("transient_payload")?
            .as_object()?
            .get(name)
    }

    /// `template_data.identity.id`, when Kratos sends the identity.
    pub fn identity_id(&self) -> Option<&str> {
        self.template_data.get("identity")?.get("id")?.as_str()
    }
}
