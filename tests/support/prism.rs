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
