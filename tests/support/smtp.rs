//! A real SMTP server on loopback for the gateway tests: `tests/tools/smtp_server.py` (aiosmtpd), installed
//! by `.ci/tools`. Recipients named `reject…@` get 550, `tempfail-N…@` get 451 N times and are then
//! accepted; every accepted message is appended to a JSON-lines mailbox the test reads. The server binds
//! port 0 itself and reports the port it holds, within [`super::peer::START_DEADLINE`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const PYTHON: &str = "tests/tools/.venv/bin/python";
const SCRIPT: &str = "tests/tools/smtp_server.py";

pub struct SmtpServer {
    pub port: u16,
    mailbox: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

/// One message as the server received it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ReceivedMail {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body as sent.
    pub data: String,
}

impl ReceivedMail {
    /// A header's value, with folded continuation lines joined.
    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        let mut lines = self.data.lines().take_while(|l| !l.is_empty());
        let first = lines.find(|l| l.to_ascii_lowercase().starts_with(&prefix))?;
        let mut value = first[prefix.len()..].trim().to_string();
        for continuation in lines.take_while(|l| l.starts_with([' ', '\t'])) {
            value.push(' ');
            value.push_str(continuation.trim());
        }
        Some(value)
    }
}

impl SmtpServer {
    pub fn start() -> Self {
        assert!(
            Path::new(PYTHON).exists(),
            "the test SMTP server needs aiosmtpd in {PYTHON}: run .ci/tools"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let mailbox = dir.path().join("mailbox.jsonl");
        let mut child = Command::new(PYTHON)
            .arg(SCRIPT)
            .arg("--mailbox")
            .arg(&mailbox)
            .stdout(Stdio::piped())
            .stdin(Stdio::piped())
            .spawn()
            .expect("start the test SMTP server (run .ci/tools)");
        let line =
            super::peer::first_line("the SMTP server", &mut child, super::peer::START_DEADLINE)
                .unwrap_or_else(|failure| panic!("{failure}"));
        let port = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the SMTP server did not start: {line:?}"));
        Self {
            port,
            mailbox,
            child,
            _dir: dir,
        }
    }

    pub fn messages(&self) -> Vec<ReceivedMail> {
        std::fs::read_to_string(&self.mailbox)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("mailbox line"))
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
