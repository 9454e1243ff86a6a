//! A small client for the Kratos admin API: read an identity's password hash (to seed its history), list
//! identities with theirs page by page (`reclaim import kratos`), and write our state into `metadata_admin` (so
//! admins see it in Kratos's own tools).

use super::payload::KratosIdentity;
use chrono::{DateTime, Utc};
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

/// One identity of `GET /admin/identities?include_credential=password`.
#[derive(Debug, Clone)]
pub struct ListedIdentity {
    /// Id, schema, traits and `metadata_public`, as hooks see them.
    pub identity: KratosIdentity,
    /// The PHC string of the current password; `None` without a password credential, or with one that holds no
    /// hash (e.g. marked for Kratos's password migration hook).
    pub hashed_password: Option<String>,
    /// `updated_at` of the password credential.
    pub password_updated_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
}

/// A page of the identity list.
#[derive(Debug, Clone)]
pub struct IdentityPage {
    pub identities: Vec<ListedIdentity>,
    /// The `page_token` of the next page, from the `Link` header's `rel="next"`; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// Kratos caps `page_size` at 500 (keyset pagination's maximum) without saying so.
pub const MAX_PAGE_SIZE: u32 = 500;

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

    /// The admin API's base URL without user information, to name it in messages and checkpoints.
    pub fn base_url(&self) -> String {
        let mut base = self.base.clone();
        let _ = base.set_username("");
        let _ = base.set_password(None);
        base.to_string()
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
            .map_err(unreachable)?;
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

    /// `GET /admin/identities?include_credential=password&page_size=N[&page_token=T]`: one page of Kratos's
    /// keyset pagination, ordered by id. Kratos puts the token of the next page in the `Link` header
    /// (`rel="next"`) only when more identities follow. The list carries the password hashes itself (Kratos
    /// declassifies `include_credential` types in lists too), so no identity is fetched on its own.
    pub async fn list_identities(
        &self,
        page_token: Option<&str>,
        page_size: u32,
    ) -> Result<IdentityPage, AdminError> {
        let mut url = self
            .base
            .join("admin/identities")
            .map_err(|e| AdminError::Malformed(e.to_string()))?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("include_credential", "password")
                .append_pair("page_size", &page_size.min(MAX_PAGE_SIZE).to_string());
            if let Some(token) = page_token {
                query.append_pair("page_token", token);
            }
        }
        let response = self
            .authorise(self.client.get(url.clone()))
            .send()
            .await
            .map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(AdminError::Status {
                status: response.status().as_u16(),
            });
        }
        let next_page_token = next_page_token(response.headers(), &url)?;
        let body: Value = response
            .json()
            .await
            .map_err(|e| AdminError::Malformed(e.without_url().to_string()))?;
        let Value::Array(items) = body else {
            return Err(AdminError::Malformed("not a list".into()));
        };
        let identities = items
            .into_iter()
            .map(listed_identity)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(IdentityPage {
            identities,
            next_page_token,
        })
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
            .map_err(unreachable)?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(AdminError::Status {
                status: response.status().as_u16(),
            })
        }
    }
}

/// The error with its causes ("error sending request: ... Connection refused"), without the URL.
fn unreachable(error: reqwest::Error) -> AdminError {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    AdminError::Unreachable(text)
}

fn listed_identity(item: Value) -> Result<ListedIdentity, AdminError> {
    let time = |pointer: &str| {
        item.pointer(pointer)
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let hashed_password = item
        .pointer("/credentials/password/config/hashed_password")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .map(str::to_string);
    let password_updated_at = time("/credentials/password/updated_at");
    let updated_at = time("/updated_at");
    let created_at = time("/created_at");
    let identity: KratosIdentity = serde_json::from_value(item)
        .map_err(|e| AdminError::Malformed(format!("an identity that cannot be read: {e}")))?;
    Ok(ListedIdentity {
        identity,
        hashed_password,
        password_updated_at,
        updated_at,
        created_at,
    })
}

/// The `page_token` of the `rel="next"` link in RFC 8288 `Link` headers. Kratos writes
/// `<{its request URL, page_token=nil UUID}>; rel="first",<{..., page_token=this page's last id}>; rel="next"`
/// with the URL as it received it, normally path and query only: it is resolved against `request`.
fn next_page_token(
    headers: &reqwest::header::HeaderMap,
    request: &url::Url,
) -> Result<Option<String>, AdminError> {
    for value in headers.get_all(reqwest::header::LINK) {
        let text = value
            .to_str()
            .map_err(|_| AdminError::Malformed("a Link header that is not ASCII".into()))?;
        for (target, params) in links(text) {
            let is_next = params.split(';').any(|param| {
                param.split_once('=').is_some_and(|(name, value)| {
                    name.trim().eq_ignore_ascii_case("rel")
                        && value
                            .trim()
                            .trim_matches('"')
                            .split_ascii_whitespace()
                            .any(|rel| rel.eq_ignore_ascii_case("next"))
                })
            });
            if !is_next {
                continue;
            }
            let next = request.join(target).map_err(|e| {
                AdminError::Malformed(format!("a next link that is not a URL: {e}"))
            })?;
            let token = next
                .query_pairs()
                .find(|(name, _)| name == "page_token")
                .map(|(_, token)| token.into_owned())
                .filter(|token| !token.is_empty());
            return token
                .map(Some)
                .ok_or_else(|| AdminError::Malformed("a next link without a page_token".into()));
        }
    }
    Ok(None)
}

/// The `<target>; params` entries of a `Link` header value. Targets are split on `<`/`>` rather than on commas,
/// which a URL may hold.
fn links(text: &str) -> Vec<(&str, &str)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>').map(|c| open + c) else {
            break;
        };
        let target = &rest[open + 1..close];
        let after = &rest[close + 1..];
        let end = after.find('<').unwrap_or(after.len());
        found.push((target, after[..end].trim_end_matches([',', ' '])));
        rest = &after[end..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, LINK};

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(LINK, HeaderValue::from_str(value).expect("header"));
        }
        map
    }

    fn request() -> url::Url {
        url::Url::parse(
            "http://kratos:4434/admin/identities?include_credential=password&page_size=2",
        )
        .expect("url")
    }

    #[test]
    fn the_next_page_token_is_read_from_the_link_kratos_writes() {
        // The shape of keysetpagination.Header: first and next, comma-joined, relative to the request.
        let kratos = "</admin/identities?include_credential=password&page_size=2&page_token=00000000-0000-0000-0000-000000000000>; rel=\"first\",</admin/identities?include_credential=password&page_size=2&page_token=3a0e2a4c-1b7d-4f3e-9d55-2f1c6c0b7e11>; rel=\"next\"";
        assert_eq!(
            next_page_token(&headers(&[kratos]), &request()).expect("parsed"),
            Some("3a0e2a4c-1b7d-4f3e-9d55-2f1c6c0b7e11".into())
        );
        let last = "</admin/identities?page_size=2&page_token=00000000-0000-0000-0000-000000000000>; rel=\"first\"";
        assert_eq!(
            next_page_token(&headers(&[last]), &request()).expect("parsed"),
            None
        );
        assert_eq!(
            next_page_token(&headers(&[]), &request()).expect("parsed"),
            None
        );
    }

    #[test]
    fn absolute_links_spaces_several_headers_and_commas_in_urls_are_read() {
        let value = "<https://kratos.example/admin/identities?a=1,2&page_token=abc%2Fdef>;rel=\"prev next\"";
        assert_eq!(
            next_page_token(&headers(&["<https://x/>; rel=first", value]), &request())
                .expect("parsed"),
            Some("abc/def".into())
        );
    }

    #[test]
    fn a_next_link_without_a_token_is_malformed() {
        let value = "</admin/identities?page_size=2>; rel=\"next\"";
        assert!(matches!(
            next_page_token(&headers(&[value]), &request()),
            Err(AdminError::Malformed(_))
        ));
    }

    #[test]
    fn a_listed_identity_of_the_contract_shape_gives_its_hash_and_times() {
        let path = format!(
            "{}/../../shared/contracts/kratos/admin-identity-with-credentials.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).expect("contract");
        let value: Value = serde_json::from_str(&text).expect("json");
        let listed = listed_identity(value.clone()).expect("listed");
        assert_eq!(listed.identity.id, "a251ebc2-880c-4f76-a8f3-38e6940eab0e");
        assert!(listed
            .hashed_password
            .as_deref()
            .is_some_and(|h| h.starts_with("$argon2id$")));
        assert_eq!(
            listed.password_updated_at.map(|t| t.to_rfc3339()),
            Some("2013-10-07T08:23:19+00:00".into())
        );
        let mut without = value;
        if let Some(map) = without.as_object_mut() {
            map.remove("credentials");
        }
        assert!(listed_identity(without)
            .expect("listed")
            .hashed_password
            .is_none());
        assert!(listed_identity(serde_json::json!({"traits": {}})).is_err());
    }
}
