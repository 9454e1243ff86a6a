//! Twilio's own OpenAPI description served by the Prism mock server: every request is validated against
//! Twilio's spec and a violation is answered with 422 (`--errors`), so an accepted request is a valid one.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Prism serving `twilio_api_v2010.json` on a free loopback port; killed when dropped.
pub struct Prism {
    pub url: String,
    child: Child,
    log: PathBuf,
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
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::env::temp_dir().join(format!("reclaim-prism-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("prism log file");
        let child = Command::new(&binary)
            .args(["mock", "--errors", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg(&spec)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("start prism");
        let mut prism = Prism {
            url: format!("http://127.0.0.1:{port}"),
            child,
            log,
        };
        prism.wait_until_listening(port);
        prism
    }

    fn wait_until_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "Prism exited with {status} before listening:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "Prism did not listen within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
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
        let _ = std::fs::remove_file(&self.log);
    }
}
