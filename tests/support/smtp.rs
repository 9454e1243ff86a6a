//! A real SMTP server on loopback for the gateway tests: `tests/tools/smtp_server.py` (aiosmtpd), installed
//! by `.ci/tools`. Recipients named `reject…@` get 550, `tempfail-N…@` get 451 N times and are then
//! accepted; every accepted message is appended to a JSON-lines mailbox the test reads. The server binds
//! port 0 itself and reports the port it holds, within [`super::peer::START_DEADLINE`].
//!
//! In its secure mode ([`SmtpServer::start_secure`]) STARTTLS is required, with a certificate from a
//! throwaway CA (trustme) whose certificate the gateway is given as `gateway.smtp.ca_file`, and AUTH is
//! required. With events on, it reports `HELD <rcpt>` when a message to a `hold…@` recipient arrives (and
//! keeps it until [`SmtpServer::release`]) and `ACCEPTED <rcpt>` for every accepted message, so tests wait
//! on what the server saw instead of sleeping.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;
use tokio::sync::mpsc;

const PYTHON: &str = "tests/tools/.venv/bin/python";
const SCRIPT: &str = "tests/tools/smtp_server.py";
/// Bound of every wait on the server: far above any normal run, so reaching it means the event never came.
const EVENT_BOUND: Duration = Duration::from_secs(60);

/// How the server is started; the default is plain SMTP without AUTH or events.
#[derive(Debug, Default, Clone, Copy)]
pub struct SmtpOptions<'a> {
    /// STARTTLS required, with a certificate from a throwaway CA written next to the mailbox.
    pub tls: bool,
    /// AUTH required with this user and password.
    pub auth: Option<(&'a str, &'a str)>,
    /// `HELD` / `ACCEPTED` event lines, read with [`SmtpServer::next_event`].
    pub events: bool,
}

pub struct SmtpServer {
    pub port: u16,
    /// The throwaway CA's certificate (written only with `tls`).
    pub ca_file: PathBuf,
    /// The user and password AUTH requires (empty without `auth`).
    pub user: String,
    pub password: String,
    mailbox: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::UnboundedReceiver<String>,
    _dir: tempfile::TempDir,
}

/// One message as the server received it, with how it was received.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ReceivedMail {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body as sent.
    pub data: String,
    /// The message came over TLS (after STARTTLS).
    pub tls: bool,
    /// The user the client authenticated as.
    pub auth: Option<String>,
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
    /// Plain SMTP, no AUTH, no events.
    pub fn start() -> Self {
        Self::start_with(SmtpOptions::default())
    }

    /// The secure mode: STARTTLS and AUTH as `user`/`password` required, events on.
    pub fn start_secure(user: &str, password: &str) -> Self {
        Self::start_with(SmtpOptions {
            tls: true,
            auth: Some((user, password)),
            events: true,
        })
    }

    pub fn start_with(options: SmtpOptions<'_>) -> Self {
        Self::start_on(0, options)
    }

    /// Listens on `port` (0: one the system picks), for a server that comes up where a test held a closed
    /// port ([`super::ports::closed_port`]) until then.
    pub fn start_on(port: u16, options: SmtpOptions<'_>) -> Self {
        assert!(
            Path::new(PYTHON).exists(),
            "the test SMTP server needs aiosmtpd and trustme in {PYTHON}: run .ci/tools"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let mailbox = dir.path().join("mailbox.jsonl");
        let mut command = Command::new(PYTHON);
        command
            .arg(SCRIPT)
            .arg("--mailbox")
            .arg(&mailbox)
            .arg("--port")
            .arg(port.to_string());
        if options.tls {
            command.arg("--tls-dir").arg(dir.path());
        }
        if let Some((user, password)) = options.auth {
            command.arg("--auth").arg(format!("{user}:{password}"));
        }
        if options.events {
            command.arg("--events");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stdin(Stdio::piped())
            .spawn()
            .expect("start the test SMTP server (run .ci/tools)");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        // The first line (`READY <port>`) is awaited with a deadline; every later line is an event.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (sender, events) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let mut lines = stdout.lines().map_while(Result::ok);
            let _ = ready_tx.send(lines.next());
            for line in lines {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let line = match ready_rx.recv_timeout(super::peer::START_DEADLINE) {
            Ok(Some(line)) => line,
            outcome => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the SMTP server did not say it was ready ({outcome:?}); killed it")
            }
        };
        let port = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the SMTP server did not start: {line:?}"));
        let (user, password) = options.auth.unwrap_or_default();
        Self {
            port,
            ca_file: dir.path().join("ca.pem"),
            user: user.into(),
            password: password.into(),
            mailbox,
            stdin: child.stdin.take(),
            child,
            events,
            _dir: dir,
        }
    }

    /// Waits for the next event line starting with `prefix` (`HELD`, `ACCEPTED`) and returns its argument;
    /// needs `events`.
    pub async fn next_event(&mut self, prefix: &str) -> String {
        loop {
            let line = tokio::time::timeout(EVENT_BOUND, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no {prefix} event from the SMTP server"))
                .unwrap_or_else(|| panic!("the SMTP server stopped before {prefix}"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_string();
            }
        }
    }

    /// Lets held messages through.
    pub fn release(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(b"RELEASE\n").expect("release");
        stdin.flush().expect("flush");
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
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
