//! `reclaim import hashes FILE.csv`: password hashes kept in another system, imported so that Kratos's password
//! migration hook can verify them at each user's first login.
//!
//! Columns `identifier,phc_hash[,changed_at]`: the identifier is a Kratos identity id (UUID) or a login
//! identifier (an email...), the hash a PHC string our foreign verifier accepts, `changed_at` RFC 3339 (now when
//! absent). A hash may be quoted or not (its commas are put back). A first line `identifier,...` is a header. Bad rows are reported with their line and skipped;
//! identifiers imported before are skipped, so importing a file twice imports nothing new the second time.
//!
//! `reclaim import kratos` (the current hashes of Kratos's identities, page by page) lives in [`kratos`], its
//! resume point in `checkpoint`.

mod checkpoint;
pub mod kratos;

use crate::passwords::{LegacyIdentifier, LegacyImported, Passwords, PasswordsError};
use crate::policy::check_change_time;
use anyhow::Context;
use chrono::{DateTime, Utc};
use reclaim_common::{Db, Settings};
use std::path::Path;

/// A row that was not imported, and why (never the hash itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// 1-based line in the file.
    pub line: u64,
    pub problem: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub imported: usize,
    /// Identifiers imported before.
    pub skipped: usize,
    pub errors: Vec<BadRow>,
}

impl std::fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "imported {}, skipped {} (already imported), errors {}",
            self.imported,
            self.skipped,
            self.errors.len()
        )
    }
}

/// One parsed row.
struct Row {
    line: u64,
    identifier: LegacyIdentifier,
    hash: String,
    changed_at: DateTime<Utc>,
}

/// Imports the CSV `text` through `passwords`.
pub async fn import_hashes(
    passwords: &Passwords,
    text: &[u8],
) -> Result<ImportSummary, PasswordsError> {
    let mut summary = ImportSummary::default();
    let now = passwords.clock().now();
    for parsed in parse(text, now) {
        let row = match parsed {
            Ok(row) => row,
            Err(bad) => {
                summary.errors.push(bad);
                continue;
            }
        };
        match passwords
            .import_legacy_hash(&row.identifier, &row.hash, row.changed_at)
            .await
        {
            Ok(LegacyImported::New) => summary.imported += 1,
            Ok(LegacyImported::AlreadyImported) => summary.skipped += 1,
            Err(PasswordsError::UnsupportedHash(problem)) => summary.errors.push(BadRow {
                line: row.line,
                problem: format!("phc_hash {problem}"),
            }),
            Err(other) => return Err(other),
        }
    }
    tracing::info!(
        imported = summary.imported,
        skipped = summary.skipped,
        errors = summary.errors.len(),
        "password hashes imported"
    );
    Ok(summary)
}

/// What the CLI runs: the file at `path` into the configured database (migrated first).
pub async fn import_hashes_file(settings: &Settings, path: &Path) -> anyhow::Result<ImportSummary> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let db = {
        let settings = settings.database.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Db> {
            let db = Db::connect(&settings)?;
            db.migrate()?;
            Ok(db)
        })
        .await??
    };
    let passwords = Passwords::new(settings, db, &prometheus::Registry::new())?;
    Ok(import_hashes(&passwords, &text).await?)
}

fn parse(text: &[u8], now: DateTime<Utc>) -> Vec<Result<Row, BadRow>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text);
    let mut rows = Vec::new();
    for record in reader.byte_records() {
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                let line = error.position().map_or(0, |p| p.line());
                rows.push(Err(BadRow {
                    line,
                    problem: format!("unreadable CSV: {}", error.kind_message()),
                }));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if line == 1
            && record
                .get(0)
                .is_some_and(|f| f.trim_ascii() == b"identifier")
        {
            continue;
        }
        if record.len() == 1 && record.get(0).is_some_and(|f| f.trim_ascii().is_empty()) {
            continue;
        }
        rows.push(row(&record, line, now).map_err(|problem| BadRow { line, problem }));
    }
    rows
}

fn row(record: &csv::ByteRecord, line: u64, now: DateTime<Utc>) -> Result<Row, String> {
    if record.len() < 2 {
        return Err(format!(
            "expected identifier,phc_hash[,changed_at], found {} column",
            record.len()
        ));
    }
    let field = |i: usize, name: &str| -> Result<String, String> {
        let bytes = record.get(i).unwrap_or_default();
        std::str::from_utf8(bytes)
            .map(|s| s.trim().to_string())
            .map_err(|_| format!("{name} is not valid UTF-8"))
    };
    let identifier =
        LegacyIdentifier::parse(&field(0, "identifier")?).map_err(|e| format!("identifier {e}"))?;
    // PHC strings hold commas (`m=19456,t=2,p=1`), so an unquoted hash spans several columns. The last column
    // is `changed_at` when it starts like a time: no PHC segment after a comma starts with a digit.
    let last = field(record.len() - 1, "changed_at")?;
    let has_time = record.len() > 2 && last.starts_with(|c: char| c.is_ascii_digit());
    let hash_end = if has_time {
        record.len() - 1
    } else {
        record.len()
    };
    let hash = (1..hash_end)
        .map(|i| field(i, "phc_hash"))
        .collect::<Result<Vec<_>, _>>()?
        .join(",");
    if hash.is_empty() {
        return Err("phc_hash must not be empty".into());
    }
    let changed_at = if has_time {
        let at = DateTime::parse_from_rfc3339(&last)
            .map_err(|e| format!("changed_at is not an RFC 3339 time: {e}"))?;
        check_change_time(at.with_timezone(&Utc), now).map_err(|e| format!("changed_at {e}"))?
    } else {
        now
    };
    Ok(Row {
        line,
        identifier,
        hash,
        changed_at,
    })
}

/// A csv error's kind without the record's content.
trait KindMessage {
    fn kind_message(&self) -> String;
}

impl KindMessage for csv::Error {
    fn kind_message(&self) -> String {
        match self.kind() {
            csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".into(),
            csv::ErrorKind::UnequalLengths { .. } => "unequal row lengths".into(),
            _ => "malformed row".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_parsed_and_bad_ones_named_by_line() {
        let now = Utc::now();
        let text = b"identifier,phc_hash,changed_at\n\
            A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11,$2b$04$abc\n\
            ,$2b$04$abc\n\
            user@example.org\n\
            user@example.org,$2b$04$abc,2020-13-01\n\
            user@example.org,$argon2id$v=19$m=8192,t=1,p=1$c2FsdA$aGFzaA,2020-01-01T00:00:00Z\n";
        let rows = parse(text, now);
        assert_eq!(rows.len(), 5);
        let first = rows[0].as_ref().expect("good row");
        assert_eq!(first.line, 2);
        assert_eq!(
            first.identifier.as_str(),
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
        );
        let bad: Vec<(u64, String)> = rows
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(|b| (b.line, b.problem.clone()))
            .collect();
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert_eq!(bad[0].0, 3);
        assert!(bad[0].1.starts_with("identifier"), "{bad:?}");
        assert_eq!(bad[1].0, 4);
        assert!(bad[1].1.contains("expected identifier,phc_hash"), "{bad:?}");
        assert_eq!(bad[2].0, 5);
        assert!(bad[2].1.starts_with("changed_at"), "{bad:?}");
        let last = rows[4].as_ref().expect("good row");
        assert_eq!(last.changed_at.to_rfc3339(), "2020-01-01T00:00:00+00:00");
        assert_eq!(last.hash, "$argon2id$v=19$m=8192,t=1,p=1$c2FsdA$aGFzaA");
    }
}
