//! A recording stand-in for Kratos's public API behind the edge guard: it keeps every request it received
//! (method, path and query, headers, body), answers `/sessions/whoami` for the session tokens a test
//! registers, and has routes for the pass-through cases (cookies, redirects, large bodies).

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A session token for which `/sessions/whoami` answers 500 (Kratos failing).
pub const WHOAMI_FAILS: &str = "whoami-fails";

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    seen: Vec<Seen>,
    /// Session token (X-Session-Token, bearer, or `ory_kratos_session` cookie) → identity JSON.
    sessions: HashMap<String, Value>,
}

#[derive(Clone)]
pub struct Upstream {
    pub url: String,
    shared: Arc<Mutex<Shared>>,
}

impl Upstream {
    pub async fn start() -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let data = web::Data::new(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .route("/sessions/whoami", web::get().to(whoami))
                .route("/redirect", web::get().to(redirect))
                .route("/large", web::get().to(large))
                .default_service(web::to(record))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind upstream");
        let port = server.addrs()[0].port();
        tokio::spawn(server.run());
        Self {
            url: format!("http://127.0.0.1:{port}"),
            shared,
        }
    }

    /// A session `token` for `identity` (a Kratos identity JSON: id, schema_id, traits, metadata_public);
    /// `methods` are the session's authentication methods (`password`, `code_recovery`).
    pub fn add_session(&self, token: &str, identity: Value, methods: &[&str]) {
        let session = json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "active": true,
            "authenticated_at": chrono::Utc::now(),
            "authentication_methods": methods.iter().map(|m| json!({"method": m, "aal": "aal1"})).collect::<Vec<_>>(),
            "identity": identity,
        });
        self.shared
            .lock()
            .expect("lock")
            .sessions
            .insert(token.to_string(), session);
    }

    /// Requests received on `path` (without the query), oldest first.
    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.shared
            .lock()
            .expect("lock")
            .seen
            .iter()
            .filter(|s| s.path_and_query.split('?').next() == Some(path))
            .cloned()
            .collect()
    }
}

fn seen_of(req: &HttpRequest, body: &[u8]) -> Seen {
    Seen {
        method: req.method().to_string(),
        path_and_query: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    }
}

async fn record(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Arc<Mutex<Shared>>>,
) -> HttpResponse {
    let seen = seen_of(&req, &body);
    let length = seen.body.len();
    shared.lock().expect("lock").seen.push(seen);
    HttpResponse::Ok()
        .insert_header(("X-Upstream", "kratos-stand-in"))
        .json(json!({"received_bytes": length, "path": req.path()}))
}

async fn whoami(req: HttpRequest, shared: web::Data<Arc<Mutex<Shared>>>) -> HttpResponse {
    let seen = seen_of(&req, b"");
    let token = seen
        .header("x-session-token")
        .map(str::to_string)
        .or_else(|| {
            seen.header("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .map(str::to_string)
        })
        .or_else(|| {
            seen.header("cookie").and_then(|cookies| {
                cookies
                    .split(';')
                    .find_map(|c| c.trim().strip_prefix("ory_kratos_session="))
                    .map(str::to_string)
            })
        });
    let mut shared = shared.lock().expect("lock");
    shared.seen.push(seen);
    if token.as_deref() == Some(WHOAMI_FAILS) {
        return HttpResponse::InternalServerError().json(json!({"error": {"code": 500}}));
    }
    match token.and_then(|t| shared.sessions.get(&t).cloned()) {
        Some(session) => HttpResponse::Ok().json(session),
        None => HttpResponse::Unauthorized()
            .json(json!({"error": {"code": 401, "status": "Unauthorized"}})),
    }
}

async fn redirect() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("Location", "/self-service/settings/browser?return_to=x"))
        .append_header(("Set-Cookie", "csrf_token_abc=one; Path=/; HttpOnly"))
        .append_header(("Set-Cookie", "ory_kratos_session=two; Path=/; HttpOnly"))
        .finish()
}

/// 4 MiB of a known pattern, streamed.
async fn large() -> HttpResponse {
    let chunks = (0..64u8).map(|i| Ok::<_, std::io::Error>(web::Bytes::from(vec![i; 64 * 1024])));
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .streaming(futures_util::stream::iter(chunks))
}
