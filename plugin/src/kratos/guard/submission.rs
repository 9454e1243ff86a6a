//! Which requests the guard reads, and the password in them. Kratos accepts a self-service submission as
//! `application/x-www-form-urlencoded`, `multipart/form-data` or JSON, and for GET decodes the fields from the
//! query; the guard reads all four the same way. Anything it cannot read is forwarded untouched: Kratos is the
//! one to refuse garbage.

use crate::password::Password;
use crate::verdicts::{Flow, FlowId};
use actix_web::http::Method;

/// The flow a request submits to, from its path (`/self-service/settings`, `/self-service/registration`,
/// `/self-service/recovery`).
pub fn flow_of_path(path: &str) -> Option<Flow> {
    match path.trim_end_matches('/') {
        "/self-service/settings" => Some(Flow::Settings),
        "/self-service/registration" => Some(Flow::Registration),
        "/self-service/recovery" => Some(Flow::Recovery),
        _ => None,
    }
}

/// The flow id of a submission: Kratos takes it from the `flow` query parameter.
pub fn flow_id(query: &str) -> Option<FlowId> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "flow")
        .and_then(|(_, value)| FlowId::parse(&value))
}

/// The body encodings Kratos decodes a submission from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoding {
    Form,
    Multipart { boundary: String },
    Json,
}

impl Encoding {
    /// From a `Content-Type` header; `None` for anything Kratos would not decode as a submission.
    pub fn of_content_type(content_type: &str) -> Option<Self> {
        let mime: mime::Mime = content_type.parse().ok()?;
        match (mime.type_(), mime.subtype()) {
            (mime::APPLICATION, mime::WWW_FORM_URLENCODED) => Some(Self::Form),
            (mime::APPLICATION, mime::JSON) => Some(Self::Json),
            (mime::MULTIPART, mime::FORM_DATA) => {
                let boundary = mime.get_param(mime::BOUNDARY)?.as_str().to_string();
                Some(Self::Multipart { boundary })
            }
            _ => None,
        }
    }
}

/// What the guard found in a submission.
#[derive(Debug)]
pub enum Found {
    /// `method=password` with a password the policy can check.
    Password(Password),
    /// Another method (profile, totp, …), or a password submission without a password: not ours to check.
    NotPassword,
    /// The body could not be read as its encoding claims, or the password is not a valid one (empty,
    /// over-long): forwarded for Kratos to refuse.
    Unreadable,
}

/// The `method` and `password` fields of a submission, from the query of a GET or the body of a POST.
pub async fn find_password(
    method: &Method,
    query: &str,
    encoding: Option<&Encoding>,
    body: &[u8],
) -> Found {
    let Some(encoding) = encoding.filter(|_| method != Method::GET) else {
        if method != Method::GET {
            return Found::NotPassword;
        }
        return password_of(form_fields(query.as_bytes()));
    };
    match read_fields(encoding, body).await {
        Some(fields) => password_of(fields),
        None => Found::Unreadable,
    }
}

fn password_of(
    Fields {
        method, password, ..
    }: Fields,
) -> Found {
    if method.as_deref() != Some("password") {
        return Found::NotPassword;
    }
    match password.map(Password::parse) {
        Some(Ok(password)) => Found::Password(password),
        Some(Err(_)) => Found::Unreadable,
        None => Found::NotPassword,
    }
}

/// The address of a recovery submission that asks Kratos to send a code, or to send it again (the
/// "resend" button submits the address again): `method=code` with a non-empty `email`. A submission of
/// the code itself carries no address; neither does anything the guard cannot read.
pub async fn find_recovery_address(encoding: Option<&Encoding>, body: &[u8]) -> Option<String> {
    let fields = read_fields(encoding?, body).await?;
    if fields.method.as_deref() != Some("code") {
        return None;
    }
    fields
        .email
        .map(|email| email.trim().to_string())
        .filter(|email| !email.is_empty())
}

async fn read_fields(encoding: &Encoding, body: &[u8]) -> Option<Fields> {
    match encoding {
        Encoding::Form => Some(form_fields(body)),
        Encoding::Json => json_fields(body),
        Encoding::Multipart { boundary } => multipart_fields(boundary, body).await,
    }
}

#[derive(Debug, Default)]
struct Fields {
    method: Option<String>,
    password: Option<String>,
    email: Option<String>,
}

impl Fields {
    fn take(&mut self, name: &str, value: String) {
        // Kratos keeps the first value of a repeated form field.
        match name {
            "method" if self.method.is_none() => self.method = Some(value),
            "password" if self.password.is_none() => self.password = Some(value),
            "email" if self.email.is_none() => self.email = Some(value),
            _ => {}
        }
    }
}

fn form_fields(bytes: &[u8]) -> Fields {
    let mut fields = Fields::default();
    for (name, value) in url::form_urlencoded::parse(bytes) {
        fields.take(&name, value.into_owned());
    }
    fields
}

fn json_fields(bytes: &[u8]) -> Option<Fields> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let object = value.as_object()?;
    let text = |name: &str| {
        object
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    Some(Fields {
        method: text("method"),
        password: text("password"),
        email: text("email"),
    })
}

async fn multipart_fields(boundary: &str, body: &[u8]) -> Option<Fields> {
    let bytes = bytes::Bytes::copy_from_slice(body);
    let stream =
        futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(bytes) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut fields = Fields::default();
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_string();
                if matches!(name.as_str(), "method" | "password" | "email") {
                    let value = field.text().await.ok()?;
                    fields.take(&name, value);
                }
            }
            Ok(None) => return Some(fields),
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(found: Found) -> String {
        match found {
            Found::Password(p) => p.expose().to_string(),
            other => panic!("expected a password, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn reads_the_password_from_every_encoding_kratos_accepts() {
        let form = b"csrf_token=x&method=password&password=s%C3%A9cret+one";
        assert_eq!(
            password(find_password(&Method::POST, "flow=1", Some(&Encoding::Form), form).await),
            "sécret one"
        );
        let json = br#"{"method":"password","password":"json secret","csrf_token":"x"}"#;
        assert_eq!(
            password(find_password(&Method::POST, "", Some(&Encoding::Json), json).await),
            "json secret"
        );
        let multipart = b"--XyZ\r\nContent-Disposition: form-data; name=\"method\"\r\n\r\npassword\r\n\
            --XyZ\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nmulti secret\r\n--XyZ--\r\n";
        let encoding =
            Encoding::of_content_type("multipart/form-data; boundary=XyZ").expect("multipart");
        assert_eq!(
            password(find_password(&Method::POST, "", Some(&encoding), multipart).await),
            "multi secret"
        );
        let query = "flow=6c1f9e52-3a6f-4a0e-9c1e-1a2b3c4d5e6f&method=password&password=get+secret";
        assert_eq!(
            password(find_password(&Method::GET, query, None, b"").await),
            "get secret"
        );
    }

    #[tokio::test]
    async fn other_methods_and_garbage_are_not_checked() {
        let profile = b"method=profile&traits.email=a%40example.org";
        assert!(matches!(
            find_password(&Method::POST, "", Some(&Encoding::Form), profile).await,
            Found::NotPassword
        ));
        assert!(matches!(
            find_password(&Method::POST, "", Some(&Encoding::Json), b"{not json").await,
            Found::Unreadable
        ));
        assert!(matches!(
            find_password(
                &Method::POST,
                "",
                Some(&Encoding::Json),
                br#"{"method":"password","password":""}"#
            )
            .await,
            Found::Unreadable
        ));
        let broken = Encoding::Multipart {
            boundary: "B".into(),
        };
        assert!(matches!(
            find_password(&Method::POST, "", Some(&broken), b"--B\r\nno headers").await,
            Found::Unreadable
        ));
        assert!(matches!(
            find_password(&Method::POST, "", None, b"method=password&password=x").await,
            Found::NotPassword
        ));
    }

    #[test]
    fn flow_ids_are_uuids_from_the_query() {
        let id = "6C1F9E52-3A6F-4A0E-9C1E-1A2B3C4D5E6F";
        assert_eq!(
            flow_id(&format!("x=1&flow={id}")).map(|f| f.to_string()),
            Some(id.to_lowercase())
        );
        assert_eq!(flow_id("flow=../../etc"), None);
        assert_eq!(flow_id(""), None);
        assert_eq!(
            flow_of_path("/self-service/settings/"),
            Some(Flow::Settings)
        );
        assert_eq!(flow_of_path("/self-service/settings/browser"), None);
    }
}
