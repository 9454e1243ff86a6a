//! A fresh database per test: a temporary SQLite file, or a new PostgreSQL database on the server named by
//! `TEST_DATABASE_URL` (dropped again when the test ends).
//!
//! `TEST_DATABASE_URL` unset or empty means SQLite; a `postgres://`/`postgresql://` URL means PostgreSQL;
//! anything else stops the test, so a typo never turns a PostgreSQL run into a second SQLite run.

use diesel::{Connection, PgConnection, RunQueryDsl};

pub struct TestDatabase {
    pub url: String,
    pub backend: &'static str,
    admin_url: Option<String>,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub fn fresh() -> Self {
        match expected_backend() {
            "postgres" => Self::postgres(
                std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL is set"),
            ),
            _ => Self::sqlite(),
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.backend == "postgres"
    }

    fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("reclaim.db").display());
        Self {
            url,
            backend: "sqlite",
            admin_url: None,
            name: String::new(),
            _dir: Some(dir),
        }
    }

    fn postgres(admin_url: String) -> Self {
        let name = format!("reclaim_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::establish(&admin_url).expect("connect to TEST_DATABASE_URL");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .expect("create database");
        let mut url = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL is a URL");
        url.set_path(&name);
        Self {
            url: url.to_string(),
            backend: "postgres",
            admin_url: Some(admin_url),
            name,
            _dir: None,
        }
    }
}

/// The backend `TEST_DATABASE_URL` asks for: `"sqlite"` or `"postgres"`. Panics on any other scheme.
pub fn expected_backend() -> &'static str {
    backend_for(std::env::var("TEST_DATABASE_URL").ok().as_deref())
        .unwrap_or_else(|problem| panic!("{problem}"))
}

fn backend_for(url: Option<&str>) -> Result<&'static str, String> {
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        return Ok("sqlite");
    };
    // Only the scheme goes into the message: the rest of the URL may hold a password.
    match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("postgres" | "postgresql") => Ok("postgres"),
        scheme => Err(format!(
            "TEST_DATABASE_URL must be unset (SQLite) or a postgres:// URL, not scheme {:?}",
            scheme.unwrap_or("(none)")
        )),
    }
}

#[test]
fn test_database_url_picks_the_backend_and_refuses_unknown_schemes() {
    assert_eq!(backend_for(None), Ok("sqlite"));
    assert_eq!(backend_for(Some("")), Ok("sqlite"));
    assert_eq!(
        backend_for(Some("postgres://postgres@127.0.0.1:5432/postgres")),
        Ok("postgres")
    );
    assert_eq!(backend_for(Some("postgresql://u:p@db/x")), Ok("postgres"));
    for url in [
        "mysql://root:secret@db/x",
        "sqlite://var/reclaim.db",
        "postgres",
    ] {
        let problem = backend_for(Some(url)).expect_err(url);
        assert!(!problem.contains("secret"), "{problem}");
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(admin_url) = &self.admin_url {
            if let Ok(mut admin) = PgConnection::establish(admin_url) {
                let _ = diesel::sql_query(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .execute(&mut admin);
            }
        }
    }
}
