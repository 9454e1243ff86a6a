//! The database: one code path over SQLite (embedded default) and PostgreSQL (production).
//!
//! Queries are written once against [`AnyConnection`]; where the dialects differ, match on its variants.
//! All database work runs on tokio's blocking pool through [`Db::run`], never on an HTTP worker thread,
//! and no transaction is held across a network call.

use crate::settings::DatabaseSettings;
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::PgConnection;
use diesel::r2d2::{ManageConnection, Pool, PooledConnection, R2D2Connection};
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

/// Any lock number works as long as every Reclaim instance uses the same one.
const MIGRATION_LOCK_ID: i64 = 0x0052_4543_4c41_494d;

#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    #[error("migrations failed: {0}")]
    Migrate(String),
    #[error("database task failed: {0}")]
    Task(String),
}

impl DbError {
    /// The database cannot take work now for a reason outside the request: no connection could be had
    /// (the server is down or restarting), or the storage refuses writes (disk full, read-only, I/O error).
    /// Answered 503, not 500: retrying later is the right move, and nothing about the request is wrong.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Connect(_) => true,
            DbError::Query(error) => query_unavailable(error),
            DbError::Migrate(_) | DbError::Task(_) => false,
        }
    }
}

/// The messages SQLite and PostgreSQL give when the storage, not the statement, is at fault.
const UNAVAILABLE_MESSAGES: &[&str] = &[
    // SQLite: SQLITE_FULL, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CANTOPEN.
    "database or disk is full",
    "attempt to write a readonly database",
    "disk I/O error",
    "unable to open database file",
    // PostgreSQL: a full disk, a server shutting down or restarting.
    "No space left on device",
    "could not extend file",
    "terminating connection due to administrator command",
    "the database system is shutting down",
    "the database system is starting up",
    "server closed the connection unexpectedly",
    "no connection to the server",
    "could not receive data from server",
    "could not send data to server",
];

fn query_unavailable(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => true,
        Error::DatabaseError(_, info) => UNAVAILABLE_MESSAGES
            .iter()
            .any(|m| info.message().contains(m)),
        _ => false,
    }
}

/// Whether `error` (an endpoint's unexpected error) was caused by an unavailable database
/// ([`DbError::is_unavailable`]), anywhere in its chain of causes.
pub fn is_unavailable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<DbError>()
            .is_some_and(DbError::is_unavailable)
            || cause
                .downcast_ref::<diesel::result::Error>()
                .is_some_and(query_unavailable)
    })
}

pub type Conn = PooledConnection<Manager>;

/// Opens connections for one backend; the URL's scheme decides which.
#[derive(Debug)]
pub struct Manager {
    backend: Backend,
    target: String,
    busy_timeout_ms: u64,
    /// Connections being opened right now, on the pool's own threads (see [`Db::settle`]).
    opening: Arc<AtomicUsize>,
}

/// Counts a connection attempt for as long as it runs, however it ends.
struct Opening(Arc<AtomicUsize>);

impl Opening {
    fn start(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter.clone())
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ManageConnection for Manager {
    type Connection = AnyConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<AnyConnection, Self::Error> {
        let _opening = Opening::start(&self.opening);
        match self.backend {
            Backend::Postgres => PgConnection::establish(&self.target)
                .map(AnyConnection::Postgresql)
                .map_err(diesel::r2d2::Error::ConnectionError),
            Backend::Sqlite => {
                let mut conn = SqliteConnection::establish(&self.target)
                    .map_err(diesel::r2d2::Error::ConnectionError)?;
                conn.batch_execute(&format!(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {};",
                    self.busy_timeout_ms
                ))
                .map_err(diesel::r2d2::Error::QueryError)?;
                Ok(AnyConnection::Sqlite(conn))
            }
        }
    }

    /// On checkout: the connection answers, and no transaction is left open on it.
    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), Self::Error> {
        if AnyConnection::is_broken_transaction_manager(conn) {
            return Err(diesel::r2d2::Error::QueryError(
                diesel::result::Error::BrokenTransactionManager,
            ));
        }
        R2D2Connection::ping(conn).map_err(diesel::r2d2::Error::QueryError)
    }

    /// On check-in: a connection that comes back while its thread panics, or with a transaction still open
    /// or its transaction state broken (a panic or an error inside a write), is closed instead of reused;
    /// otherwise later work on it would run inside that transaction and never commit.
    fn has_broken(&self, conn: &mut AnyConnection) -> bool {
        std::thread::panicking() || AnyConnection::is_broken_transaction_manager(conn)
    }
}

/// The connection pool, cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: Pool<Manager>,
    backend: Backend,
    opening: Arc<AtomicUsize>,
    /// Set when work failed because the storage refused it ([`DbError::is_unavailable`]); while set,
    /// [`Db::ready`] proves a write works before it answers ready.
    refused: Arc<AtomicBool>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Db {
    /// Builds the pool and checks that one connection can be opened.
    pub fn connect(settings: &DatabaseSettings) -> Result<Self, DbError> {
        let url = settings.url.expose();
        let (backend, target) = if let Some(path) = url.strip_prefix("sqlite://") {
            let path = std::path::Path::new(path);
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    DbError::Connect(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
            (Backend::Sqlite, path.to_string_lossy().into_owned())
        } else {
            (Backend::Postgres, url.to_string())
        };
        let opening = Arc::new(AtomicUsize::new(0));
        let manager = Manager {
            backend,
            target,
            busy_timeout_ms: settings.busy_timeout_ms,
            opening: opening.clone(),
        };
        let pool = Pool::builder()
            .max_size(settings.pool_size)
            .min_idle(Some(0))
            .test_on_check_out(true)
            .connection_timeout(Duration::from_millis(settings.connect_timeout_ms.max(1)))
            .build(manager)
            .map_err(|e| DbError::Connect(format!("{} ({e})", settings.url.redacted())))?;
        Ok(Self {
            pool,
            backend,
            opening,
            refused: Arc::default(),
        })
    }

    /// Waits (up to `limit`) until no connection is being opened. The pool opens connections on threads of
    /// its own that nobody joins; a process that exits while one of them is inside libpq's TLS handshake can
    /// crash in OpenSSL's exit handlers (seen as SIGSEGV after a SIGTERM during start-up). Call it after the
    /// services stopped, when nothing asks for new connections any more.
    pub fn settle(&self, limit: Duration) -> bool {
        let until = std::time::Instant::now() + limit;
        while self.opening.load(Ordering::SeqCst) > 0 {
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Takes a connection for blocking code that is already off the async runtime (workers, CLI).
    pub fn get(&self) -> Result<Conn, DbError> {
        self.pool.get().map_err(|e| DbError::Connect(e.to_string()))
    }

    /// Runs `work` with a connection on the blocking pool.
    pub async fn run<R, F>(&self, work: F) -> Result<R, DbError>
    where
        F: FnOnce(&mut AnyConnection) -> Result<R, DbError> + Send + 'static,
        R: Send + 'static,
    {
        let db = self.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let result = db.get().and_then(|mut conn| work(&mut conn));
            if result.as_ref().is_err_and(DbError::is_unavailable) {
                db.refused.store(true, Ordering::SeqCst);
            }
            result
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Applies pending migrations. On PostgreSQL this holds an advisory lock, so several instances starting
    /// together apply them once.
    pub fn migrate(&self) -> Result<Vec<String>, DbError> {
        let mut conn = self.get()?;
        let applied = match &mut *conn {
            AnyConnection::Sqlite(c) => {
                // Another process may be migrating the same file. The write lock, held for the whole run,
                // keeps the list of pending migrations from going stale between reading and applying it
                // (diesel runs each migration in a savepoint of this transaction).
                AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?;
                let result = c
                    .run_pending_migrations(SQLITE_MIGRATIONS)
                    .map(|v| v.iter().map(|m| m.to_string()).collect::<Vec<_>>())
                    .map_err(|e| DbError::Migrate(e.to_string()));
                match result {
                    Ok(applied) => {
                        AnsiTransactionManager::commit_transaction(c)?;
                        Ok(applied)
                    }
                    Err(error) => {
                        let _ = AnsiTransactionManager::rollback_transaction(c);
                        Err(error)
                    }
                }
            }
            AnyConnection::Postgresql(c) => {
                diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_ID})"))
                    .execute(c)?;
                let result = c
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|v| v.iter().map(|m| m.to_string()).collect())
                    .map_err(|e| DbError::Migrate(e.to_string()));
                diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})"))
                    .execute(c)?;
                result
            }
        }?;
        Ok(applied)
    }

    /// Ready = reachable and nothing left to migrate. Answers the backend of the connection that was
    /// checked (not the one the URL was expected to pick), so `/health/ready` reports what is really in use.
    ///
    /// After work failed because the storage refused it (a full or read-only disk), ready also needs a write
    /// to succeed: on SQLite a transaction that rewrites the header's `user_version` with its own value
    /// (a real write to the WAL, changing nothing). On PostgreSQL reachability is the test.
    pub async fn ready(&self) -> Result<Backend, String> {
        let refused = self.refused.clone();
        let probe = refused.load(Ordering::SeqCst);
        self.run(move |conn| {
            if probe {
                if let AnyConnection::Sqlite(c) = conn {
                    write_probe(c)
                        .map_err(|e| DbError::Task(format!("the database refuses writes: {e}")))?;
                }
                refused.store(false, Ordering::SeqCst);
            }
            let (backend, pending) = match conn {
                AnyConnection::Sqlite(c) => {
                    (Backend::Sqlite, c.has_pending_migration(SQLITE_MIGRATIONS))
                }
                AnyConnection::Postgresql(c) => (
                    Backend::Postgres,
                    c.has_pending_migration(POSTGRES_MIGRATIONS),
                ),
            };
            match pending {
                Ok(false) => Ok(backend),
                Ok(true) => Err(DbError::Migrate("migrations pending".into())),
                Err(e) => Err(DbError::Migrate(e.to_string())),
            }
        })
        .await
        .map_err(|e| e.to_string())
    }
}

/// Rewrites SQLite's `user_version` with its own value in a write transaction: a write that reaches the
/// disk (a WAL frame) and changes nothing. Nothing in Reclaim uses `user_version`.
fn write_probe(conn: &mut SqliteConnection) -> Result<(), diesel::result::Error> {
    #[derive(diesel::QueryableByName)]
    struct Version {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        user_version: i32,
    }
    conn.immediate_transaction(|c| {
        let version: Version = diesel::sql_query("PRAGMA user_version").get_result(c)?;
        c.batch_execute(&format!("PRAGMA user_version = {}", version.user_version))
    })
}

/// The queue of this process's SQLite write transactions. SQLite lets a writer that finds the write lock
/// taken sleep and retry (1, 2, 5, 10 ... 100 ms apart, up to `busy_timeout`), so under load a writer could
/// sleep through many commits of the others: enqueue p99 was 139 ms at 32 clients. A writer of this process
/// waits here instead and is woken by the commit before it; parking_lot's mutex is eventually fair, so no
/// writer starves. Writers of other processes still meet `busy_timeout`. One queue for all SQLite files of
/// the process: a process keeps one database.
static SQLITE_WRITERS: parking_lot::Mutex<()> = parking_lot::const_mutex(());
/// After this, a writer stops waiting for its turn and lets SQLite's `busy_timeout` decide (a write
/// transaction opened inside another one on a second connection would otherwise wait forever).
const SQLITE_TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A transaction for work that reads and then writes. On SQLite it takes the write lock up front
/// (`BEGIN IMMEDIATE`), so two writers queue on `busy_timeout` instead of one failing with "database is locked"
/// when it upgrades a read lock; on PostgreSQL it is an ordinary transaction (lock the rows you read with
/// `FOR UPDATE`). Both go through diesel's transaction manager, so a transaction that `work` leaves open by
/// panicking marks the connection broken and the pool closes it.
///
/// `work` must not open a transaction of its own.
pub fn write_transaction<T, F>(conn: &mut AnyConnection, work: F) -> Result<T, DbError>
where
    F: FnOnce(&mut AnyConnection) -> Result<T, DbError>,
{
    match conn {
        AnyConnection::Postgresql(_) => conn.transaction(work),
        AnyConnection::Sqlite(c) => {
            // Writers of this process take turns here, woken as soon as the one before them commits; held
            // until this transaction ends.
            let _turn = SQLITE_WRITERS.try_lock_for(SQLITE_TURN_WAIT);
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?;
            match work(conn) {
                Ok(value) => {
                    AnyConnection::commit_transaction(conn)?;
                    Ok(value)
                }
                Err(error) => {
                    // A failed rollback leaves the transaction manager broken: the pool then closes the
                    // connection, which rolls back.
                    let _ = AnyConnection::rollback_transaction(conn);
                    Err(error)
                }
            }
        }
    }
}

/// Runs the same diesel expression on the concrete connection, for the few queries (upserts, row locks)
/// that the multi-backend layer cannot express: the body is compiled once per backend.
///
/// ```ignore
/// per_backend!(conn, |c| diesel::insert_into(t).values(v).on_conflict_do_nothing().execute(c))
/// ```
#[macro_export]
macro_rules! per_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::AnyConnection::Sqlite($c) => $body,
            $crate::db::AnyConnection::Postgresql($c) => $body,
        }
    };
}

/// A fresh, migrated SQLite database in a temporary folder for unit tests; it lives as long as the folder.
#[cfg(test)]
pub(crate) fn test_sqlite() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("dir");
    let settings = DatabaseSettings {
        url: crate::settings::DatabaseUrl::new(format!(
            "sqlite://{}",
            dir.path().join("t.db").display()
        )),
        ..DatabaseSettings::default()
    };
    let db = Db::connect(&settings).expect("connect");
    db.migrate().expect("migrate");
    (dir, db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::QueryDsl;

    #[test]
    fn storage_faults_are_unavailable_and_statement_faults_are_not() {
        use diesel::result::{DatabaseErrorKind, Error};
        let database = |kind, message: &str| {
            DbError::Query(Error::DatabaseError(kind, Box::new(message.to_string())))
        };
        assert!(database(DatabaseErrorKind::Unknown, "database or disk is full").is_unavailable());
        assert!(database(
            DatabaseErrorKind::Unknown,
            "attempt to write a readonly database"
        )
        .is_unavailable());
        assert!(database(DatabaseErrorKind::ClosedConnection, "gone").is_unavailable());
        assert!(DbError::Connect("timed out waiting for connection".into()).is_unavailable());
        assert!(!database(
            DatabaseErrorKind::UniqueViolation,
            "UNIQUE constraint failed"
        )
        .is_unavailable());
        assert!(!DbError::Query(Error::NotFound).is_unavailable());
        assert!(!DbError::Migrate("migrations pending".into()).is_unavailable());
        // Through an endpoint's anyhow chain, with context on top.
        let wrapped = anyhow::Error::new(database(DatabaseErrorKind::Unknown, "disk I/O error"))
            .context("enqueue");
        assert!(is_unavailable(&wrapped));
        assert!(!is_unavailable(&anyhow::anyhow!(
            "database or disk is full"
        )));
    }

    #[test]
    fn after_a_refused_write_ready_needs_a_write_to_succeed() {
        let (_dir, db) = test_sqlite();
        db.refused.store(true, Ordering::SeqCst);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        assert_eq!(runtime.block_on(db.ready()), Ok(Backend::Sqlite));
        assert!(!db.refused.load(Ordering::SeqCst), "the probe cleared it");
    }

    #[test]
    fn a_failed_write_transaction_is_rolled_back_and_the_connection_reusable() {
        let (_dir, db) = test_sqlite();
        let mut conn = db.get().expect("conn");
        let result: Result<(), DbError> = write_transaction(&mut conn, |c| {
            c.batch_execute("INSERT INTO idempotency_keys (scope, key, request_digest, status_code, response_body, created_at) VALUES ('s','k',x'00',200,'{}','2026-01-01 00:00:00')")?;
            Err(DbError::Migrate("boom".into()))
        });
        assert!(result.is_err());
        write_transaction(&mut conn, |c| {
            c.batch_execute("INSERT INTO idempotency_keys (scope, key, request_digest, status_code, response_body, created_at) VALUES ('s','k2',x'00',200,'{}','2026-01-01 00:00:00')")?;
            Ok(())
        })
        .expect("second transaction commits");
        let count: i64 = crate::schema::idempotency_keys::table
            .count()
            .get_result(&mut *conn)
            .expect("count");
        assert_eq!(count, 1);
    }
}
