//! Forwarding to Kratos's public API: method, path, query, headers and body as they came, the answer as it
//! came (redirects are not followed, nothing is decompressed), minus the hop-by-hop headers of RFC 9110
//! §7.6.1, plus `X-Forwarded-For/Proto/Host`.

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt;
use std::time::Duration;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), with `Proxy-Connection` that
/// old clients still send.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// How many body chunks may wait between the client's connection and Kratos's.
const BODY_CHANNEL_CHUNKS: usize = 16;

/// The HTTP client that talks to Kratos, with its base URL.
#[derive(Clone)]
pub struct Upstream {
    base: url::Url,
    timeout: Duration,
    client: reqwest::Client,
}

/// What the guard forwards as the request body.
pub enum Body {
    None,
    /// Read already (a password submission the guard looked at), sent byte for byte.
    Buffered(Bytes),
    /// Streamed from the client as it arrives; `head` holds chunks read before the guard decided not to look.
    Streamed {
        head: Vec<Bytes>,
        rest: web::Payload,
    },
}

/// Kratos did not answer.
#[derive(Debug, thiserror::Error)]
#[error("Kratos did not answer: {0}")]
pub struct UpstreamError(#[from] reqwest::Error);

impl Upstream {
    pub fn new(public_url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let mut base = url::Url::parse(public_url)?;
        // Joining keeps the base's own path prefix (Kratos behind a path, e.g. https://example.org/kratos).
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Self {
            client: client(timeout)?,
            base,
            timeout,
        })
    }

    /// The same upstream with a connection pool of its own, for one guard worker. Building the client
    /// again cannot fail where the first build succeeded; if it ever did, the worker shares this pool.
    pub fn for_worker(&self) -> Self {
        Self {
            client: client(self.timeout).unwrap_or_else(|_| self.client.clone()),
            ..self.clone()
        }
    }

    fn url(&self, path_and_query: &str) -> url::Url {
        let relative = path_and_query.trim_start_matches('/');
        self.base
            .join(relative)
            .unwrap_or_else(|_| self.base.clone())
    }

    /// Kratos's `/sessions/whoami` for the credentials the client sent (cookie, session token, bearer).
    pub async fn whoami(&self, from: &HttpRequest) -> Result<reqwest::Response, UpstreamError> {
        self.get_as(from, "/sessions/whoami").await
    }

    /// A GET of `path_and_query` on Kratos's public API with the credentials the client sent (cookie,
    /// session token, bearer), asking for JSON.
    pub async fn get_as(
        &self,
        from: &HttpRequest,
        path_and_query: &str,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut credentials = reqwest::header::HeaderMap::new();
        for name in ["cookie", "authorization", "x-session-token"] {
            for value in from.headers().get_all(name) {
                if let Ok(value) = reqwest::header::HeaderValue::from_bytes(value.as_bytes()) {
                    credentials.append(name, value);
                }
            }
        }
        Ok(self
            .client
            .get(self.url(path_and_query))
            .header(reqwest::header::ACCEPT, "application/json")
            .headers(credentials)
            .send()
            .await?)
    }

    /// The client's request as it goes on to Kratos: same method, path and query, its headers as Kratos
    /// should see them.
    fn onward(&self, req: &HttpRequest) -> reqwest::RequestBuilder {
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
            .unwrap_or(reqwest::Method::GET);
        self.client
            .request(method, self.url(path_and_query))
            .headers(forwarded_headers(req))
    }

    /// Sends the client's request on to Kratos and answers with Kratos's response, streamed back.
    pub async fn forward(
        &self,
        req: &HttpRequest,
        body: Body,
    ) -> Result<HttpResponse, UpstreamError> {
        let request = match body {
            Body::None => self.onward(req),
            Body::Buffered(bytes) => self.onward(req).body(bytes),
            Body::Streamed { head, rest } => self.onward(req).body(stream_body(head, rest)),
        };
        let answer = request.send().await?;
        Ok(respond(answer))
    }

    /// Like [`Upstream::forward`] for a request without a body, but Kratos's answer is read whole and handed
    /// to `change` before it goes back, with Kratos's status and headers (for the few answers the guard adds
    /// to).
    pub async fn forward_changed(
        &self,
        req: &HttpRequest,
        change: impl FnOnce(Bytes) -> Bytes,
    ) -> Result<HttpResponse, UpstreamError> {
        let answer = self.onward(req).send().await?;
        let mut builder = response_head(&answer);
        let body = answer.bytes().await?;
        Ok(builder.body(change(body)))
    }
}

fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .read_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
}

/// The client's headers as Kratos should see them.
fn forwarded_headers(req: &HttpRequest) -> reqwest::header::HeaderMap {
    let connection_named = named_by_connection(req.headers());
    let mut out = reqwest::header::HeaderMap::new();
    for (name, value) in req.headers() {
        let lower = name.as_str();
        if lower == "host"
            || HOP_BY_HOP.contains(&lower)
            || connection_named.iter().any(|n| n == lower)
        {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()),
            reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            out.append(name, value);
        }
    }
    let info = req.connection_info();
    let peer = req.peer_addr().map(|a| a.ip().to_string());
    if let Some(peer) = peer {
        let chain = match req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(earlier) if !earlier.trim().is_empty() => format!("{earlier}, {peer}"),
            _ => peer,
        };
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&chain) {
            out.insert("x-forwarded-for", value);
        }
    }
    // An outer proxy's Proto and Host describe the client's view better than ours: keep them.
    if !out.contains_key("x-forwarded-proto") {
        if let Ok(value) = reqwest::header::HeaderValue::from_str(info.scheme()) {
            out.insert("x-forwarded-proto", value);
        }
    }
    if !out.contains_key("x-forwarded-host") {
        if let Some(host) = req.headers().get(header::HOST) {
            if let Ok(value) = reqwest::header::HeaderValue::from_bytes(host.as_bytes()) {
                out.insert("x-forwarded-host", value);
            }
        }
    }
    out
}

/// Header names listed in `Connection`, which are hop-by-hop too.
fn named_by_connection(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

/// The client's body as a stream Kratos's connection can read from another thread: actix's payload is bound
/// to its worker thread, so a local task moves it chunk by chunk through a bounded channel (back-pressure
/// both ways).
fn stream_body(head: Vec<Bytes>, mut rest: web::Payload) -> reqwest::Body {
    let (sender, receiver) =
        tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(BODY_CHANNEL_CHUNKS);
    actix_web::rt::spawn(async move {
        for chunk in head {
            if sender.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
        while let Some(chunk) = rest.next().await {
            let item = chunk.map_err(|e| std::io::Error::other(e.to_string()));
            let failed = item.is_err();
            if sender.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    reqwest::Body::wrap_stream(stream)
}

/// Kratos's status and headers, without the hop-by-hop ones and without `Content-Length` (set again from
/// the body that goes back).
fn response_head(answer: &reqwest::Response) -> actix_web::HttpResponseBuilder {
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut builder = HttpResponse::build(status);
    let connection_named: Vec<String> = answer
        .headers()
        .get_all(reqwest::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in answer.headers() {
        let lower = name.as_str();
        if HOP_BY_HOP.contains(&lower)
            || connection_named.iter().any(|n| n == lower)
            || lower == "content-length"
        {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            builder.append_header((name, value));
        }
    }
    builder
}

/// Kratos's answer, headers and body as they came.
fn respond(answer: reqwest::Response) -> HttpResponse {
    let mut builder = response_head(&answer);
    let status = answer.status().as_u16();
    let bodiless = status == 204 || status == 304;
    if bodiless {
        return builder.finish();
    }
    if let Some(length) = answer.content_length() {
        // Keep Kratos's Content-Length rather than re-chunking the body.
        builder.no_chunking(length);
    }
    builder.streaming(answer.bytes_stream())
}

/// Whether a request carries a body: a Content-Length above 0, or a Transfer-Encoding.
pub fn has_body(req: &HttpRequest) -> bool {
    let headers = req.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}
