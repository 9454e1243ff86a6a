//! Message templates: `<templates_dir>/<template>/<locale>.toml`, each holding the parts of the channels the
//! template supports (`subject`, `text`, `html` for email; `sms`; `voice` and `voice_outro`), written for
//! minijinja. All are compiled at start-up so a broken file stops the service with its name.
//!
//! One template is built in: [`PASS_THROUGH`], a message an identity provider rendered itself (Kratos's
//! courier with `gateway.kratos.use_own_templates = false`). Its data holds the finished parts.

use crate::channel::Channel;
use crate::providers::Content;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    subject: Option<String>,
    text: Option<String>,
    html: Option<String>,
    sms: Option<String>,
    voice: Option<String>,
    voice_outro: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template folder {0}: {1}")]
    Folder(String, String),
    #[error("template {0}: {1}")]
    File(String, String),
}

/// Why a message cannot be rendered with the data it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    /// `template`, `channel` or `data.<variable>`.
    pub field: String,
    pub message: String,
}

/// Every template, compiled.
pub struct Templates {
    env: Environment<'static>,
    /// template → locale → parts present.
    index: BTreeMap<String, BTreeMap<String, BTreeSet<&'static str>>>,
    default_locale: String,
}

/// The built-in template of messages rendered by the identity provider: data `subject`, `text`, `html`
/// (optional) for email, `sms` for SMS; no voice. Its name holds a `/`, which no template folder's name can,
/// and it is not in [`Templates::names`], so the messages API cannot pick it: only the courier adapters,
/// whose callers authenticated as the identity provider, send what they rendered.
pub const PASS_THROUGH: &str = "idp/rendered";

/// Whether `locale` looks like a BCP 47 tag (`en`, `es-MX`): 2 to 35 characters, alphanumeric subtags of 1
/// to 8 separated by `-`.
pub fn is_well_formed_locale(locale: &str) -> bool {
    (2..=35).contains(&locale.len())
        && locale.split('-').all(|part| {
            (1..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

const PARTS: [&str; 6] = ["subject", "text", "html", "sms", "voice", "voice_outro"];

impl Templates {
    /// Reads and compiles every template under `dir`; each template must exist in `default_locale`.
    pub fn load(dir: &Path, default_locale: &str) -> Result<Self, TemplateError> {
        let folder =
            |e: std::io::Error| TemplateError::Folder(dir.display().to_string(), e.to_string());
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name.ends_with("#html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        let mut index: BTreeMap<String, BTreeMap<String, BTreeSet<&'static str>>> = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(folder)? {
            let entry = entry.map_err(folder)?;
            if !entry.file_type().map_err(folder)?.is_dir() {
                continue;
            }
            let template = entry.file_name().to_string_lossy().into_owned();
            for file in std::fs::read_dir(entry.path()).map_err(folder)? {
                let path = file.map_err(folder)?.path();
                let shown = path.display().to_string();
                let Some(locale) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".toml"))
                else {
                    continue;
                };
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| TemplateError::File(shown.clone(), e.to_string()))?;
                let parsed: TemplateFile = toml::from_str(&text)
                    .map_err(|e| TemplateError::File(shown.clone(), e.to_string()))?;
                let values = [
                    parsed.subject,
                    parsed.text,
                    parsed.html,
                    parsed.sms,
                    parsed.voice,
                    parsed.voice_outro,
                ];
                let mut present = BTreeSet::new();
                for (part, source) in PARTS.into_iter().zip(values) {
                    let Some(source) = source else { continue };
                    env.add_template_owned(format!("{template}/{locale}#{part}"), source)
                        .map_err(|e| TemplateError::File(shown.clone(), format!("{part}: {e}")))?;
                    present.insert(part);
                }
                let email = ["subject", "text"]
                    .iter()
                    .filter(|p| present.contains(*p))
                    .count();
                if email == 1 || (present.contains("html") && email == 0) {
                    return Err(TemplateError::File(
                        shown,
                        "email needs both `subject` and `text` (`html` is optional)".into(),
                    ));
                }
                if present.is_empty() {
                    return Err(TemplateError::File(shown, "has no parts".into()));
                }
                index
                    .entry(template.clone())
                    .or_default()
                    .insert(locale.to_string(), present);
            }
        }
        for (template, locales) in &index {
            if !locales.contains_key(default_locale) {
                return Err(TemplateError::File(
                    dir.join(template)
                        .join(format!("{default_locale}.toml"))
                        .display()
                        .to_string(),
                    "is missing: every template needs the default locale".into(),
                ));
            }
        }
        Ok(Self {
            env,
            index,
            default_locale: default_locale.to_string(),
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// What `template` needs to render on `channel` in any of its locales: `None` when some locale has no
    /// version for the channel, else the variables (top-level keys of `data`) some part cannot render
    /// without. The OpenAPI document states these per template and channel.
    pub fn needs(&self, template: &str, channel: Channel) -> Option<BTreeSet<String>> {
        let locales = self.index.get(template)?;
        let parts: &[&str] = match channel {
            Channel::Email => &["subject", "text", "html"],
            Channel::Sms => &["sms"],
            Channel::Voice => &["voice", "voice_outro"],
        };
        let mut needed = BTreeSet::new();
        for (locale, present) in locales {
            if !present.contains(main_part(channel)) {
                return None;
            }
            for part in parts.iter().filter(|p| present.contains(*p)) {
                let compiled = self
                    .env
                    .get_template(&format!("{template}/{locale}#{part}"))
                    .ok()?;
                let mut data = serde_json::Map::new();
                while let Some(variable) = required_missing(&compiled, &Value::Object(data.clone()))
                {
                    data.insert(variable.clone(), Value::String(String::new()));
                    needed.insert(variable);
                }
            }
        }
        Some(needed)
    }

    /// The locale whose file will be used: the exact one, else its language (`es` for `es-MX`), else the
    /// default locale.
    pub fn resolve_locale(&self, template: &str, locale: &str) -> Option<String> {
        let locales = self.index.get(template)?;
        let language = locale.split(['-', '_']).next().unwrap_or(locale);
        [locale, language, self.default_locale.as_str()]
            .into_iter()
            .find(|l| locales.contains_key(*l))
            .map(str::to_string)
    }

    pub fn supports(&self, template: &str, locale: &str, channel: Channel) -> bool {
        if template == PASS_THROUGH {
            return channel != Channel::Voice;
        }
        self.resolve_locale(template, locale)
            .and_then(|l| self.index.get(template).and_then(|m| m.get(&l)).cloned())
            .is_some_and(|parts| parts.contains(main_part(channel)))
    }

    /// Renders the message for `channel`; missing variables are named as `data.<name>`.
    pub fn render(
        &self,
        template: &str,
        locale: &str,
        channel: Channel,
        data: &Value,
    ) -> Result<Content, RenderError> {
        if template == PASS_THROUGH {
            return pass_through(channel, data);
        }
        let Some(locales) = self.index.get(template) else {
            return Err(RenderError {
                field: "template".into(),
                message: format!("no template named `{template}`"),
            });
        };
        let locale = self
            .resolve_locale(template, locale)
            .unwrap_or_else(|| self.default_locale.clone());
        let parts = locales.get(&locale).cloned().unwrap_or_default();
        if !parts.contains(main_part(channel)) {
            return Err(RenderError {
                field: "channel".into(),
                message: format!("template `{template}` has no {channel} version"),
            });
        }
        let part = |name: &str| -> Result<Option<String>, RenderError> {
            if !parts.contains(name) {
                return Ok(None);
            }
            let compiled = self
                .env
                .get_template(&format!("{template}/{locale}#{name}"))
                .map_err(|e| RenderError {
                    field: "template".into(),
                    message: e.to_string(),
                })?;
            if let Err(error) = compiled.render(data) {
                if error.kind() == minijinja::ErrorKind::UndefinedError {
                    if let Some(variable) = required_missing(&compiled, data) {
                        return Err(RenderError {
                            field: format!("data.{variable}"),
                            message: format!("is required by template `{template}`"),
                        });
                    }
                }
            }
            compiled.render(data).map(Some).map_err(|e| RenderError {
                field: "data".into(),
                message: format!("cannot render template `{template}`: {e}"),
            })
        };
        Ok(match channel {
            Channel::Email => Content::Email {
                subject: part("subject")?.unwrap_or_default().trim().to_string(),
                text: part("text")?.unwrap_or_default(),
                html: part("html")?,
            },
            Channel::Sms => Content::Sms {
                body: part("sms")?.unwrap_or_default().trim().to_string(),
            },
            Channel::Voice => Content::Voice {
                intro: part("voice")?.unwrap_or_default().trim().to_string(),
                digits: spoken_digits(data),
                outro: part("voice_outro")?.map(|s| s.trim().to_string()),
            },
        })
    }
}

/// A message as the identity provider rendered it. The HTML is sent as it came: it is the provider's own
/// rendering (Kratos escapes the values it puts in), from a caller that authenticated as the provider, and
/// escaping it again would show the markup to the reader.
fn pass_through(channel: Channel, data: &Value) -> Result<Content, RenderError> {
    let text = |name: &str| -> Result<String, RenderError> {
        match data.get(name) {
            Some(Value::String(value)) if !value.trim().is_empty() => Ok(value.clone()),
            _ => Err(RenderError {
                field: format!("data.{name}"),
                message: "is required for a message rendered by the identity provider".into(),
            }),
        }
    };
    match channel {
        Channel::Email => Ok(Content::Email {
            subject: text("subject")?.trim().to_string(),
            text: text("text")?,
            html: text("html").ok(),
        }),
        Channel::Sms => Ok(Content::Sms {
            body: text("sms")?.trim().to_string(),
        }),
        Channel::Voice => Err(RenderError {
            field: "channel".into(),
            message: "a message rendered by the identity provider cannot be read out; calls need our own \
                      template"
                .into(),
        }),
    }
}

/// The first variable (by name) that the template needs and `data` lacks. Templates may test optional
/// variables with `is defined`, so a variable counts as required only if rendering still fails when every
/// other missing one is supplied.
fn required_missing(compiled: &minijinja::Template<'_, '_>, data: &Value) -> Option<String> {
    let mut missing: Vec<String> = compiled
        .undeclared_variables(false)
        .into_iter()
        .filter(|v| data.get(v).is_none())
        .collect();
    missing.sort();
    missing.iter().find_map(|candidate| {
        let mut filled = data.as_object().cloned().unwrap_or_default();
        for other in missing.iter().filter(|o| *o != candidate) {
            filled.insert(other.clone(), Value::String(String::new()));
        }
        compiled
            .render(Value::Object(filled))
            .is_err()
            .then(|| candidate.clone())
    })
}

fn main_part(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "text",
        Channel::Sms => "sms",
        Channel::Voice => "voice",
    }
}

/// A voice call reads `data.code` digit by digit when it is made of digits.
fn spoken_digits(data: &Value) -> Option<String> {
    let code = match data.get("code")? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!code.is_empty() && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shipped() -> Templates {
        Templates::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/templates"),
            "en",
        )
        .expect("shipped templates load")
    }

    #[test]
    fn needs_names_the_variables_a_channel_cannot_render_without() {
        let templates = shipped();
        let code: BTreeSet<String> = ["code".to_string()].into();
        assert_eq!(
            templates.needs("recovery_code", Channel::Sms),
            Some(code.clone())
        );
        // `ttl_minutes` is tested with `is defined`: optional.
        assert_eq!(templates.needs("recovery_code", Channel::Email), Some(code));
        // The call reads the code out itself; the voice text names no variable.
        assert_eq!(
            templates.needs("recovery_code", Channel::Voice),
            Some(BTreeSet::new())
        );
        assert_eq!(templates.needs("recovery_link", Channel::Voice), None);
        assert_eq!(templates.needs("no_such_template", Channel::Email), None);
    }

    #[test]
    fn the_shipped_templates_exist_in_english_and_spanish() {
        let templates = shipped();
        for name in [
            "recovery_code",
            "recovery_link",
            "verification_code",
            "password_changed",
            "password_expiring",
            "password_change_required",
            "registration_code",
            "recovery_no_account",
            "verification_no_account",
            "address_changed",
            "authenticator_added",
            "login_link",
            "mfa_factor_added",
            "mfa_factor_removed",
            "sign_in_method_added",
            "sign_in_method_removed",
        ] {
            assert_eq!(
                templates.resolve_locale(name, "es").as_deref(),
                Some("es"),
                "{name}"
            );
            assert_eq!(
                templates.resolve_locale(name, "es-MX").as_deref(),
                Some("es"),
                "{name}"
            );
            assert_eq!(
                templates.resolve_locale(name, "de").as_deref(),
                Some("en"),
                "{name}"
            );
            assert!(templates.supports(name, "en", Channel::Email), "{name}");
        }
    }

    #[test]
    fn a_missing_variable_is_named() {
        let error = shipped()
            .render("recovery_code", "en", Channel::Sms, &json!({}))
            .err();
        assert_eq!(error.map(|e| e.field), Some("data.code".to_string()));
    }

    #[test]
    fn voice_reads_the_code_and_html_is_escaped() {
        let templates = shipped();
        let voice = templates
            .render(
                "recovery_code",
                "es",
                Channel::Voice,
                &json!({"code": "123456"}),
            )
            .expect("voice");
        assert!(matches!(voice, Content::Voice { digits: Some(ref d), .. } if d == "123456"));
        let email = templates
            .render(
                "recovery_link",
                "en",
                Channel::Email,
                &json!({"link": "https://x.test/?a=1&b=<2>"}),
            )
            .expect("email");
        let Content::Email {
            html: Some(html),
            text,
            ..
        } = email
        else {
            panic!("email with html expected")
        };
        assert!(html.contains("&lt;2&gt;"), "{html}");
        assert!(text.contains("https://x.test/?a=1&b=<2>"), "{text}");
    }

    #[test]
    fn the_plugins_notices_say_how_many_days_are_left_and_why_a_change_is_required() {
        let templates = shipped();
        let subject = |template: &str, locale: &str, data: Value| match templates
            .render(template, locale, Channel::Email, &data)
            .expect("email")
        {
            Content::Email { subject, text, .. } => format!("{subject} | {text}"),
            other => panic!("email expected, got {other:?}"),
        };
        let one = json!({"days": 1, "expires_on": "2027-03-01"});
        let many = json!({"days": 10, "expires_on": "2027-03-01"});
        assert!(subject("password_expiring", "en", one.clone())
            .starts_with("Your password expires in 1 day |"));
        assert!(subject("password_expiring", "en", many.clone())
            .starts_with("Your password expires in 10 days |"));
        assert!(
            subject("password_expiring", "es", one).starts_with("Tu contraseña caduca en 1 día |")
        );
        assert!(
            subject("password_expiring", "es", many).contains("el 2027-03-01, dentro de 10 días")
        );
        let compromised = subject(
            "password_change_required",
            "en",
            json!({"reason": "compromised"}),
        );
        assert!(
            compromised.contains("may be known to others"),
            "{compromised}"
        );
        let admin = subject("password_change_required", "es", json!({"reason": "admin"}));
        assert!(admin.contains("Un administrador exige"), "{admin}");
        let sms = templates
            .render(
                "password_change_required",
                "en",
                Channel::Sms,
                &json!({"reason": "compromised"}),
            )
            .expect("sms");
        assert!(
            matches!(sms, Content::Sms { ref body } if body.starts_with("Your password may be known")),
            "{sms:?}"
        );
        assert_eq!(
            templates
                .render(
                    "password_expiring",
                    "en",
                    Channel::Email,
                    &json!({"days": 3})
                )
                .map(|_| ())
                .map_err(|e| e.field),
            Err("data.expires_on".to_string())
        );
    }

    #[test]
    fn a_message_rendered_by_the_provider_is_sent_as_it_came() {
        let templates = shipped();
        let data =
            json!({"subject": "Code 1", "text": "a & b", "html": "<p>a &amp; b</p>", "sms": "1 "});
        let email = templates
            .render(PASS_THROUGH, "en", Channel::Email, &data)
            .expect("email");
        assert_eq!(
            email,
            Content::Email {
                subject: "Code 1".into(),
                text: "a & b".into(),
                html: Some("<p>a &amp; b</p>".into()),
            }
        );
        assert!(matches!(
            templates.render(PASS_THROUGH, "en", Channel::Sms, &data),
            Ok(Content::Sms { body }) if body == "1"
        ));
        assert!(templates
            .render(PASS_THROUGH, "en", Channel::Voice, &data)
            .is_err());
        assert!(!templates.names().any(|n| n == PASS_THROUGH));
        let missing = templates
            .render(PASS_THROUGH, "en", Channel::Email, &json!({"text": "x"}))
            .err()
            .map(|e| e.field);
        assert_eq!(missing.as_deref(), Some("data.subject"));
    }

    #[test]
    fn a_broken_template_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir(dir.path().join("greeting")).expect("mkdir");
        std::fs::write(
            dir.path().join("greeting/en.toml"),
            "sms = \"Hi {{ name \"\n",
        )
        .expect("write");
        let error = Templates::load(dir.path(), "en")
            .err()
            .map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("greeting/en.toml")),
            "{error:?}"
        );
    }
}
