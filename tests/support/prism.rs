//! Twilio's own OpenAPI description served by the Prism mock server: every request is validated against
//! Twilio's spec and a violation is answered with 422 (`--errors`), so an accepted request is a valid one.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Prism compiles Twilio's large spec before it listens: slower than the other peers.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// Prism serving `twilio_api_v2010.json` on a loopback port it picked; killed when dropped.
pub struct Prism {
    pub url: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Twilio's spec from the shared contracts; `TWILIO_OPENAPI_SPEC` points elsewhere when needed.
pub fn twilio_spec() -> PathBuf {
    std::env::var_os("TWILIO_OPENAPI_SPEC")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_path("../shared/contracts/twilio/twilio_api_v2010.json"))
}

impl Prism {
    /// Starts Prism and waits until it listens. Panics with a hint when the tool or the spec is missing.
    pub fn start_twilio() -> Prism {
        let binary = repo_path("tests/tools/node_modules/.bin/prism");
        assert!(
            binary.exists(),
            "Prism is not installed at {}: run .ci/tools",
            binary.display()
        );
        let spec = twilio_spec();
        assert!(
            spec.exists(),
            "Twilio's OpenAPI spec is missing at {} (set TWILIO_OPENAPI_SPEC)",
            spec.display()
        );
        // Port 0: Prism binds a free port itself and prints it, so no port is chosen here and released for
        // another process to take before Prism binds it.
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("prism.log");
        let log_file = std::fs::File::create(&log).expect("prism log file");
        let child = Command::new(&binary)
            .args(["mock", "--errors", "--host", "127.0.0.1", "--port", "0"])
            .arg(&spec)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("start prism");
        let mut prism = Prism {
            url: String::new(),
            child,
            log,
            _dir: dir,
        };
        prism.url = prism.wait_until_listening();
        prism
    }

    /// Waits, at most [`START_DEADLINE`], for Prism's "is listening on <url>" line and answers that URL.
    fn wait_until_listening(&mut self) -> String {
        const LISTENING: &str = "Prism is listening on ";
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let log = self.log();
            if let Some(url) = log
                .lines()
                .find_map(|l| l.split_once(LISTENING))
                .and_then(|(_, rest)| rest.split_whitespace().next())
            {
                return url.trim_end_matches('/').to_string();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Prism exited with {status} before listening:\n{log}");
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("Prism did not listen within {START_DEADLINE:?}; killed it:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What Prism printed: its validation findings name the offending request fields.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prism behind a recorder: each request is kept and forwarded to Prism as it came, and Prism's answer goes
/// back as it came, so a test sees what the gateway sent while Twilio's spec still judges it.
pub struct RecordingPrism {
    pub url: String,
    pub prism: Prism,
    requests: std::sync::Arc<std::sync::Mutex<Vec<super::twilio_faults::Recorded>>>,
}

struct Forward {
    to: String,
    client: reqwest::Client,
    requests: std::sync::Arc<std::sync::Mutex<Vec<super::twilio_faults::Recorded>>>,
}

impl RecordingPrism {
    pub async fn start() -> RecordingPrism {
        use actix_web::{web, App, HttpServer};
        let prism = Prism::start_twilio();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let forward = web::Data::new(Forward {
            to: prism.url.clone(),
            client: reqwest::Client::new(),
            requests: requests.clone(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(forward.clone())
                .default_service(web::to(forward_to_prism))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind the recorder");
        let port = server.addrs()[0].port();
        tokio::spawn(server.run());
        RecordingPrism {
            url: format!("http://127.0.0.1:{port}"),
            prism,
            requests,
        }
    }

    /// What the gateway sent, oldest first.
    pub fn requests(&self) -> Vec<super::twilio_faults::Recorded> {
        self.requests.lock().expect("lock").clone()
    }
}

async fn forward_to_prism(
    request: actix_web::HttpRequest,
    body: actix_web::web::Bytes,
    forward: actix_web::web::Data<Forward>,
) -> actix_web::HttpResponse {
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    forward
        .requests
        .lock()
        .expect("lock")
        .push(super::twilio_faults::Recorded {
            method: request.method().to_string(),
            path: path.clone(),
            headers: headers.clone(),
            form: url::form_urlencoded::parse(&body).into_owned().collect(),
        });
    let method = reqwest::Method::from_bytes(request.method().as_str().as_bytes()).expect("method");
    let mut outgoing = forward
        .client
        .request(method, format!("{}{path}", forward.to))
        .body(body.to_vec());
    for (name, value) in &headers {
        if !name.eq_ignore_ascii_case("host") && !name.eq_ignore_ascii_case("content-length") {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = outgoing.send().await.expect("Prism answers");
    let status = actix_web::http::StatusCode::from_u16(answer.status().as_u16()).expect("status");
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let bytes = answer.bytes().await.expect("Prism's body");
    actix_web::HttpResponse::build(status)
        .content_type(content_type)
        .body(bytes.to_vec())
}
