//! The history store (DESIGN §3.2): checking a candidate costs one argon2 run per distinct (salt, params)
//! group, normally one, whatever the depth.
//!
//! - `kdf`: the keyed digest HMAC-SHA256(pepper, argon2id(password, identity salt, params)), [`PasswordDigest`],
//!   and the bounded pool every KDF run goes through ([`Kdf::run`], [`KdfError::Saturated`] → 503).
//! - `foreign`: imported PHC hashes (argon2, bcrypt, pbkdf2-sha256, scrypt), verified one by one.
//! - `store`: the `password_history` rows.
//!
//! Not here: policy (how deep, how long: `crate::policy`) and per-identity state (`crate::state`).

pub mod foreign;
pub mod kdf;
pub mod store;

pub use kdf::{Kdf, KdfError, KdfParams, PasswordDigest};

use crate::password::Password;
use crate::policy::ReuseMatch;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use store::{Entry, FOREIGN, KEYED};

/// What a check found in an identity's history.
#[derive(Debug, Default)]
pub struct Findings {
    /// The newest entry the candidate matched.
    pub reuse: Option<ReuseMatch>,
    /// Foreign entries the candidate matched, with the candidate's keyed digest to store in their place.
    pub rekey: Vec<i64>,
    /// The candidate's digest under the current parameters, when it was computed.
    pub current: Option<PasswordDigest>,
    /// Argon2 runs spent on keyed groups (for tests and benchmarks: 1 per distinct params).
    pub keyed_runs: usize,
}

/// Compares `password` with every entry: one KDF run per keyed params group, one verification per foreign
/// entry; every digest comparison is constant-time and none stops early.
pub async fn find(
    kdf: &Kdf,
    salt: &[u8],
    entries: &[Entry],
    password: &Password,
    now: DateTime<Utc>,
) -> Result<Findings, KdfError> {
    let mut findings = Findings::default();
    if entries.is_empty() {
        return Ok(findings);
    }
    let used = store::last_used(entries, now);
    let mut matched = vec![false; entries.len()];

    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        if entry.kind == KEYED {
            groups.entry(entry.params.as_str()).or_default().push(i);
        }
    }
    for (params, members) in groups {
        let Some(decoded) = KdfParams::decode(params) else {
            tracing::warn!(
                history.params = params,
                "history entries with unreadable parameters skipped"
            );
            continue;
        };
        let digest = kdf.digest(password, salt, decoded).await?;
        findings.keyed_runs += 1;
        for i in members {
            let stored = entries[i].digest.as_deref().unwrap_or_default();
            matched[i] |= digest.matches(stored);
        }
        if decoded == kdf.params() {
            findings.current = Some(digest);
        }
    }

    for (i, entry) in entries.iter().enumerate() {
        if entry.kind != FOREIGN {
            continue;
        }
        let Some(hash) = entry.foreign_hash.clone() else {
            continue;
        };
        let candidate = password.clone();
        if kdf
            .run(move || foreign::verify(&hash, candidate.expose().as_bytes()))
            .await?
        {
            matched[i] = true;
            findings.rekey.push(entry.id);
        }
    }
    if !findings.rekey.is_empty() && findings.current.is_none() {
        findings.current = Some(kdf.digest(password, salt, kdf.params()).await?);
    }

    findings.reuse = matched.iter().position(|m| *m).map(|rank| ReuseMatch {
        rank: u32::try_from(rank).unwrap_or(u32::MAX),
        last_used_at: used[rank],
    });
    Ok(findings)
}
