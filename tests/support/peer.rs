//! Starting a peer process (the SMTP server, Prism) with a deadline: a peer that never says it is ready is
//! killed and the test fails with a message naming it, instead of the run hanging on a blocking read.

use std::io::{BufRead, BufReader, Read};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a peer may take to start; generous, since six builds may share the machine's two cores.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// Waits up to `deadline` for the first line `child` prints on its (piped) stdout. On timeout, or when the
/// child closes stdout first, the child is killed and reaped and the error says what happened.
pub fn first_line(what: &str, child: &mut Child, deadline: Duration) -> Result<String, String> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| format!("{what}: stdout is not piped"))?;
    wait_for_line(what, child, stdout, deadline, |_| true)
}

/// Waits up to `deadline` for a line of `output` (the child's piped stdout or stderr) that is `wanted`.
/// The rest of the output is read and dropped in the background, so the child never blocks on a full pipe.
/// On timeout, or when the output ends first, the child is killed and reaped and the error says so.
pub fn wait_for_line(
    what: &str,
    child: &mut Child,
    output: impl Read + Send + 'static,
    deadline: Duration,
    wanted: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let (tx, rx) = mpsc::channel();
    // Reads block; they run on their own thread so the wait can end. Killing the child ends the output and
    // the thread.
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let failed = line.is_err();
            let _ = tx.send(line);
            if failed {
                return;
            }
        }
    });
    let until = Instant::now() + deadline;
    let failure = loop {
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(Ok(line)) if wanted(&line) => return Ok(line),
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => break format!("{what}: cannot read its output: {e}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break format!("{what} closed its output without saying it was ready")
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                break format!("{what} did not say it was ready within {deadline:?}; killed it")
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    Err(failure)
}

#[test]
fn a_peer_that_never_gets_ready_is_killed_at_the_deadline() {
    let mut child = std::process::Command::new("sleep")
        .arg("600")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start sleep");
    let failure = first_line("sleep", &mut child, Duration::from_millis(200)).expect_err("no line");
    assert!(failure.contains("did not say it was ready"), "{failure}");
    assert!(
        child.try_wait().expect("status").is_some(),
        "the silent peer was killed and reaped"
    );
}

#[test]
fn a_peer_that_exits_silently_is_reported_at_once() {
    let mut child = std::process::Command::new("true")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start true");
    let failure = first_line("true", &mut child, START_DEADLINE).expect_err("no line");
    assert!(failure.contains("closed its output"), "{failure}");
}
