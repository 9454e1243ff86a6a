//! What Kratos sends to our hooks: the body produced by `config/kratos/reclaim.jsonnet` — or by Kratos's own
//! pass-through template `function(ctx) ctx`; both are accepted, unknown fields are ignored.

use serde::Deserialize;
use serde_json::Value;

/// The body of every Kratos hook call.
#[derive(Debug, Clone, Deserialize)]
pub struct HookBody {
    pub identity: KratosIdentity,
    #[serde(default)]
    pub session: Option<KratosSession>,
    #[serde(default)]
    pub flow: Option<KratosFlow>,
    /// Present with our template.
    #[serde(default)]
    pub request: Option<HookRequest>,
    /// Present with the pass-through template: Go `http.Header`, values are arrays.
    #[serde(default)]
    pub request_headers: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KratosIdentity {
    /// The nil UUID in registration pre-persist hooks, where the identity is not stored yet.
    pub id: String,
    #[serde(default)]
    pub schema_id: Option<String>,
    #[serde(default)]
    pub traits: Value,
    #[serde(default)]
    pub metadata_public: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KratosSession {
    #[serde(default)]
    pub authentication_methods: Vec<AuthenticationMethod>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthenticationMethod {
    #[serde(default)]
    pub method: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KratosFlow {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HookRequest {
    #[serde(default)]
    pub accept_language: Option<String>,
}

const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

impl HookBody {
    /// The `Accept-Language` of the user's request, from either body shape.
    pub fn accept_language(&self) -> Option<&str> {
        if let Some(value) = self
            .request
            .as_ref()
            .and_then(|r| r.accept_language.as_deref())
        {
            return Some(value);
        }
        let headers = self.request_headers.as_ref()?;
        let (_, value) = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("accept-language"))?;
        match value {
            Value::Array(items) => items.first().and_then(Value::as_str),
            Value::String(text) => Some(text.as_str()),
            _ => None,
        }
    }

    /// True when the session was created by account recovery (code or link), so the password change that
    /// follows is not a voluntary one.
    pub fn session_from_recovery(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(KratosSession::from_recovery)
    }
}

impl KratosSession {
    /// True when account recovery (code or link) authenticated this session.
    pub fn from_recovery(&self) -> bool {
        self.authentication_methods
            .iter()
            .any(|m| m.method == "code_recovery" || m.method == "link_recovery")
    }
}

impl KratosIdentity {
    /// False in registration pre-persist hooks, where Kratos has not assigned an id yet.
    pub fn is_persisted(&self) -> bool {
        !self.id.is_empty() && self.id != NIL_UUID
    }

    /// A trait found by JSON pointer (e.g. `/email`, relative to `traits`), if it is a string.
    pub fn trait_at(&self, pointer: &str) -> Option<String> {
        if pointer.is_empty() {
            return None;
        }
        self.traits
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// `metadata_public` as an object (Kratos sends `null` when unset).
    pub fn metadata_public_object(&self) -> serde_json::Map<String, Value> {
        match &self.metadata_public {
            Some(Value::Object(map)) => map.clone(),
            _ => serde_json::Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(name: &str) -> HookBody {
        let path = format!(
            "{}/../../shared/contracts/kratos/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("contract file");
        reclaim_common::json::parse(text.as_bytes()).expect("contract payload parses")
    }

    #[test]
    fn the_pass_through_payloads_of_every_hook_parse() {
        let settings = contract("webhook-settings-password.json");
        assert!(settings.identity.is_persisted());
        assert_eq!(settings.identity.schema_id.as_deref(), Some("default"));
        assert_eq!(
            settings.identity.trait_at("/email").as_deref(),
            Some("jane.doe@example.com")
        );
        assert!(settings.accept_language().is_some());
        assert!(!settings.session_from_recovery());

        let login = contract("webhook-login-password.json");
        assert_eq!(login.flow.and_then(|f| f.kind).as_deref(), Some("browser"));

        let recovery = contract("webhook-recovery.json");
        assert!(recovery.session.is_none());

        let pre_persist = contract("webhook-registration-password-pre-persist.json");
        assert!(!pre_persist.identity.is_persisted());
        assert!(contract("webhook-registration-password.json")
            .identity
            .is_persisted());
    }
}
