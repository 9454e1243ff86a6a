//! A small client for the Kratos admin API: read an identity's password hash (to seed its history) and write
//! our state into `metadata_admin` (so admins see it in Kratos's own tools).

use reclaim_common::settings::KratosSettings;
use reclaim_common::Secret;
use serde_json::{Map, Value};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("Kratos admin API unreachable: {0}")]
    Unreachable(String),
    #[error("Kratos admin API answered {status}")]
    Status { status: u16 },
    #[error("Kratos admin API answered something that is not an identity: {0}")]
    Malformed(String),
}

/// The identity as the admin API shows it with `include_credential=password`.
#[derive(Debug, Clone)]
pub struct AdminIdentity {
    /// The PHC string of the current password (argon2, bcrypt, pbkdf2, scrypt...), if the identity has one.
    pub hashed_password: Option<String>,
    pub metadata_admin: Map<String, Value>,
}

#[derive(Clone)]
pub struct KratosAdmin {
    client: reqwest::Client,
    base: url::Url,
    token: Secret,
}

impl KratosAdmin {
    /// `None` when `plugin.kratos.admin_url` is empty.
    pub fn from_settings(settings: &KratosSettings) -> anyhow::Result<Option<Self>> {
        if settings.admin_url.is_empty() {
            return Ok(None);
        }
        let mut base = url::Url::parse(&settings.admin_url)?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.admin_timeout_ms))
            .build()?;
        Ok(Some(Self {
            client,
            base,
            token: settings.admin_token.clone(),
        }))
    }

    fn identity_url(&self, identity_id: &uuid::Uuid) -> Result<url::Url, AdminError> {
        self.base
            .join(&format!("admin/identities/{identity_id}"))
            .map_err(|e| AdminError::Malformed(e.to_string()))
    }

    fn authorise(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.token.is_empty() {
            request
        } else {
            request.bearer_auth(self.token.expose())
        }
    }

    /// `GET /admin/identities/{id}?include_credential=password`; `None` when Kratos does not know the identity.
    pub async fn identity(
        &self,
        identity_id: &uuid::Uuid,
    ) -> Result<Option<AdminIdentity>, AdminError> {
        let mut url = self.identity_url(identity_id)?;
        url.query_pairs_mut()
            .append_pair("include_credential", "password");
        let response = self
            .authorise(self.client.get(url))
            .send()
            .await
            .map_err(|e| AdminError::Unreachable(e.without_url().to_string()))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(AdminError::Status {
                status: response.status().as_u16(),
            });
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| AdminError::Malformed(e.without_url().to_string()))?;
        if body.get("id").and_then(Value::as_str).is_none() {
            return Err(AdminError::Malformed("no id".into()));
        }
        Ok(Some(AdminIdentity {
            hashed_password: body
                .pointer("/credentials/password/config/hashed_password")
                .and_then(Value::as_str)
                .filter(|h| !h.is_empty())
                .map(str::to_string),
            metadata_admin: body
                .get("metadata_admin")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        }))
    }

    /// Sets `metadata_admin.<key>` with a JSON Patch, keeping the rest of `metadata_admin` as it is.
    pub async fn set_metadata_admin(
        &self,
        identity_id: &uuid::Uuid,
        existing: Map<String, Value>,
        key: &str,
        value: Value,
    ) -> Result<(), AdminError> {
        let mut merged = existing;
        merged.insert(key.to_string(), value);
        let patch = serde_json::json!([{"op": "add", "path": "/metadata_admin", "value": merged}]);
        let response = self
            .authorise(self.client.patch(self.identity_url(identity_id)?))
            .json(&patch)
            .send()
            .await
            .map_err(|e| AdminError::Unreachable(e.without_url().to_string()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(AdminError::Status {
                status: response.status().as_u16(),
            })
        }
    }
}
