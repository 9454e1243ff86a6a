//! What a test calls to drive Kratos's public API as an app would: a native (API) client with session
//! tokens, and a browser that keeps cookies and follows nothing by itself. Both talk to whatever `base` is
//! (the stand-in itself, or a proxy in front of it).

use serde_json::{json, Value};
use std::collections::BTreeMap;

/// An HTTP answer: status, JSON body (`Null` when empty or not JSON), and the `Location` header.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
}

impl Answer {
    async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let set_cookies = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let bytes = response.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Self {
            status,
            body,
            location,
            set_cookies,
        }
    }

    /// The messages on the UI node `name` of a flow answer, as `(id, text)`.
    pub fn node_messages(&self, name: &str) -> Vec<(u64, String)> {
        self.body["ui"]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["attributes"]["name"] == name)
            .flat_map(|n| n["messages"].as_array().cloned().unwrap_or_default())
            .map(|m| {
                (
                    m["id"].as_u64().unwrap_or_default(),
                    m["text"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// The messages above the form (`ui.messages`), as `(id, text)`.
    pub fn global_messages(&self) -> Vec<(u64, String)> {
        self.body["ui"]["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["id"].as_u64().unwrap_or_default(),
                    m["text"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

/// How a settings form is submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Form,
    Multipart,
    /// A GET of the submit URL with the fields in the query.
    Get,
}

pub const ALL_FORMATS: [Format; 4] = [Format::Json, Format::Form, Format::Multipart, Format::Get];

/// What a completed recovery hands the app.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub session_token: String,
    pub settings_flow: String,
}

/// A native app: JSON, session tokens in `X-Session-Token`.
#[derive(Clone)]
pub struct KratosClient {
    pub base: String,
    pub http: reqwest::Client,
}

impl KratosClient {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.header("X-Session-Token", token);
        }
        Answer::read(request.send().await.expect("GET")).await
    }

    async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.header("X-Session-Token", token);
        }
        Answer::read(request.send().await.expect("POST")).await
    }

    /// Starts an API flow (`registration`, `login`, `recovery`, `settings`) and returns its id.
    pub async fn start(&self, kind: &str, token: Option<&str>) -> String {
        let answer = self.get(&format!("/self-service/{kind}/api"), token).await;
        assert_eq!(answer.status, 200, "start {kind}: {}", answer.body);
        answer.body["id"].as_str().expect("flow id").to_string()
    }

    pub async fn register(&self, email: &str, password: &str) -> Answer {
        let flow = self.start("registration", None).await;
        self.post_json(
            &format!("/self-service/registration?flow={flow}"),
            None,
            &json!({"method": "password", "password": password, "traits": {"email": email}}),
        )
        .await
    }

    /// A password login; on success `body.session_token` is the new session's token.
    pub async fn login(&self, email: &str, password: &str) -> Answer {
        let flow = self.start("login", None).await;
        self.post_json(
            &format!("/self-service/login?flow={flow}"),
            None,
            &json!({"method": "password", "identifier": email, "password": password}),
        )
        .await
    }

    /// Re-authenticates the session of `token` (`refresh=true`), which renews its `authenticated_at`.
    pub async fn refresh(&self, token: &str, email: &str, password: &str) -> Answer {
        let answer = self
            .get("/self-service/login/api?refresh=true", Some(token))
            .await;
        assert_eq!(answer.status, 200, "refresh flow: {}", answer.body);
        let flow = answer.body["id"].as_str().expect("flow id");
        self.post_json(
            &format!("/self-service/login?flow={flow}"),
            Some(token),
            &json!({"method": "password", "identifier": email, "password": password}),
        )
        .await
    }

    /// Asks for a recovery code for `email`; answers the flow id.
    pub async fn send_recovery_code(&self, email: &str) -> String {
        let flow = self.start("recovery", None).await;
        let answer = self
            .post_json(
                &format!("/self-service/recovery?flow={flow}"),
                None,
                &json!({"method": "code", "email": email}),
            )
            .await;
        assert_eq!(answer.status, 200, "recovery email: {}", answer.body);
        assert_eq!(answer.body["state"], "sent_email", "{}", answer.body);
        flow
    }

    /// Submits a recovery code.
    pub async fn submit_recovery_code(&self, flow: &str, code: &str) -> Answer {
        self.post_json(
            &format!("/self-service/recovery?flow={flow}"),
            None,
            &json!({"method": "code", "code": code}),
        )
        .await
    }

    /// The whole recovery as a user does it: ask for a code, read it from the email, submit it.
    pub async fn recover(&self, kratos: &super::StandinKratos, email: &str) -> Recovered {
        let flow = self.send_recovery_code(email).await;
        let code = kratos
            .recovery_code(email)
            .expect("a recovery code was sent");
        let answer = self.submit_recovery_code(&flow, &code).await;
        assert_eq!(answer.status, 200, "recovery code: {}", answer.body);
        assert_eq!(answer.body["state"], "passed_challenge", "{}", answer.body);
        let continue_with = answer.body["continue_with"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let find = |action: &str| {
            continue_with
                .iter()
                .find(|c| c["action"] == action)
                .cloned()
                .unwrap_or_else(|| panic!("no {action} in {}", answer.body))
        };
        Recovered {
            session_token: find("set_ory_session_token")["ory_session_token"]
                .as_str()
                .expect("token")
                .to_string(),
            settings_flow: find("show_settings_ui")["flow"]["id"]
                .as_str()
                .expect("settings flow")
                .to_string(),
        }
    }

    /// Submits a new password on settings flow `flow` in `format`.
    pub async fn change_password(
        &self,
        token: &str,
        flow: &str,
        password: &str,
        format: Format,
    ) -> Answer {
        let path = format!("/self-service/settings?flow={flow}");
        let fields = [("method", "password"), ("password", password)];
        let request = match format {
            Format::Json => self
                .http
                .post(self.url(&path))
                .json(&json!({"method": "password", "password": password})),
            Format::Form => self
                .http
                .post(self.url(&path))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .header("Accept", "application/json")
                .body(
                    url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(fields)
                        .finish(),
                ),
            Format::Multipart => {
                let boundary = format!("standin{}", uuid::Uuid::new_v4().simple());
                let mut body = String::new();
                for (name, value) in fields {
                    body.push_str(&format!(
                        "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                    ));
                }
                body.push_str(&format!("--{boundary}--\r\n"));
                self.http
                    .post(self.url(&path))
                    .header(
                        "Content-Type",
                        format!("multipart/form-data; boundary={boundary}"),
                    )
                    .header("Accept", "application/json")
                    .body(body)
            }
            Format::Get => self.http.get(format!(
                "{}&{}",
                self.url(&path),
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(fields)
                    .finish()
            )),
        };
        let request = request.header("X-Session-Token", token);
        Answer::read(request.send().await.expect("settings submit")).await
    }

    /// A fresh settings flow for the session of `token`, then the new password on it.
    pub async fn change_password_anew(&self, token: &str, password: &str) -> Answer {
        let flow = self.start("settings", Some(token)).await;
        self.change_password(token, &flow, password, Format::Json)
            .await
    }

    /// `GET /sessions/whoami` with the given request headers.
    pub async fn whoami(&self, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.http.get(self.url("/sessions/whoami"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Answer::read(request.send().await.expect("whoami")).await
    }
}

/// A browser: sends and keeps cookies, asks for HTML, and follows no redirect by itself.
pub struct Browser {
    pub base: String,
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookies: BTreeMap::new(),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    fn keep(&mut self, answer: &Answer) {
        for set in &answer.set_cookies {
            let pair = set.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() || set.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_string(), value.to_string());
                }
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// A GET (a link or a redirect followed), with the browser's cookies.
    pub async fn get(&mut self, path_or_url: &str) -> Answer {
        let response = self
            .http
            .get(self.url(path_or_url))
            .header("Accept", "text/html")
            .header("Cookie", self.cookie_header())
            .send()
            .await
            .expect("browser GET");
        let answer = Answer::read(response).await;
        self.keep(&answer);
        answer
    }

    /// Submits an HTML form (urlencoded).
    pub async fn post_form(&mut self, path_or_url: &str, fields: &[(&str, &str)]) -> Answer {
        let response = self
            .http
            .post(self.url(path_or_url))
            .header("Accept", "text/html")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Cookie", self.cookie_header())
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(fields.iter().copied())
                    .finish(),
            )
            .send()
            .await
            .expect("browser POST");
        let answer = Answer::read(response).await;
        self.keep(&answer);
        answer
    }

    /// Starts a browser flow and returns its id (from the redirect to the UI).
    pub async fn start(&mut self, kind: &str, query: &str) -> String {
        let answer = self
            .get(&format!("/self-service/{kind}/browser{query}"))
            .await;
        assert_eq!(answer.status, 303, "start {kind}: {}", answer.body);
        let location = answer.location.expect("redirect to the UI");
        location
            .split("flow=")
            .nth(1)
            .expect("flow id in the UI URL")
            .to_string()
    }

    /// Follows Kratos's redirect to a refresh login (`login_url`) and signs in again; the answer redirects
    /// to the flow's `return_to`.
    pub async fn reauthenticate(&mut self, login_url: &str, email: &str, password: &str) -> Answer {
        let to_ui = self.get(login_url).await;
        assert_eq!(to_ui.status, 303, "refresh login: {}", to_ui.body);
        let location = to_ui.location.expect("redirect to the login UI");
        let flow = location
            .split("flow=")
            .nth(1)
            .expect("flow id in the UI URL");
        self.post_form(
            &format!("/self-service/login?flow={flow}"),
            &[
                ("method", "password"),
                ("identifier", email),
                ("password", password),
            ],
        )
        .await
    }

    /// Signs in with a password through a browser login flow.
    pub async fn login(&mut self, email: &str, password: &str) -> Answer {
        let flow = self.start("login", "").await;
        self.post_form(
            &format!("/self-service/login?flow={flow}"),
            &[
                ("method", "password"),
                ("identifier", email),
                ("password", password),
            ],
        )
        .await
    }
}
