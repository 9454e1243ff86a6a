//! The stand-in's endpoints: Kratos's public self-service API for password users, `whoami`, and the admin
//! identity calls. Answers take Kratos's shapes: API flows and JSON requests get JSON (400 with the flow on
//! validation errors), browser requests get 303 redirects.

use super::hooks::{Hook, HookFailure, Point};
use super::{
    opaque, timestamp, Flow, Identity, Kind, Paused, Session, StandinKratos,
    CONTINUITY_LIFESPAN_MINUTES, SESSION_LIFESPAN_HOURS,
};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use chrono::Duration;
use serde_json::{json, Value};
use uuid::Uuid;

const SESSION_COOKIE: &str = "ory_kratos_session";
const CONTINUITY_COOKIE: &str = "ory_kratos_continuity";
const MIN_PASSWORD_LENGTH: usize = 8;

pub(super) fn serve(
    kratos: StandinKratos,
    public: std::net::TcpListener,
    admin: std::net::TcpListener,
) {
    let data = web::Data::new(kratos);
    let public_data = data.clone();
    let public = HttpServer::new(move || {
        App::new()
            .app_data(public_data.clone())
            .route("/self-service/{kind}/api", web::get().to(init_api))
            .route("/self-service/{kind}/browser", web::get().to(init_browser))
            .route("/self-service/{kind}/flows", web::get().to(get_flow))
            .route("/self-service/{kind}", web::route().to(submit))
            .route("/sessions/whoami", web::get().to(whoami))
    })
    .workers(1)
    .listen(public)
    .expect("listen public")
    .run();
    let admin = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/admin/identities/{id}", web::get().to(admin_identity))
            .route("/admin/identities/{id}", web::patch().to(admin_patch))
    })
    .workers(1)
    .listen(admin)
    .expect("listen admin")
    .run();
    tokio::spawn(public);
    tokio::spawn(admin);
}

fn kind_of(path: &str) -> Option<Kind> {
    match path {
        "registration" => Some(Kind::Registration),
        "login" => Some(Kind::Login),
        "recovery" => Some(Kind::Recovery),
        "settings" => Some(Kind::Settings),
        _ => None,
    }
}

/// A herodot error body, as Kratos writes every non-flow error.
fn error(status: StatusCode, id: Option<&str>, reason: &str) -> HttpResponse {
    let mut body = json!({
        "code": status.as_u16(),
        "status": status.canonical_reason().unwrap_or_default(),
        "reason": reason,
        "message": reason,
    });
    if let Some(id) = id {
        body["id"] = id.into();
    }
    HttpResponse::build(status).json(json!({ "error": body }))
}

fn redirect(location: &str) -> actix_web::HttpResponseBuilder {
    let mut builder = HttpResponse::SeeOther();
    builder.insert_header((header::LOCATION, location.to_string()));
    builder
}

/// `x.IsJSONRequest`: the client prefers JSON over HTML (Go's content negotiation over
/// `text/html, text/*, */*, application/json`, HTML on ties), or it sent JSON.
fn is_json_request(req: &HttpRequest) -> bool {
    if content_type(req) == "application/json" {
        return true;
    }
    let Some(accept) = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let specs: Vec<(String, f32)> = accept
        .split(',')
        .map(|item| {
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or_default().trim().to_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.parse().ok())
                .unwrap_or(1.0);
            (media, q)
        })
        .collect();
    let quality = |offer: &str| -> f32 {
        let (kind, _) = offer.split_once('/').unwrap_or((offer, ""));
        let mut best: Option<(u8, f32)> = None;
        for (media, q) in &specs {
            let precision = if media == offer {
                3
            } else if media.strip_suffix("/*") == Some(kind) && !offer.ends_with("/*") {
                2
            } else if media == "*/*" {
                1
            } else {
                continue;
            };
            if best.is_none_or(|(p, _)| precision > p) {
                best = Some((precision, *q));
            }
        }
        best.map_or(0.0, |(_, q)| q)
    };
    let mut chosen = ("text/html", 0.0f32);
    for offer in ["text/html", "text/*", "*/*", "application/json"] {
        let q = quality(offer);
        if q > chosen.1 {
            chosen = (offer, q);
        }
    }
    chosen.0 == "application/json"
}

fn content_type(req: &HttpRequest) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn cookies(req: &HttpRequest) -> serde_json::Map<String, Value> {
    let mut map = serde_json::Map::new();
    for value in req.headers().get_all(header::COOKIE) {
        for pair in value.to_str().unwrap_or_default().split(';') {
            if let Some((name, value)) = pair.trim().split_once('=') {
                if !name.is_empty() {
                    map.insert(name.to_string(), Value::String(value.to_string()));
                }
            }
        }
    }
    map
}

fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    cookies(req)
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Go's `http.Header`: canonical names, each with an array of values.
fn go_headers(req: &HttpRequest) -> Value {
    let mut map = serde_json::Map::new();
    for (name, value) in req.headers() {
        let canonical = name
            .as_str()
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                match chars.next() {
                    Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                    None => String::new(),
                }
            })
            .collect::<Vec<_>>()
            .join("-");
        let entry = map.entry(canonical).or_insert_with(|| json!([]));
        entry.as_array_mut().expect("array").push(Value::String(
            value.to_str().unwrap_or_default().to_string(),
        ));
    }
    Value::Object(map)
}

fn query(req: &HttpRequest) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect()
}

fn query_value(req: &HttpRequest, name: &str) -> Option<String> {
    query(req)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The submitted fields as one JSON object, however they came: a JSON body, a urlencoded or multipart form,
/// or the query of a GET (Kratos's decoderx reads GET forms from the query). Dotted names nest
/// (`traits.email`).
fn decode_fields(req: &HttpRequest, body: &[u8]) -> Result<Value, String> {
    let pairs: Vec<(String, String)> = if req.method() == Method::GET {
        query(req)
    } else {
        let content_type = content_type(req);
        let media = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_lowercase();
        match media.as_str() {
            "application/json" => {
                let value: Value = serde_json::from_slice(body)
                    .map_err(|e| format!("the body is not JSON: {e}"))?;
                if !value.is_object() {
                    return Err("the body is not a JSON object".into());
                }
                return Ok(value);
            }
            "application/x-www-form-urlencoded" => {
                url::form_urlencoded::parse(body).into_owned().collect()
            }
            "multipart/form-data" => multipart_fields(&content_type, body)?,
            other => return Err(format!("unsupported content type {other:?}")),
        }
    };
    let mut object = json!({});
    for (name, value) in pairs {
        let mut slot = &mut object;
        let parts: Vec<&str> = name.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            slot = &mut slot[*part];
            if !slot.is_object() {
                *slot = json!({});
            }
        }
        slot[parts[parts.len() - 1]] = Value::String(value);
    }
    Ok(object)
}

/// The text fields of a `multipart/form-data` body (RFC 7578).
fn multipart_fields(content_type: &str, body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let boundary = content_type
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .next()
        .ok_or("multipart body without a boundary")?
        .trim_matches('"');
    let text = String::from_utf8_lossy(body);
    let delimiter = format!("--{boundary}");
    let mut fields = Vec::new();
    for part in text.split(delimiter.as_str()).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part.strip_prefix("\r\n").unwrap_or(part);
        let (head, value) = part
            .split_once("\r\n\r\n")
            .ok_or("a multipart part without headers")?;
        let name = head
            .lines()
            .find(|l| l.to_lowercase().starts_with("content-disposition"))
            .and_then(|l| l.split(';').find_map(|p| p.trim().strip_prefix("name=")))
            .ok_or("a multipart part without a name")?
            .trim_matches('"')
            .to_string();
        fields.push((
            name,
            value.strip_suffix("\r\n").unwrap_or(value).to_string(),
        ));
    }
    Ok(fields)
}

fn field<'a>(fields: &'a Value, name: &str) -> &'a str {
    fields[name].as_str().unwrap_or_default()
}

fn message(id: u64, text: &str, kind: &str, context: Option<Value>) -> Value {
    let mut message = json!({"id": id, "text": text, "type": kind});
    if let Some(context) = context {
        message["context"] = context;
    }
    message
}

fn required(name: &str) -> (String, Value) {
    (
        format!("#/{name}"),
        message(
            4_000_002,
            &format!("Property {name} is missing."),
            "error",
            Some(json!({"property": name})),
        ),
    )
}

/// Why a submission did not complete, in the classes Kratos's flow error handlers tell apart.
enum Failure {
    /// Shown in the flow's UI: `(instance pointer, message)`.
    Validation(Vec<(String, Value)>),
    Hook(HookFailure),
    /// A plain error answer.
    Response(HttpResponse),
}

impl From<HookFailure> for Failure {
    fn from(failure: HookFailure) -> Self {
        match failure {
            HookFailure::Interrupt(groups) => Failure::Validation(
                groups
                    .into_iter()
                    .flat_map(|g| {
                        let ptr = g.instance_ptr;
                        g.messages.into_iter().map(move |m| (ptr.clone(), m))
                    })
                    .collect(),
            ),
            other => Failure::Hook(other),
        }
    }
}

/// What the hooks of one point asked for besides changing the identity.
#[derive(Default)]
struct Effects {
    issue_session: bool,
    revoke_other_sessions: bool,
}

impl StandinKratos {
    /// Kratos's hook `templateContext` for this request.
    fn hook_ctx(
        &self,
        req: &HttpRequest,
        flow: &Value,
        identity: Option<&Identity>,
        session: Option<Value>,
    ) -> Value {
        let mut ctx = json!({
            "flow": flow,
            "request_headers": go_headers(req),
            "request_method": req.method().as_str(),
            "request_url": format!("{}{}", self.base_url(), req.uri()),
            "request_cookies": cookies(req),
        });
        if let Some(identity) = identity {
            ctx["identity"] = identity.json.clone();
        }
        if let Some(session) = session {
            ctx["session"] = session;
        }
        ctx
    }

    /// Runs the hooks of `point` in order; the first failure stops the flow. Identity changes from parsed
    /// answers are kept only where Kratos persists them (registration and settings, before storing).
    async fn run_hooks(
        &self,
        point: Point,
        req: &HttpRequest,
        flow: &Flow,
        identity: &mut Identity,
        session: Option<&Session>,
    ) -> Result<Effects, Failure> {
        let mut effects = Effects::default();
        for hook in self.hooks(point) {
            match hook {
                Hook::Session => effects.issue_session = true,
                Hook::RevokeActiveSessions => effects.revoke_other_sessions = true,
                Hook::Web(web_hook) => {
                    let now = self.now();
                    let flow_json = flow.json(&self.base_url(), Some(identity), now);
                    // Login hooks run before the session is stored: Kratos sends nil session ids.
                    let session_json = session
                        .map(|s| s.json(Some(identity), point == Point::Login && !flow.refresh));
                    let ctx = match point {
                        // Kratos's registration and recovery hooks carry no session.
                        Point::RegistrationPrePersist
                        | Point::RegistrationPostPersist
                        | Point::Recovery => self.hook_ctx(req, &flow_json, Some(identity), None),
                        _ => self.hook_ctx(req, &flow_json, Some(identity), session_json),
                    };
                    let changes = self.inner.runner.run(&web_hook, ctx).await?;
                    if let Some(changes) = changes {
                        if matches!(
                            point,
                            Point::RegistrationPrePersist | Point::SettingsPrePersist
                        ) {
                            identity.apply_hook_changes(&changes);
                        }
                    }
                }
            }
        }
        Ok(effects)
    }

    /// The current session of the request: `X-Session-Token`, `Authorization: Bearer`, or the cookie.
    fn session_of(&self, req: &HttpRequest) -> Option<Session> {
        let header = |name| {
            req.headers()
                .get(name)
                .and_then(|v: &header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let token = header(header::HeaderName::from_static("x-session-token")).or_else(|| {
            header(header::AUTHORIZATION)
                .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()))
        });
        let cookie = cookie(req, SESSION_COOKIE);
        let now = self.now();
        let state = self.state();
        state
            .sessions
            .iter()
            .find(|s| {
                token.as_deref() == Some(s.token.as_str())
                    || (token.is_none() && cookie.as_deref() == Some(s.cookie.as_str()))
            })
            .filter(|s| s.active && s.expires_at > now)
            .cloned()
    }

    fn identity(&self, id: Uuid) -> Option<Identity> {
        self.state().identities.get(&id).cloned()
    }

    fn flow_json(&self, flow: &Flow) -> Value {
        let identity = flow.identity_id.and_then(|id| self.identity(id));
        flow.json(&self.base_url(), identity.as_ref(), self.now())
    }

    fn save_flow(&self, flow: &Flow) {
        self.state().flows.insert(flow.id, flow.clone());
    }

    fn new_session(&self, identity_id: Uuid, method: &str, req: &HttpRequest) -> Session {
        let now = self.now();
        Session {
            id: Uuid::new_v4(),
            token: opaque(),
            cookie: opaque(),
            identity_id,
            issued_at: now,
            authenticated_at: now,
            expires_at: now + Duration::hours(SESSION_LIFESPAN_HOURS),
            methods: vec![(method.to_string(), now)],
            active: true,
            device_id: Uuid::new_v4(),
            user_agent: req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        }
    }

    fn store_session(&self, session: &Session) {
        let mut state = self.state();
        state.sessions.retain(|s| s.id != session.id);
        state.sessions.push(session.clone());
    }

    fn revoke_other_sessions(&self, keep: &Session) {
        for session in self
            .state()
            .sessions
            .iter_mut()
            .filter(|s| s.identity_id == keep.identity_id && s.id != keep.id)
        {
            session.active = false;
        }
    }

    /// The answer to a failed submission: the flow with its messages (400 for API and JSON clients, a
    /// redirect to the UI for browsers), or the error itself.
    fn fail(&self, req: &HttpRequest, mut flow: Flow, failure: Failure) -> HttpResponse {
        match failure {
            Failure::Response(response) => response,
            Failure::Hook(HookFailure::BadGateway(status)) => self.error_for(
                req,
                &flow,
                error(
                    StatusCode::BAD_GATEWAY,
                    None,
                    &format!(
                        "A third-party upstream service responded improperly. Please try again later. (webhook failed with status code {status})"
                    ),
                ),
            ),
            Failure::Hook(HookFailure::Internal(reason)) => self.error_for(
                req,
                &flow,
                error(StatusCode::INTERNAL_SERVER_ERROR, None, &reason),
            ),
            Failure::Hook(HookFailure::Interrupt(_)) => {
                unreachable!("interrupts become validation failures")
            }
            Failure::Validation(messages) => {
                for (pointer, message) in messages {
                    flow.add_message(&pointer, message);
                }
                if flow.kind == Kind::Settings || flow.kind == Kind::Registration {
                    flow.nodes.iter_mut().for_each(|n| {
                        if n["attributes"]["type"] == "hidden" && n["attributes"]["name"] == "csrf_token" {
                            n["attributes"]["value"] = super::base64_token().into();
                        }
                    });
                }
                self.save_flow(&flow);
                if !flow.api && !is_json_request(req) {
                    return redirect(&self.ui_url(flow.kind, flow.id)).finish();
                }
                HttpResponse::BadRequest().json(self.flow_json(&flow))
            }
        }
    }

    /// Browsers see errors on the error UI; API and JSON clients get them as JSON.
    fn error_for(&self, req: &HttpRequest, flow: &Flow, response: HttpResponse) -> HttpResponse {
        if !flow.api && !is_json_request(req) {
            return redirect(&format!("http://ui.invalid/error?id={}", Uuid::new_v4())).finish();
        }
        response
    }

    fn flow_for(&self, req: &HttpRequest, kind: Kind) -> Result<Flow, Box<HttpResponse>> {
        let id = query_value(req, "flow")
            .and_then(|f| Uuid::parse_str(&f).ok())
            .ok_or_else(|| {
                Box::new(error(
                    StatusCode::BAD_REQUEST,
                    None,
                    "The flow query parameter is missing or malformed.",
                ))
            })?;
        let flow = self.state().flows.get(&id).cloned();
        match flow {
            Some(flow) if flow.kind == kind => {
                if flow.expires_at < self.now() {
                    return Err(Box::new(error(
                        StatusCode::GONE,
                        Some("self_service_flow_expired"),
                        "The self-service flow expired, please start a new one.",
                    )));
                }
                Ok(flow)
            }
            _ => Err(Box::new(error(
                StatusCode::NOT_FOUND,
                None,
                &format!(
                    "The {} request could not be found. Please restart the flow.",
                    kind.path()
                ),
            ))),
        }
    }
}

fn set_cookie(name: &str, value: &str) -> (header::HeaderName, String) {
    (
        header::SET_COOKIE,
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax"),
    )
}

fn clear_cookie(name: &str) -> (header::HeaderName, String) {
    (
        header::SET_COOKIE,
        format!("{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"),
    )
}

async fn hash_password(password: String) -> String {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(Uuid::new_v4().as_bytes()).expect("salt");
        // Small parameters: a test stand-in, not a password store.
        let params = argon2::Params::new(4_096, 1, 1, None).expect("params");
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(password.as_bytes(), &salt)
            .expect("hash")
            .to_string()
    })
    .await
    .expect("hash task")
}

async fn verify_password(password: String, hash: Option<String>) -> bool {
    let Some(hash) = hash else { return false };
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .expect("verify task")
}

/// Kratos's password validation before any hook (length only; no breach lookups in tests).
fn password_problems(password: &str) -> Option<(String, Value)> {
    if password.is_empty() {
        return Some(required("password"));
    }
    let length = password.chars().count();
    (length < MIN_PASSWORD_LENGTH).then(|| {
        (
            "#/password".to_string(),
            message(
                4_000_032,
                &format!(
                    "The password must be at least {MIN_PASSWORD_LENGTH} characters long, but got {length}."
                ),
                "error",
                Some(json!({"actual_length": length, "min_length": MIN_PASSWORD_LENGTH})),
            ),
        )
    })
}

async fn init_api(
    req: HttpRequest,
    kind: web::Path<String>,
    kratos: web::Data<StandinKratos>,
) -> HttpResponse {
    init(&req, &kind, &kratos, true)
}

async fn init_browser(
    req: HttpRequest,
    kind: web::Path<String>,
    kratos: web::Data<StandinKratos>,
) -> HttpResponse {
    init(&req, &kind, &kratos, false)
}

fn init(req: &HttpRequest, kind: &str, kratos: &StandinKratos, api: bool) -> HttpResponse {
    let Some(kind) = kind_of(kind) else {
        return HttpResponse::NotFound().finish();
    };
    let session = kratos.session_of(req);
    let refresh = query_value(req, "refresh").as_deref() == Some("true");
    match (kind, &session) {
        (Kind::Settings, None) => {
            if api || is_json_request(req) {
                return error(
                    StatusCode::UNAUTHORIZED,
                    Some("session_inactive"),
                    "No active session was found in this request.",
                );
            }
            return redirect(&format!("{}/self-service/login/browser", kratos.base_url())).finish();
        }
        (Kind::Registration | Kind::Recovery, Some(_)) | (Kind::Login, Some(_)) if !refresh => {
            if api || is_json_request(req) {
                return error(
                    StatusCode::BAD_REQUEST,
                    Some("session_already_available"),
                    "A valid session was detected and thus this flow is not allowed.",
                );
            }
            return redirect(&kratos.default_return_url()).finish();
        }
        _ => {}
    }
    let now = kratos.now();
    let mut flow = Flow::new(
        kind,
        api,
        now,
        format!("{}{}", kratos.base_url(), req.uri()),
    );
    flow.return_to = query_value(req, "return_to");
    if kind == Kind::Login {
        flow.refresh = refresh && session.is_some();
    }
    if kind == Kind::Settings {
        let session = session.expect("checked above");
        let identity = kratos.identity(session.identity_id);
        flow.identity_id = Some(session.identity_id);
        flow.nodes = flow.initial_nodes(identity.as_ref());
    }
    kratos.save_flow(&flow);
    if api || is_json_request(req) {
        HttpResponse::Ok().json(kratos.flow_json(&flow))
    } else {
        redirect(&kratos.ui_url(kind, flow.id)).finish()
    }
}

async fn get_flow(
    req: HttpRequest,
    kind: web::Path<String>,
    kratos: web::Data<StandinKratos>,
) -> HttpResponse {
    let Some(kind) = kind_of(&kind) else {
        return HttpResponse::NotFound().finish();
    };
    let Some(id) = query_value(&req, "id").and_then(|f| Uuid::parse_str(&f).ok()) else {
        return error(
            StatusCode::BAD_REQUEST,
            None,
            "The flow query parameter is missing or malformed.",
        );
    };
    let Some(flow) = kratos
        .state()
        .flows
        .get(&id)
        .filter(|f| f.kind == kind)
        .cloned()
    else {
        return error(StatusCode::NOT_FOUND, None, "The flow could not be found.");
    };
    if kind == Kind::Settings {
        match kratos.session_of(&req) {
            None => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    Some("session_inactive"),
                    "No active session was found in this request.",
                )
            }
            Some(session) if Some(session.identity_id) != flow.identity_id => {
                return error(
                    StatusCode::FORBIDDEN,
                    Some("security_identity_mismatch"),
                    "The flow was interrupted with session_refresh_required but apparently some other identity logged in instead.",
                )
            }
            Some(_) => {}
        }
    }
    HttpResponse::Ok().json(kratos.flow_json(&flow))
}

async fn submit(
    req: HttpRequest,
    kind: web::Path<String>,
    body: web::Bytes,
    kratos: web::Data<StandinKratos>,
) -> HttpResponse {
    let kind = match kind_of(&kind) {
        Some(kind) if req.method() == Method::POST || req.method() == Method::GET => kind,
        _ => return HttpResponse::NotFound().finish(),
    };
    let mut flow = match kratos.flow_for(&req, kind) {
        Ok(flow) => flow,
        Err(response) => return *response,
    };
    flow.reset_messages();
    match kind {
        Kind::Registration => register(&req, &body, &kratos, flow).await,
        Kind::Login => login(&req, &body, &kratos, flow).await,
        Kind::Recovery => recover(&req, &body, &kratos, flow).await,
        Kind::Settings => settings(&req, &body, &kratos, flow).await,
    }
}

fn bad_fields(
    req: &HttpRequest,
    kratos: &StandinKratos,
    flow: Flow,
    problem: String,
) -> HttpResponse {
    kratos.fail(
        req,
        flow,
        Failure::Validation(vec![(
            "#/".into(),
            message(4_000_001, &problem, "error", None),
        )]),
    )
}

async fn register(
    req: &HttpRequest,
    body: &[u8],
    kratos: &StandinKratos,
    flow: Flow,
) -> HttpResponse {
    if kratos.session_of(req).is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            Some("session_already_available"),
            "A valid session was detected and thus this flow is not allowed.",
        );
    }
    let fields = match decode_fields(req, body) {
        Ok(fields) => fields,
        Err(problem) => return bad_fields(req, kratos, flow, problem),
    };
    if field(&fields, "method") != "password" {
        return bad_fields(
            req,
            kratos,
            flow,
            "Could not find a strategy to sign you up with. Did you fill out the form correctly?"
                .into(),
        );
    }
    let password = field(&fields, "password").to_string();
    let email = fields["traits"]["email"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    let mut problems = Vec::new();
    if email.is_empty() {
        problems.push(required("traits/email"));
    }
    problems.extend(password_problems(&password));
    if !problems.is_empty() {
        return kratos.fail(req, flow, Failure::Validation(problems));
    }
    let exists = kratos
        .state()
        .identities
        .values()
        .any(|i| i.email() == email);
    if exists {
        return kratos.fail(
            req,
            flow,
            Failure::Validation(vec![(
                "#/".into(),
                message(
                    4_000_007,
                    "An account with the same identifier (email, phone, username, ...) exists already.",
                    "error",
                    None,
                ),
            )]),
        );
    }
    let now = kratos.now();
    let mut traits = fields["traits"].clone();
    traits["email"] = Value::String(email);
    let mut identity = Identity::unsaved(traits, now);
    identity.password_hash = Some(hash_password(password).await);
    if let Err(failure) = kratos
        .run_hooks(
            Point::RegistrationPrePersist,
            req,
            &flow,
            &mut identity,
            None,
        )
        .await
    {
        return kratos.fail(req, flow, failure);
    }
    identity.persist(&kratos.base_url(), kratos.now());
    let id = identity.id();
    kratos.state().identities.insert(id, identity.clone());
    let effects = match kratos
        .run_hooks(
            Point::RegistrationPostPersist,
            req,
            &flow,
            &mut identity,
            None,
        )
        .await
    {
        Ok(effects) => effects,
        // The identity stays stored: Kratos has already committed it.
        Err(failure) => return kratos.fail(req, flow, failure),
    };
    let session = effects
        .issue_session
        .then(|| kratos.new_session(id, "password", req));
    if let Some(session) = &session {
        kratos.store_session(session);
    }
    let mut answer = json!({"identity": identity.json, "continue_with": []});
    if let Some(session) = &session {
        answer["session"] = session.json(Some(&identity), false);
        if flow.api {
            answer["session_token"] = session.token.clone().into();
            answer["continue_with"] =
                json!([{"action": "set_ory_session_token", "ory_session_token": session.token}]);
        }
    }
    if flow.api || is_json_request(req) {
        let mut response = HttpResponse::Ok();
        if let (false, Some(session)) = (flow.api, &session) {
            response.insert_header(set_cookie(SESSION_COOKIE, &session.cookie));
        }
        return response.json(answer);
    }
    let mut response = redirect(
        &flow
            .return_to
            .clone()
            .unwrap_or_else(|| kratos.default_return_url()),
    );
    if let Some(session) = &session {
        response.insert_header(set_cookie(SESSION_COOKIE, &session.cookie));
    }
    response.finish()
}

async fn login(
    req: &HttpRequest,
    body: &[u8],
    kratos: &StandinKratos,
    mut flow: Flow,
) -> HttpResponse {
    let fields = match decode_fields(req, body) {
        Ok(fields) => fields,
        Err(problem) => return bad_fields(req, kratos, flow, problem),
    };
    if field(&fields, "method") != "password" {
        return bad_fields(
            req,
            kratos,
            flow,
            "Could not find a strategy to log you in with. Did you fill out the form correctly?"
                .into(),
        );
    }
    let identifier = field(&fields, "identifier").to_lowercase();
    let password = field(&fields, "password").to_string();
    let mut problems = Vec::new();
    if identifier.is_empty() {
        problems.push(required("identifier"));
    }
    if password.is_empty() {
        problems.push(required("password"));
    }
    if !problems.is_empty() {
        return kratos.fail(req, flow, Failure::Validation(problems));
    }
    let found = kratos
        .state()
        .identities
        .values()
        .find(|i| i.email() == identifier)
        .cloned();
    let hash = found.as_ref().and_then(|i| i.password_hash.clone());
    // Unknown identifiers cost a verification too, as in Kratos.
    let valid = verify_password(password, hash).await;
    let Some(mut identity) = found.filter(|_| valid) else {
        return kratos.fail(
            req,
            flow,
            Failure::Validation(vec![(
                "#/".into(),
                message(
                    4_000_006,
                    "The provided credentials are invalid, check for spelling mistakes in your password or username, email address, or phone number.",
                    "error",
                    None,
                ),
            )]),
        );
    };
    flow.active = Some("password");
    let now = kratos.now();
    // A refresh re-authenticates the current session; any other login starts a new one.
    let session = match kratos.session_of(req) {
        Some(mut current) if flow.refresh && current.identity_id == identity.id() => {
            current.methods.push(("password".into(), now));
            current.authenticated_at = now;
            current
        }
        _ => kratos.new_session(identity.id(), "password", req),
    };
    let effects = match kratos
        .run_hooks(Point::Login, req, &flow, &mut identity, Some(&session))
        .await
    {
        Ok(effects) => effects,
        Err(failure) => return kratos.fail(req, flow, failure),
    };
    kratos.store_session(&session);
    if effects.revoke_other_sessions {
        kratos.revoke_other_sessions(&session);
    }
    kratos.save_flow(&flow);
    let return_to = flow
        .return_to
        .clone()
        .unwrap_or_else(|| kratos.default_return_url());
    if flow.api {
        return HttpResponse::Ok().json(json!({
            "session_token": session.token,
            "session": session.json(Some(&identity), false),
        }));
    }
    if is_json_request(req) {
        return HttpResponse::Ok()
            .insert_header(set_cookie(SESSION_COOKIE, &session.cookie))
            .json(json!({
                "session": session.json(Some(&identity), false),
                "continue_with": [{"action": "redirect_browser_to", "redirect_browser_to": return_to}],
            }));
    }
    redirect(&return_to)
        .insert_header(set_cookie(SESSION_COOKIE, &session.cookie))
        .finish()
}

async fn recover(
    req: &HttpRequest,
    body: &[u8],
    kratos: &StandinKratos,
    mut flow: Flow,
) -> HttpResponse {
    let fields = match decode_fields(req, body) {
        Ok(fields) => fields,
        Err(problem) => return bad_fields(req, kratos, flow, problem),
    };
    let email = field(&fields, "email").to_lowercase();
    let respond = |kratos: &StandinKratos, flow: &Flow| {
        kratos.save_flow(flow);
        if flow.api || is_json_request(req) {
            HttpResponse::Ok().json(kratos.flow_json(flow))
        } else {
            redirect(&kratos.ui_url(Kind::Recovery, flow.id)).finish()
        }
    };
    // Without an address, a code is being submitted (Kratos's recovery v1 state machine).
    if flow.state != "choose_method" && email.is_empty() {
        let code = field(&fields, "code");
        let now = kratos.now();
        let valid = flow
            .recovery
            .as_ref()
            .filter(|(_, sent, expires_at)| sent == code && *expires_at > now)
            .map(|(id, _, _)| *id);
        let Some(identity_id) = valid else {
            flow.add_message(
                "",
                message(
                    4_060_006,
                    "The recovery code is invalid or has already been used. Please try again.",
                    "error",
                    None,
                ),
            );
            return respond(kratos, &flow);
        };
        flow.recovery = None;
        return recovered(req, kratos, flow, identity_id).await;
    }
    if kratos.session_of(req).is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            Some("session_already_available"),
            "A valid session was detected and thus recovery is not possible.",
        );
    }
    if field(&fields, "method") != "code" {
        return bad_fields(
            req,
            kratos,
            flow,
            "Could not find a strategy to recover your account with. Did you fill out the form correctly?".into(),
        );
    }
    if email.is_empty() {
        return kratos.fail(req, flow, Failure::Validation(vec![required("email")]));
    }
    let identity = kratos
        .state()
        .identities
        .values()
        .find(|i| i.email() == email)
        .cloned();
    // Unknown addresses get the same answer; Kratos emails them that no account exists.
    let mail = if let Some(identity) = identity {
        let digits = Uuid::new_v4().as_u128() % 1_000_000;
        let code = format!("{digits:06}");
        flow.recovery = Some((
            identity.id(),
            code.clone(),
            kratos.now() + Duration::minutes(super::FLOW_LIFESPAN_MINUTES),
        ));
        kratos.state().outbox.insert(email.clone(), code.clone());
        json!({
            "template_type": "recovery_code_valid",
            "template_data": {"to": email, "recovery_code": code, "expires_in_minutes": super::FLOW_LIFESPAN_MINUTES,
                              "identity": identity.json, "transient_payload": {}, "request_url": ""},
            "subject": "Recover access to your account",
            "body": format!("Recover access to your account by entering the following code:\n\n{code}\n"),
        })
    } else {
        json!({
            "template_type": "recovery_code_invalid",
            "template_data": {"to": email, "transient_payload": {}, "request_url": ""},
            "subject": "Account access attempted",
            "body": "You (or someone else) entered this email address when trying to recover access to an account.\n",
        })
    };
    if let Some(courier) = kratos.courier() {
        deliver(&courier, &email, mail).await;
    }
    flow.state = "sent_email";
    flow.nodes = vec![
        super::csrf_node(),
        super::node(
            "code",
            "code",
            "text",
            None,
            Some((1_070_010, "Recovery code")),
        ),
        super::node("code", "method", "hidden", Some("code".into()), None),
        super::node(
            "code",
            "method",
            "submit",
            Some("code".into()),
            Some((1_070_009, "Continue")),
        ),
        super::node(
            "code",
            "email",
            "submit",
            Some(email.into()),
            Some((1_070_008, "Resend code")),
        ),
    ];
    flow.add_message(
        "",
        message(
            1_060_003,
            "An email containing a recovery code has been sent to the email address you provided. If you have not received an email, check the spelling of the address and make sure to use the address you registered with.",
            "info",
            None,
        ),
    );
    respond(kratos, &flow)
}

/// Kratos's courier: the message goes to the HTTP courier as `function(ctx) ctx` renders it. Kratos retries a
/// failed delivery later; the stand-in does not, and the tests read the answer from the gateway.
async fn deliver(courier: &super::Courier, recipient: &str, mut mail: Value) {
    mail["recipient"] = recipient.into();
    mail["message_type"] = "email".into();
    mail["html_body"] = mail["body"].clone();
    mail["request_headers"] = json!({});
    let response = reqwest::Client::new()
        .post(&courier.url)
        .header(courier.header.as_str(), courier.key.as_str())
        .json(&mail)
        .send()
        .await
        .expect("the courier answers");
    assert!(
        response.status().is_success(),
        "courier: {}",
        response.status()
    );
}

/// `recoveryIssueSession`: a session by `code_recovery`, the recovery hooks, then a settings flow the user
/// is sent to.
async fn recovered(
    req: &HttpRequest,
    kratos: &StandinKratos,
    mut flow: Flow,
    identity_id: Uuid,
) -> HttpResponse {
    let Some(mut identity) = kratos.identity(identity_id) else {
        return error(StatusCode::NOT_FOUND, None, "The identity is gone.");
    };
    flow.state = "passed_challenge";
    kratos.save_flow(&flow);
    let session = kratos.new_session(identity_id, "code_recovery", req);
    if let Err(failure) = kratos
        .run_hooks(Point::Recovery, req, &flow, &mut identity, None)
        .await
    {
        return kratos.fail(req, flow, failure);
    }
    kratos.store_session(&session);
    let now = kratos.now();
    let mut settings = Flow::new(
        Kind::Settings,
        flow.api,
        now,
        format!("{}/self-service/settings/browser", kratos.base_url()),
    );
    settings.identity_id = Some(identity_id);
    settings.nodes = settings.initial_nodes(Some(&identity));
    let minutes = kratos
        .inner
        .privileged_max_age
        .lock()
        .expect("max age")
        .num_seconds() as f64
        / 60.0;
    settings.add_message(
        "",
        message(
            1_060_001,
            &format!("You successfully recovered your account. Please change your password or set up an alternative login method (e.g. social sign in) within the next {minutes:.2} minutes."),
            "info",
            Some(json!({"privileged_session_expires_at": timestamp(now + *kratos.inner.privileged_max_age.lock().expect("max age"))})),
        ),
    );
    kratos.save_flow(&settings);
    let settings_ui = kratos.ui_url(Kind::Settings, settings.id);
    if flow.api {
        flow.continue_with
            .push(json!({"action": "set_ory_session_token", "ory_session_token": session.token}));
    }
    if flow.api || is_json_request(req) {
        flow.continue_with.push(json!({
            "action": "show_settings_ui",
            "flow": {"id": settings.id.to_string(), "url": settings_ui},
        }));
        kratos.save_flow(&flow);
        let mut response = HttpResponse::Ok();
        if !flow.api {
            response.insert_header(set_cookie(SESSION_COOKIE, &session.cookie));
        }
        let answer = kratos.flow_json(&flow);
        // continue_with is transient in Kratos: shown once, not stored with the flow.
        flow.continue_with.clear();
        kratos.save_flow(&flow);
        return response.json(answer);
    }
    redirect(&settings_ui)
        .insert_header(set_cookie(SESSION_COOKIE, &session.cookie))
        .finish()
}

async fn settings(
    req: &HttpRequest,
    body: &[u8],
    kratos: &StandinKratos,
    mut flow: Flow,
) -> HttpResponse {
    let Some(session) = kratos.session_of(req) else {
        if flow.api || is_json_request(req) {
            return error(
                StatusCode::UNAUTHORIZED,
                Some("session_inactive"),
                "No active session was found in this request.",
            );
        }
        return redirect(&format!("{}/self-service/login/browser", kratos.base_url())).finish();
    };
    if flow.identity_id != Some(session.identity_id) {
        return error(
            StatusCode::FORBIDDEN,
            Some("security_identity_mismatch"),
            "You must restart the flow because the resumable session was initiated by another person.",
        );
    }
    // PrepareUpdate: a browser (non-JSON) request carrying the continuity cookie of a paused submission of
    // this flow resumes it with the fields kept then; the request itself carries none.
    let mut resumed = None;
    let mut clear_continuity = false;
    if !flow.api && !is_json_request(req) {
        if let Some(reference) = cookie(req, CONTINUITY_COOKIE) {
            let paused = kratos.state().paused.remove(&reference);
            clear_continuity = paused.is_some();
            if let Some(paused) = paused.filter(|p| p.expires_at > kratos.now()) {
                if paused.identity_id != session.identity_id {
                    return error(
                        StatusCode::FORBIDDEN,
                        Some("security_identity_mismatch"),
                        "You must restart the flow because the resumable session was initiated by another person.",
                    );
                }
                if paused.flow_id == flow.id {
                    resumed = Some(paused.payload);
                }
            }
        }
    }
    let fields = match resumed {
        Some(payload) => payload,
        None => {
            let method = match decode_fields(req, body) {
                Ok(fields) => fields,
                Err(problem) => return bad_fields(req, kratos, flow, problem),
            };
            if field(&method, "method") != "password" {
                return bad_fields(
                    req,
                    kratos,
                    flow,
                    "Could not find a strategy to update your settings. Did you fill out the form correctly?"
                        .into(),
                );
            }
            method
        }
    };
    let mut response = match change_password(req, kratos, &mut flow, &session, fields).await {
        Ok(response) => response,
        Err(failure) => kratos.fail(req, flow, failure),
    };
    if clear_continuity {
        let (name, value) = clear_cookie(CONTINUITY_COOKIE);
        response.headers_mut().append(
            name,
            header::HeaderValue::from_str(&value).expect("cookie header"),
        );
    }
    response
}

/// `continueSettingsFlow` and `PostSettingsHook` for the password method.
async fn change_password(
    req: &HttpRequest,
    kratos: &StandinKratos,
    flow: &mut Flow,
    session: &Session,
    fields: Value,
) -> Result<HttpResponse, Failure> {
    let max_age = *kratos.inner.privileged_max_age.lock().expect("max age");
    if session.authenticated_at + max_age < kratos.now() {
        return Err(Failure::Response(reauthenticate(
            req, kratos, flow, session, fields,
        )));
    }
    let password = field(&fields, "password").to_string();
    if password.is_empty() {
        return Err(Failure::Validation(vec![required("password")]));
    }
    let mut identity = kratos.identity(session.identity_id).ok_or_else(|| {
        Failure::Response(error(StatusCode::NOT_FOUND, None, "identity not found"))
    })?;
    if verify_password(password.clone(), identity.password_hash.clone()).await {
        return Err(Failure::Validation(vec![(
            "#/password".into(),
            message(
                4_000_039,
                "The new password must be different from the old password.",
                "error",
                None,
            ),
        )]));
    }
    if let Some(problem) = password_problems(&password) {
        return Err(Failure::Validation(vec![problem]));
    }
    identity.password_hash = Some(hash_password(password).await);
    kratos
        .run_hooks(
            Point::SettingsPrePersist,
            req,
            flow,
            &mut identity,
            Some(session),
        )
        .await?;
    identity.json["updated_at"] = timestamp(kratos.now());
    kratos
        .state()
        .identities
        .insert(identity.id(), identity.clone());
    flow.state = "success";
    flow.nodes = flow.initial_nodes(Some(&identity));
    flow.reset_messages();
    flow.add_message(
        "",
        message(1_050_001, "Your changes have been saved!", "info", None),
    );
    kratos.save_flow(flow);
    // Post-persist hooks: the password is already saved, so a failure here still leaves it changed.
    let effects = kratos
        .run_hooks(
            Point::SettingsPostPersist,
            req,
            flow,
            &mut identity,
            Some(session),
        )
        .await?;
    if effects.revoke_other_sessions {
        kratos.revoke_other_sessions(session);
    }
    let return_to = flow
        .return_to
        .clone()
        .unwrap_or_else(|| kratos.ui_url(Kind::Settings, flow.id));
    if flow.api {
        return Ok(HttpResponse::Ok().json(kratos.flow_json(flow)));
    }
    if is_json_request(req) {
        let mut answer = kratos.flow_json(flow);
        answer["continue_with"] =
            json!([{"action": "redirect_browser_to", "redirect_browser_to": return_to}]);
        return Ok(HttpResponse::Ok()
            .insert_header(set_cookie(SESSION_COOKIE, &session.cookie))
            .json(answer));
    }
    Ok(redirect(&return_to)
        .insert_header(set_cookie(SESSION_COOKIE, &session.cookie))
        .finish())
}

/// The session is too old for a settings change: browser flows keep the submission for 15 minutes (the
/// continuity cookie names it) and every client is sent to a refresh login that returns to the submit URL.
fn reauthenticate(
    req: &HttpRequest,
    kratos: &StandinKratos,
    flow: &Flow,
    session: &Session,
    fields: Value,
) -> HttpResponse {
    let base = kratos.base_url();
    let return_to = format!("{base}{}", req.uri());
    let redirect_to = format!(
        "{base}/self-service/login/browser?{}",
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("refresh", "true")
            .append_pair("return_to", &return_to)
            .finish()
    );
    let mut continuity = None;
    if !flow.api {
        let reference = opaque();
        kratos.state().paused.insert(
            reference.clone(),
            Paused {
                flow_id: flow.id,
                identity_id: session.identity_id,
                payload: fields,
                expires_at: kratos.now() + Duration::minutes(CONTINUITY_LIFESPAN_MINUTES),
            },
        );
        continuity = Some(set_cookie(CONTINUITY_COOKIE, &reference));
    }
    if flow.api || is_json_request(req) {
        let mut builder = HttpResponse::Forbidden();
        if let Some(cookie) = continuity {
            builder.insert_header(cookie);
        }
        builder.json(json!({
            "error": {
                "id": "session_refresh_required",
                "code": 403,
                "status": "Forbidden",
                "reason": "The login session is too old and thus not allowed to update these fields. Please re-authenticate.",
                "message": "The requested action was forbidden",
            },
            "redirect_browser_to": redirect_to,
        }))
    } else {
        let mut builder = redirect(&redirect_to);
        if let Some(cookie) = continuity {
            builder.insert_header(cookie);
        }
        builder.finish()
    }
}

async fn whoami(req: HttpRequest, kratos: web::Data<StandinKratos>) -> HttpResponse {
    match kratos.session_of(&req) {
        Some(session) => {
            let identity = kratos.identity(session.identity_id);
            HttpResponse::Ok()
                .insert_header((
                    "X-Kratos-Authenticated-Identity-Id",
                    session.identity_id.to_string(),
                ))
                .json(session.json(identity.as_ref(), false))
        }
        None => error(
            StatusCode::UNAUTHORIZED,
            Some("session_inactive"),
            "No valid session credentials found in the request.",
        ),
    }
}

async fn admin_identity(
    req: HttpRequest,
    id: web::Path<String>,
    kratos: web::Data<StandinKratos>,
) -> HttpResponse {
    let Some(identity) = Uuid::parse_str(&id).ok().and_then(|id| kratos.identity(id)) else {
        return error(StatusCode::NOT_FOUND, None, "Unable to locate the resource");
    };
    let mut json = identity.admin_json();
    if query(&req)
        .iter()
        .any(|(k, v)| k == "include_credential" && v == "password")
    {
        json["credentials"] = json!({"password": {
            "type": "password",
            "identifiers": [identity.email()],
            "config": {"hashed_password": identity.password_hash},
            "version": 0,
        }});
    }
    HttpResponse::Ok().json(json)
}

/// `PATCH /admin/identities/{id}` with a JSON Patch; `add`/`replace` of top-level fields is all Reclaim
/// uses.
async fn admin_patch(
    id: web::Path<String>,
    body: web::Json<Value>,
    kratos: web::Data<StandinKratos>,
) -> HttpResponse {
    let Some(id) = Uuid::parse_str(&id).ok() else {
        return error(StatusCode::NOT_FOUND, None, "Unable to locate the resource");
    };
    let mut state = kratos.state();
    let Some(identity) = state.identities.get_mut(&id) else {
        return error(StatusCode::NOT_FOUND, None, "Unable to locate the resource");
    };
    for operation in body.as_array().into_iter().flatten() {
        let op = operation["op"].as_str().unwrap_or_default();
        let path = operation["path"].as_str().unwrap_or_default();
        if op != "add" && op != "replace" {
            return error(
                StatusCode::BAD_REQUEST,
                None,
                &format!("unsupported op {op}"),
            );
        }
        match path {
            "/metadata_admin" => identity.metadata_admin = operation["value"].clone(),
            "/metadata_public" | "/traits" | "/state" => {
                identity.json[&path[1..]] = operation["value"].clone()
            }
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    None,
                    &format!("unsupported path {other}"),
                )
            }
        }
    }
    HttpResponse::Ok().json(identity.admin_json())
}
