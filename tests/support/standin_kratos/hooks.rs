//! The `after` hooks of a Kratos configuration and how Kratos runs them: which list applies to a flow and
//! method (`driver/registry_default_*.go`), and each `web_hook` as `selfservice/hook/web_hook.go` sends it
//! and reads its answer.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `clients.web_hook.header_allowlist`'s default: the only request headers a hook body may see.
const HEADER_ALLOWLIST: [&str; 17] = [
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Content-Length",
    "Content-Type",
    "Origin",
    "Priority",
    "Referer",
    "Sec-Ch-Ua",
    "Sec-Ch-Ua-Mobile",
    "Sec-Ch-Ua-Platform",
    "Sec-Fetch-Dest",
    "Sec-Fetch-Mode",
    "Sec-Fetch-Site",
    "Sec-Fetch-User",
    "True-Client-Ip",
    "User-Agent",
];

/// go-retryablehttp as Kratos configures it: two retries. Kratos waits 1 s and 2 s between attempts; the
/// stand-in waits this instead, so tests of a failing hook do not sleep.
const RETRY_MAX: u32 = 2;
const RETRY_WAIT: Duration = Duration::from_millis(20);
/// The per-attempt timeout of Kratos's web hook client.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where in a flow a list of hooks runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    RegistrationPrePersist,
    RegistrationPostPersist,
    Login,
    Recovery,
    SettingsPrePersist,
    SettingsPostPersist,
}

/// One configured `after` hook.
#[derive(Debug, Clone)]
pub enum Hook {
    Web(WebHook),
    /// Registration: sign the new identity in.
    Session,
    /// Login and settings: end the identity's other sessions.
    RevokeActiveSessions,
}

#[derive(Debug, Clone)]
pub struct WebHook {
    pub id: String,
    pub url: String,
    pub method: String,
    pub template: PathBuf,
    pub parse: bool,
    pub ignore: bool,
    pub can_interrupt: bool,
    pub emit_analytics_event: bool,
    pub headers: Vec<(String, String)>,
    pub auth: Option<HookAuth>,
}

#[derive(Debug, Clone)]
pub enum HookAuth {
    ApiKey {
        name: String,
        value: String,
        in_cookie: bool,
    },
    Basic {
        user: String,
        password: String,
    },
}

impl WebHook {
    /// `response.parse` or the deprecated `can_interrupt`: the hook runs before the identity is stored
    /// (registration, settings) and its answer is read.
    fn parses(&self) -> bool {
        self.parse || self.can_interrupt
    }
}

/// The `selfservice.flows` part of a kratos.yml.
#[derive(Debug, Clone, Default)]
pub struct HookConfig {
    flows: Value,
}

impl HookConfig {
    /// Our kit, `config/kratos/kratos.reclaim.yml`, wired to a plugin at `plugin_url` that accepts `key`, as
    /// the kit's header comment tells an integrator to do.
    pub fn kit(plugin_url: &str, key: &str) -> Self {
        let text = std::fs::read_to_string("config/kratos/kratos.reclaim.yml").expect("kit");
        let text = text
            .replace("http://reclaim:4470", plugin_url)
            .replace("CHANGE-ME", key);
        Self::from_yaml(&text)
    }

    /// Any kratos.yml (only `selfservice.flows.*.after` is read).
    pub fn from_yaml(text: &str) -> Self {
        let config: Value = serde_yaml_ng::from_str(text).expect("kratos config is YAML");
        let flows = config["selfservice"]["flows"].clone();
        let parsed = Self { flows };
        // Fail at load, as Kratos does, on a hook the stand-in would not run.
        for (flow, method) in [
            ("registration", Some("password")),
            ("login", Some("password")),
            ("recovery", None),
            ("settings", Some("password")),
        ] {
            parsed.list(flow, method);
            parsed.list(flow, None);
        }
        parsed
    }

    /// Changes the `config` of every web hook, e.g. to point some of them elsewhere.
    pub fn map_web_hooks(&mut self, mut f: impl FnMut(&mut Value)) {
        for flow in ["registration", "login", "recovery", "settings"] {
            let Some(after) = self.flows[flow]
                .get_mut("after")
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            for (key, value) in after.iter_mut() {
                let list = if key == "hooks" {
                    Some(value)
                } else {
                    value.get_mut("hooks")
                };
                for hook in list.and_then(Value::as_array_mut).into_iter().flatten() {
                    if hook["hook"] == "web_hook" {
                        f(&mut hook["config"]);
                    }
                }
            }
        }
    }

    fn list(&self, flow: &str, method: Option<&str>) -> Vec<Hook> {
        let after = &self.flows[flow]["after"];
        let list = match method {
            Some(method) => &after[method]["hooks"],
            None => &after["hooks"],
        };
        list.as_array()
            .into_iter()
            .flatten()
            .map(|hook| parse_hook(flow, hook))
            .collect()
    }

    /// The hooks Kratos runs at `point`, in order. A method's own list replaces the flow's generic
    /// `after.hooks` for post-persist hooks and login; pre-persist hooks come only from the method's list;
    /// recovery has only the generic list.
    pub fn hooks(&self, point: Point) -> Vec<Hook> {
        let (flow, fallback) = match point {
            Point::RegistrationPrePersist => ("registration", false),
            Point::RegistrationPostPersist => ("registration", true),
            Point::Login => ("login", true),
            Point::Recovery => return self.list("recovery", None),
            Point::SettingsPrePersist => ("settings", false),
            Point::SettingsPostPersist => ("settings", true),
        };
        let mut hooks = self.list(flow, Some("password"));
        if hooks.is_empty() && fallback {
            hooks = self.list(flow, None);
        }
        match point {
            // web_hook.go: pre-persist executors skip hooks that do not parse, post-persist ones skip those
            // that do.
            Point::RegistrationPrePersist | Point::SettingsPrePersist => hooks
                .into_iter()
                .filter(|h| matches!(h, Hook::Web(w) if w.parses()))
                .collect(),
            Point::RegistrationPostPersist | Point::SettingsPostPersist => hooks
                .into_iter()
                .filter(|h| !matches!(h, Hook::Web(w) if w.parses()))
                .collect(),
            Point::Login | Point::Recovery => hooks,
        }
    }
}

fn parse_hook(flow: &str, hook: &Value) -> Hook {
    let name = hook["hook"].as_str().unwrap_or_default();
    match name {
        "web_hook" => Hook::Web(parse_web_hook(&hook["config"])),
        "session" if flow == "registration" => Hook::Session,
        "revoke_active_sessions" if flow == "login" || flow == "settings" => {
            Hook::RevokeActiveSessions
        }
        other => panic!("the Kratos stand-in does not run the `{other}` hook in {flow}"),
    }
}

fn parse_web_hook(config: &Value) -> WebHook {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let body = text(&config["body"]);
    // The kit names the template where Kratos's container mounts it; the tests read it from the repository.
    let template = match body.strip_prefix("file://") {
        Some(path) => PathBuf::from("config/kratos").join(
            std::path::Path::new(path)
                .file_name()
                .expect("a template file name"),
        ),
        None => panic!("the Kratos stand-in reads body templates from file:// only, not {body}"),
    };
    let auth = match config["auth"]["type"].as_str() {
        None => None,
        Some("api_key") => Some(HookAuth::ApiKey {
            name: text(&config["auth"]["config"]["name"]),
            value: text(&config["auth"]["config"]["value"]),
            in_cookie: config["auth"]["config"]["in"] == "cookie",
        }),
        Some("basic_auth") => Some(HookAuth::Basic {
            user: text(&config["auth"]["config"]["user"]),
            password: text(&config["auth"]["config"]["password"]),
        }),
        Some(other) => panic!("unknown web_hook auth type {other}"),
    };
    let headers = config["headers"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), text(v)))
        .collect();
    WebHook {
        id: text(&config["id"]),
        url: text(&config["url"]),
        method: config["method"].as_str().unwrap_or("POST").to_string(),
        template,
        parse: config["response"]["parse"] == true,
        ignore: config["response"]["ignore"] == true,
        can_interrupt: config["can_interrupt"] == true,
        emit_analytics_event: config["emit_analytics_event"] != false,
        headers,
        auth,
    }
}

/// A web hook call as the stand-in made it, for tests that check what Kratos sent.
#[derive(Debug, Clone)]
pub struct HookCall {
    pub hook_id: String,
    pub url: String,
    pub trigger_id: Option<String>,
    /// The status of each attempt (`None`: no answer, e.g. connection refused).
    pub attempts: Vec<Option<u16>>,
    pub body: Value,
}

/// Why a hook stopped the flow, in the classes Kratos's flow error handlers tell apart.
#[derive(Debug, Clone)]
pub enum HookFailure {
    /// A parsed 4xx with `messages`: validation errors shown in the flow's UI (HTTP 400 to API clients).
    Interrupt(Vec<Interrupt>),
    /// A 4xx from a hook whose answer is not parsed: herodot 502.
    BadGateway(u16),
    /// Anything else (unreachable, retries exhausted, unreadable answer): 500.
    Internal(String),
}

/// One group of an interrupt: the messages for one `instance_ptr`.
#[derive(Debug, Clone)]
pub struct Interrupt {
    pub instance_ptr: String,
    pub messages: Vec<Value>,
}

/// Runs web hooks and keeps a record of the calls; fire-and-forget calls can be awaited with [`settle`].
#[derive(Clone, Default)]
pub struct Runner {
    client: reqwest::Client,
    calls: Arc<Mutex<Vec<HookCall>>>,
    in_flight: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Runner {
    pub fn calls(&self) -> Vec<HookCall> {
        self.calls.lock().expect("calls").clone()
    }

    /// Waits for every fire-and-forget (`response.ignore`) call started so far.
    pub async fn settle(&self) {
        loop {
            let pending: Vec<_> = std::mem::take(&mut *self.in_flight.lock().expect("in flight"));
            if pending.is_empty() {
                return;
            }
            for handle in pending {
                handle.await.expect("hook task");
            }
        }
    }

    /// Runs one web hook on `ctx` (Kratos's `templateContext`). On success, a parsed 200 may hand back
    /// identity fields to apply (`Some(identity)`).
    pub async fn run(&self, hook: &WebHook, mut ctx: Value) -> Result<Option<Value>, HookFailure> {
        if hook.ignore && hook.parses() {
            return Err(HookFailure::Internal(
                "a web hook cannot both ignore and parse its response".into(),
            ));
        }
        ctx["request_headers"] = allowed_headers(&ctx["request_headers"]);
        if hook.ignore {
            let runner = self.clone();
            let hook = hook.clone();
            let handle = tokio::spawn(async move {
                // Kratos logs the failure of an ignored hook and goes on.
                let _ = runner.call(&hook, ctx).await;
            });
            self.in_flight.lock().expect("in flight").push(handle);
            return Ok(None);
        }
        self.call(hook, ctx).await
    }

    async fn call(&self, hook: &WebHook, ctx: Value) -> Result<Option<Value>, HookFailure> {
        let template = hook.template.clone();
        let rendered = {
            let ctx = ctx.clone();
            tokio::task::spawn_blocking(move || {
                super::super::kratos::render_template(&template, &ctx)
            })
            .await
            .expect("jsonnet task")
        }
        .map_err(HookFailure::Internal)?;
        let trigger_id = hook
            .emit_analytics_event
            .then(|| uuid::Uuid::new_v4().to_string());
        let mut attempts = Vec::new();
        let mut answer = None;
        for attempt in 0..=RETRY_MAX {
            if attempt > 0 {
                tokio::time::sleep(RETRY_WAIT).await;
            }
            match self.send(hook, &rendered, trigger_id.as_deref()).await {
                Ok((status, body)) => {
                    attempts.push(Some(status));
                    // go-retryablehttp retries 429 and 5xx other than 501.
                    let retry = status == 429 || (status >= 500 && status != 501);
                    if !retry {
                        answer = Some((status, body));
                        break;
                    }
                }
                Err(_) => attempts.push(None),
            }
        }
        self.calls.lock().expect("calls").push(HookCall {
            hook_id: hook.id.clone(),
            url: hook.url.clone(),
            trigger_id,
            attempts: attempts.clone(),
            body: serde_json::from_slice(&rendered).unwrap_or(Value::Null),
        });
        let Some((status, body)) = answer else {
            return Err(HookFailure::Internal(format!(
                "web hook {} failed after {} attempts: {attempts:?}",
                hook.id,
                attempts.len()
            )));
        };
        if status >= 400 {
            if hook.parses() {
                parse_interrupt(&body)?;
            }
            return Err(HookFailure::BadGateway(status));
        }
        if !hook.parses() || status == 204 {
            return Ok(None);
        }
        if status != 200 {
            return Ok(None);
        }
        let answer: Value = serde_json::from_slice(&body).map_err(|e| {
            HookFailure::Internal(format!("webhook response could not be unmarshalled: {e}"))
        })?;
        Ok(answer.get("identity").filter(|i| !i.is_null()).cloned())
    }

    async fn send(
        &self,
        hook: &WebHook,
        body: &[u8],
        trigger_id: Option<&str>,
    ) -> Result<(u16, Vec<u8>), reqwest::Error> {
        let method = reqwest::Method::from_bytes(hook.method.as_bytes()).expect("hook method");
        let mut request = self
            .client
            .request(method, &hook.url)
            .timeout(ATTEMPT_TIMEOUT)
            .header("Content-Type", "application/json")
            .body(body.to_vec());
        for (name, value) in &hook.headers {
            request = request.header(name, value);
        }
        if let Some(trigger_id) = trigger_id {
            request = request
                .header("Ory-Webhook-Request-ID", uuid::Uuid::new_v4().to_string())
                .header("Ory-Webhook-Trigger-ID", trigger_id);
        }
        request = match &hook.auth {
            None => request,
            Some(HookAuth::ApiKey {
                name,
                value,
                in_cookie: false,
            }) => request.header(name, value),
            Some(HookAuth::ApiKey {
                name,
                value,
                in_cookie: true,
            }) => request.header("Cookie", format!("{name}={value}")),
            Some(HookAuth::Basic { user, password }) => request.basic_auth(user, Some(password)),
        };
        let response = request.send().await?;
        let status = response.status().as_u16();
        // Kratos reads at most 5 MiB of an answer.
        let mut bytes = response.bytes().await?.to_vec();
        bytes.truncate(5 << 20);
        Ok((status, bytes))
    }
}

/// `parseWebhookResponse` for a 4xx/5xx: `messages` become validation errors; no messages, or a body that
/// is not the expected JSON, is an error of its own.
fn parse_interrupt(body: &[u8]) -> Result<(), HookFailure> {
    let parsed: Value = serde_json::from_slice(body).map_err(|e| {
        HookFailure::Internal(format!("webhook response could not be unmarshalled: {e}"))
    })?;
    let groups: Vec<Interrupt> = parsed["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|group| Interrupt {
            instance_ptr: group["instance_ptr"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            messages: group["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    // Kratos keeps `type: error` and turns any other type into `info`.
                    let kind = if m["type"] == "error" {
                        "error"
                    } else {
                        "info"
                    };
                    let mut message = json!({"id": m["id"], "text": m["text"], "type": kind});
                    if let Some(context) = m.get("context") {
                        message["context"] = context.clone();
                    }
                    message
                })
                .collect(),
        })
        .collect();
    if groups.is_empty() {
        return Err(HookFailure::Internal(
            "error while parsing webhook response: got no validation errors".into(),
        ));
    }
    Err(HookFailure::Interrupt(groups))
}

/// `RemoveDisallowedHeaders`: the request headers a hook may see.
fn allowed_headers(headers: &Value) -> Value {
    let mut kept = serde_json::Map::new();
    if let Some(map) = headers.as_object() {
        for allowed in HEADER_ALLOWLIST {
            if let Some(values) = map.get(allowed) {
                kept.insert(allowed.to_string(), values.clone());
            }
        }
    }
    Value::Object(kept)
}
