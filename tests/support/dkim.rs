//! DKIM verification by dkimpy (`tests/tools/dkim_verify.py`, installed by `.ci/tools`), an implementation
//! independent of the one that signs (lettre): a signature the gateway gets wrong fails here.

use std::io::Write;
use std::process::{Command, Stdio};

const PYTHON: &str = "tests/tools/.venv/bin/python";
const SCRIPT: &str = "tests/tools/dkim_verify.py";

/// Verifies `message` (as the SMTP server received it) against the public half of the RSA key in
/// `key_file`, published as `selector._domainkey.domain`. `Err` carries dkimpy's reasons.
pub fn verify(message: &str, key_file: &str, selector: &str, domain: &str) -> Result<(), String> {
    assert!(
        std::path::Path::new(PYTHON).exists(),
        "the DKIM verifier needs dkimpy in {PYTHON}: run .ci/tools"
    );
    let mut child = Command::new(PYTHON)
        .arg(SCRIPT)
        .args([
            "--key",
            key_file,
            "--selector",
            selector,
            "--domain",
            domain,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the DKIM verifier (run .ci/tools)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(message.as_bytes())
        .expect("write the message to the verifier");
    let output = child.wait_with_output().expect("run the DKIM verifier");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    match output.status.code() {
        Some(0) if said.trim() == "PASS" => Ok(()),
        Some(1) => Err(said),
        _ => panic!(
            "the DKIM verifier failed to run ({}): {said}",
            output.status
        ),
    }
}
