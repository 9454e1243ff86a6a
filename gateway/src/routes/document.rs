//! The gateway's OpenAPI document as this deployment answers: the routes' own annotations, with the request
//! schemas of `POST /v1/messages` and `POST /v1/verifications` narrowed to what the validation accepts here
//! (the templates loaded, each one's channels and the variables it cannot render without, the configured
//! limits, and addresses of the form the channel takes).
//!
//! What is not here: the answers every service shares (`reclaim_common::openapi`).

use super::{
    admin, kratos_courier, messages, supabase_send, support, twilio_status, verifications,
    zitadel_provider,
};
use crate::channel::Channel;
use crate::templates::Templates;
use reclaim_common::openapi::add_link;
use reclaim_common::settings::GatewaySettings;
use serde_json::{json, Map, Value};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Reclaim gateway",
        description = "Delivery of one-time codes and notices by email, SMS and voice"
    ),
    paths(
        messages::enqueue_message,
        messages::get_message,
        admin::reseal_storage,
        support::recipient_timeline,
        support::retry_message,
        support::lift_limits,
        twilio_status::receive_twilio_status,
        verifications::start_verification,
        verifications::show_verification,
        verifications::resend_verification,
        verifications::check_verification,
        verifications::cancel_verification,
        kratos_courier::receive_kratos_courier,
        zitadel_provider::receive_zitadel_sms,
        zitadel_provider::receive_zitadel_email,
        supabase_send::receive_supabase_send_sms,
        supabase_send::receive_supabase_send_email
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// `format` of a phone number the gateway can send to: E.164, valid for its country code (libphonenumber's
/// metadata), of a number type and country `gateway.sms` allows.
pub const PHONE_FORMAT: &str = "e164";

/// The document served at `/openapi.json`.
pub fn document(settings: &GatewaySettings, templates: &Templates) -> Value {
    let mut value = reclaim_common::openapi::to_value(&ApiDoc::openapi());
    if let Some(Value::Object(schemas)) = value.pointer_mut("/components/schemas") {
        narrow(schemas, settings, templates);
    }
    let id = json!({"id": "$response.body#/id"});
    add_link(
        &mut value,
        ("post", "/v1/messages", "202"),
        "GetMessage",
        "get_message",
        id.clone(),
    );
    for (name, operation) in [
        ("ShowVerification", "show_verification"),
        ("ResendVerification", "resend_verification"),
        ("CheckVerification", "check_verification"),
        ("CancelVerification", "cancel_verification"),
    ] {
        add_link(
            &mut value,
            ("post", "/v1/verifications", "201"),
            name,
            operation,
            id.clone(),
        );
    }
    value
}

fn narrow(schemas: &mut Map<String, Value>, settings: &GatewaySettings, templates: &Templates) {
    schemas.insert(
        "MessageRequest".into(),
        message_request(settings, templates),
    );
    if let Some(start) = schemas.get("StartVerificationRequest").cloned() {
        schemas.insert(
            "StartVerificationRequest".into(),
            start_verification_request(start, templates),
        );
    }
    if let Some(Value::Object(code)) = schemas
        .get_mut("CheckVerificationRequest")
        .and_then(|r| r.get_mut("properties"))
        .and_then(|p| p.get_mut("code"))
    {
        let digits = settings.verifications.code_length;
        code.insert(
            "pattern".into(),
            json!(format!("^([0-9]{{{digits}}}|[A-Za-z0-9]{{32}})$")),
        );
        code.insert(
            "description".into(),
            json!(format!(
                "The code ({digits} digits, gateway.verifications.code_length) or, for a link, its \
                 32-character token; the other shape than the verification sent is 400 invalid_code"
            )),
        );
    }
    if let Some(Value::Object(properties)) = schemas
        .get_mut("ResendVerificationRequest")
        .and_then(|r| r.get_mut("properties"))
    {
        properties.insert("client_ip".into(), client_ip());
    }
}

/// Purposes of a verification, as `Purpose` names them; each picks the templates `<purpose>_code` and
/// `<purpose>_link`.
const PURPOSES: [&str; 4] = ["recovery", "verification", "login", "device"];

/// One branch per purpose, channel and kind (code, or a link by email) whose template exists for that
/// channel in every locale, on the fields the derived schema has.
fn start_verification_request(derived: Value, templates: &Templates) -> Value {
    let mut properties = derived
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    properties.insert("locale".into(), locale());
    properties.insert("client_ip".into(), client_ip());
    properties.insert(
        "identity_id".into(),
        json!({"type": ["string", "null"], "minLength": 1, "maxLength": 255,
               "description": "The account this verification is for, if the caller knows it (1 to 255 bytes)"}),
    );
    let mut branches = Vec::new();
    for purpose in PURPOSES {
        for channel in [Channel::Email, Channel::Sms, Channel::Voice] {
            let mut kinds = vec![("code", json!({"type": "null"}))];
            if channel == Channel::Email {
                kinds.push((
                    "link",
                    json!({
                        "type": "string", "format": "uri", "pattern": "^https?://[^/?#@\\s]+",
                        "description": "Send a link (this URL plus `token=<token>`) instead of a code; an \
                            absolute http(s) URL. The token is what `/check` takes."
                    }),
                ));
            }
            for (kind, link_url) in kinds {
                if templates
                    .needs(&format!("{purpose}_{kind}"), channel)
                    .is_none()
                {
                    continue;
                }
                let mut branch = properties.clone();
                branch.insert("channel".into(), json!({"enum": [channel.as_str()]}));
                branch.insert("purpose".into(), json!({"enum": [purpose]}));
                branch.insert(
                    "to".into(),
                    if channel.uses_phone_numbers() {
                        phone()
                    } else {
                        email()
                    },
                );
                branch.insert("link_url".into(), link_url);
                let mut required = vec!["channel", "to", "purpose"];
                if kind == "link" {
                    required.push("link_url");
                }
                branches.push(json!({
                    "title": format!("{purpose} {kind} by {}", channel.as_str()),
                    "type": "object",
                    "additionalProperties": false,
                    "required": required,
                    "properties": branch,
                }));
            }
        }
    }
    json!({
        "description": "A verification to start. One branch per purpose, channel and kind (a code, or a link \
            by email) that the templates can carry.",
        "oneOf": branches
    })
}

/// One branch per template and channel: the channel's address form, the template's variables, and the
/// fallback steps that can follow that channel with the same data.
fn message_request(settings: &GatewaySettings, templates: &Templates) -> Value {
    let channels = [Channel::Email, Channel::Sms, Channel::Voice];
    let mut branches = Vec::new();
    for template in templates.names() {
        for channel in channels {
            let Some(needs) = templates.needs(template, channel) else {
                continue;
            };
            let followers: Vec<Channel> = channels
                .into_iter()
                .filter(|next| {
                    templates
                        .needs(template, *next)
                        .is_some_and(|n| n.is_subset(&needs))
                })
                .collect();
            branches.push(message_branch(
                settings, template, channel, &needs, &followers,
            ));
        }
    }
    json!({
        "description": "A templated notice to deliver. One branch per template and channel: `to` takes the \
            channel's address form, `data` the variables the template needs (more are allowed).",
        "oneOf": branches
    })
}

fn message_branch(
    settings: &GatewaySettings,
    template: &str,
    channel: Channel,
    needs: &std::collections::BTreeSet<String>,
    followers: &[Channel],
) -> Value {
    let phone_message = channel.uses_phone_numbers();
    let mut steps = Vec::new();
    for next in followers {
        if next.uses_phone_numbers() {
            // A phone step goes to the message's own number, so it only follows a phone message.
            if phone_message {
                steps.push(json!({
                    "type": "object", "additionalProperties": false, "required": ["channel"],
                    "properties": {"channel": {"enum": [next.as_str()]}}
                }));
            }
        } else {
            steps.push(json!({
                "type": "object", "additionalProperties": false, "required": ["channel", "to"],
                "properties": {"channel": {"enum": [next.as_str()]}, "to": email()}
            }));
        }
    }
    let max_steps = settings.limits.max_fallback_steps;
    let fallback = if steps.is_empty() {
        json!({"type": ["array", "null"], "maxItems": 0})
    } else {
        json!({"type": ["array", "null"], "maxItems": max_steps, "items": {"oneOf": steps}})
    };
    let mut required = vec!["channel", "to", "template"];
    if !needs.is_empty() {
        required.push("data");
    }
    let needs: Vec<&String> = needs.iter().collect();
    json!({
        "title": format!("{template} by {channel}", channel = channel.as_str()),
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": {
            "channel": {"enum": [channel.as_str()]},
            "to": if phone_message { phone() } else { email() },
            "template": {"enum": [template]},
            "locale": locale(),
            "data": {
                "type": "object", "required": needs,
                "description": "The template's variables, e.g. {\"code\": \"123456\"}"
            },
            "expires_in": {
                "type": ["integer", "null"], "minimum": 1,
                "maximum": settings.messages.max_expires_in_seconds,
                "description": "Seconds until the message is worthless; it is never sent after that \
                    (at most gateway.messages.max_expires_in_seconds)"
            },
            "fallback": fallback
        }
    })
}

fn email() -> Value {
    json!({"type": "string", "format": "email",
           "description": "A bare email address such as jane@example.com"})
}

fn phone() -> Value {
    json!({"type": "string", "format": PHONE_FORMAT, "pattern": "^\\+[1-9][0-9]{1,14}$",
           "description": "E.164 (+14155550100), valid for its country code, of a country and number type \
               gateway.sms allows"})
}

fn locale() -> Value {
    json!({"type": ["string", "null"], "minLength": 2, "maxLength": 35,
           "pattern": "^[A-Za-z0-9]{1,8}(-[A-Za-z0-9]{1,8})*$",
           "description": "BCP 47 (en, es-MX); falls back to the language, then to \
               gateway.messages.default_locale"})
}

fn client_ip() -> Value {
    json!({"anyOf": [
        {"type": "string", "format": "ipv4"},
        {"type": "string", "format": "ipv6"},
        {"type": "null"}
    ], "description": "The end user's IP address (IPv4 or IPv6), as the caller saw it"})
}
