//! Remembered answers to requests that carry an idempotency key (`Idempotency-Key`, Kratos's
//! `Ory-Webhook-Trigger-ID`), so that a retry gets the first answer and changes nothing. One mechanism for
//! every caller:
//!
//! 1. [`IdempotencyKey::from_headers`] parses the header, with the same rules for every header;
//! 2. [`claim`] inserts the key as *pending* before any work, inside the work's own write transaction, and
//!    [`complete`] stores the answer in that same transaction. A concurrent retry's claim waits for the first
//!    transaction (on the key's row on PostgreSQL, on the write lock on SQLite) and then finds its answer, so
//!    the work runs once;
//! 3. [`replay`] turns a remembered answer into the HTTP answer;
//! 4. [`forget_subject`] and [`forget_scope`] forget answers (right to erasure), [`prune`] old ones.
//!
//! Work that cannot fit in one transaction (the Kratos hooks call Kratos's admin API between their writes)
//! commits the claim on its own with [`claim_or_wait`]: a retry that finds the claim pending waits for its
//! answer, a claim whose work failed or was cancelled is released ([`OwnClaim`]), and a claim left pending
//! longer than [`PENDING_LEASE`] (its holder died) is taken over.

use crate::db::{write_transaction, AnyConnection, DbError};
use crate::json::FieldError;
use crate::schema::idempotency_keys::dsl;
use crate::Db;
use actix_web::http::header::{ContentType, HeaderMap};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// `status_code` of a claim whose answer is not known yet; no HTTP answer has status 0.
const PENDING: i32 = 0;

/// How long a claim committed on its own may stay pending before another request may take it over: longer
/// than any hook takes, short enough that a crashed instance does not block an IdP's retries for long.
pub const PENDING_LEASE: Duration = Duration::from_secs(60);

/// The header replays carry, so a client can tell a replay from a fresh answer.
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";

/// An idempotency key from a request header: 1 to 255 visible ASCII characters, surrounding whitespace
/// removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    const MAX_LEN: usize = 255;

    pub fn parse(value: &str) -> Result<Self, &'static str> {
        let key = value.trim();
        if (1..=Self::MAX_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(key.to_string()))
        } else {
            Err("must be 1 to 255 visible ASCII characters")
        }
    }

    /// The key in header `name`; `None` when the header is absent, an error naming the header when it is
    /// malformed.
    pub fn from_headers(headers: &HeaderMap, name: &str) -> Result<Option<Self>, FieldError> {
        let Some(value) = headers.get(name) else {
            return Ok(None);
        };
        let text = value
            .to_str()
            .map_err(|_| FieldError::new(name, "must be 1 to 255 visible ASCII characters"))?;
        Self::parse(text)
            .map(Some)
            .map_err(|message| FieldError::new(name, message))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A request that is to be answered once: its key within a scope (one per endpoint, or per endpoint and
/// identity), the digest of its body, and the identity the answer concerns.
#[derive(Debug, Clone)]
pub struct Request {
    scope: String,
    key: IdempotencyKey,
    digest: Vec<u8>,
    subject: Option<String>,
}

impl Request {
    pub fn new(scope: impl Into<String>, key: IdempotencyKey, body: &[u8]) -> Self {
        Self {
            scope: scope.into(),
            key,
            digest: request_digest(body),
            subject: None,
        }
    }

    /// The identity this answer is about, so that erasing the identity forgets the answer too.
    pub fn about(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    pub fn key(&self) -> &str {
        self.key.as_str()
    }
}

/// What was answered the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub status_code: u16,
    pub response_body: String,
    /// False when the same key came with a different request body: the caller reused a key by mistake.
    pub same_request: bool,
}

/// The result of [`claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request owns the key: do the work, then [`complete`] (or [`release`]).
    Claimed,
    /// Answered before: replay it (or refuse it when `same_request` is false).
    Answered(Remembered),
    /// Another request holds the key and has not answered yet (only for claims committed on their own).
    Pending { same_request: bool },
}

/// Digest of a request body, to tell a true retry from a reused key.
fn request_digest(body: &[u8]) -> Vec<u8> {
    Sha256::digest(body).to_vec()
}

/// Claims the request's key. Call it first in the work's write transaction: the claim commits or rolls back
/// with the work.
pub fn claim(
    conn: &mut AnyConnection,
    request: &Request,
    now: NaiveDateTime,
) -> Result<Claim, DbError> {
    // The row can vanish between the insert and the read (its holder released it): then try again.
    for _ in 0..3 {
        let row = (
            dsl::scope.eq(&request.scope),
            dsl::key.eq(request.key.as_str()),
            dsl::request_digest.eq(&request.digest),
            dsl::status_code.eq(PENDING),
            dsl::response_body.eq(""),
            dsl::created_at.eq(now),
            dsl::subject.eq(request.subject.as_deref()),
        );
        let inserted =
            crate::per_backend!(&mut *conn, |c| diesel::insert_into(dsl::idempotency_keys)
                .values(row)
                .on_conflict_do_nothing()
                .execute(c))?;
        if inserted == 1 {
            return Ok(Claim::Claimed);
        }
        let lease = chrono::Duration::from_std(PENDING_LEASE).unwrap_or(chrono::Duration::MAX);
        let taken_over = diesel::update(
            this(request)
                .filter(dsl::status_code.eq(PENDING))
                .filter(dsl::created_at.lt(now - lease)),
        )
        .set((
            dsl::request_digest.eq(&request.digest),
            dsl::created_at.eq(now),
            dsl::subject.eq(request.subject.as_deref()),
        ))
        .execute(conn)?;
        if taken_over == 1 {
            return Ok(Claim::Claimed);
        }
        let found: Option<(Vec<u8>, i32, String)> = this(request)
            .select((dsl::request_digest, dsl::status_code, dsl::response_body))
            .first(conn)
            .optional()?;
        let Some((digest, status, body)) = found else {
            continue;
        };
        let same_request = crate::secret::constant_time_eq(&digest, &request.digest);
        return Ok(if status == PENDING {
            Claim::Pending { same_request }
        } else {
            Claim::Answered(Remembered {
                status_code: u16::try_from(status).unwrap_or(500),
                response_body: body,
                same_request,
            })
        });
    }
    Err(DbError::Task(
        "an idempotency claim kept vanishing while it was read".into(),
    ))
}

/// Stores the answer of a claimed request; call it in the same transaction as the work it describes.
pub fn complete(
    conn: &mut AnyConnection,
    request: &Request,
    status_code: u16,
    response_body: &str,
) -> Result<(), DbError> {
    diesel::update(this(request))
        .set((
            dsl::status_code.eq(i32::from(status_code)),
            dsl::response_body.eq(response_body),
        ))
        .execute(conn)?;
    Ok(())
}

/// For work whose answer is known before it commits: stores `request`'s answer at once when its key is new
/// (one statement instead of [`claim`] then [`complete`]), in the caller's transaction, which must also
/// hold the work. `None`: the key was new (or held a claim abandoned past its lease) and now holds this
/// answer. `Some`: the key was in use — [`Claim::Answered`] with what it was answered, or
/// [`Claim::Pending`] while another request still works on it.
pub fn answer_at_once(
    conn: &mut AnyConnection,
    request: &Request,
    now: NaiveDateTime,
    status_code: u16,
    response_body: &str,
) -> Result<Option<Claim>, DbError> {
    let row = (
        dsl::scope.eq(&request.scope),
        dsl::key.eq(request.key.as_str()),
        dsl::request_digest.eq(&request.digest),
        dsl::status_code.eq(i32::from(status_code)),
        dsl::response_body.eq(response_body),
        dsl::created_at.eq(now),
        dsl::subject.eq(request.subject.as_deref()),
    );
    let inserted = crate::per_backend!(&mut *conn, |c| diesel::insert_into(dsl::idempotency_keys)
        .values(row)
        .on_conflict_do_nothing()
        .execute(c))?;
    if inserted == 1 {
        return Ok(None);
    }
    match claim(conn, request, now)? {
        Claim::Claimed => {
            complete(conn, request, status_code, response_body)?;
            Ok(None)
        }
        earlier => Ok(Some(earlier)),
    }
}

/// Gives up a pending claim whose work failed, so that a retry does the work.
pub fn release(conn: &mut AnyConnection, request: &Request) -> Result<(), DbError> {
    diesel::delete(this(request).filter(dsl::status_code.eq(PENDING))).execute(conn)?;
    Ok(())
}

/// The stored answer for the request, if it was answered; a cheap look before expensive work that a replay
/// would make unnecessary.
pub fn lookup(conn: &mut AnyConnection, request: &Request) -> Result<Option<Remembered>, DbError> {
    let row: Option<(Vec<u8>, i32, String)> = this(request)
        .filter(dsl::status_code.ne(PENDING))
        .select((dsl::request_digest, dsl::status_code, dsl::response_body))
        .first(conn)
        .optional()?;
    Ok(row.map(|(digest, status, body)| Remembered {
        status_code: u16::try_from(status).unwrap_or(500),
        response_body: body,
        same_request: crate::secret::constant_time_eq(&digest, &request.digest),
    }))
}

/// The result of [`claim_or_wait`].
#[derive(Debug)]
pub enum Waited {
    /// This request owns the key: do the work, then [`OwnClaim::complete`].
    Claimed(OwnClaim),
    /// Answered before (or while waiting): replay it, or refuse it when `same_request` is false.
    Answered(Remembered),
    /// Another request still holds the key after the wait, or holds it for another body.
    Pending { same_request: bool },
}

/// For work that spans several transactions: claims the key in a transaction of its own; while another
/// request holds it pending with the same body, waits up to `max_wait` for its answer.
pub async fn claim_or_wait(
    db: &Db,
    request: &Request,
    max_wait: Duration,
) -> Result<Waited, DbError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        let attempt = request.clone();
        let claim = db
            .run(move |conn| {
                let now = chrono::Utc::now().naive_utc();
                write_transaction(conn, |c| claim(c, &attempt, now))
            })
            .await?;
        match claim {
            Claim::Claimed => {
                return Ok(Waited::Claimed(OwnClaim {
                    db: db.clone(),
                    request: Some(request.clone()),
                }))
            }
            Claim::Answered(first) => return Ok(Waited::Answered(first)),
            Claim::Pending { same_request: true } if started.elapsed() < max_wait => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Claim::Pending { same_request } => return Ok(Waited::Pending { same_request }),
        }
    }
}

/// A claim committed on its own by [`claim_or_wait`]. [`OwnClaim::complete`] stores the answer; dropped
/// without it (the work failed, or its future was cancelled), it is released so that a retry does the work.
#[derive(Debug)]
pub struct OwnClaim {
    db: Db,
    request: Option<Request>,
}

impl OwnClaim {
    pub async fn complete(
        mut self,
        status_code: u16,
        response_body: String,
    ) -> Result<(), DbError> {
        let Some(request) = self.request.take() else {
            return Ok(());
        };
        self.db
            .run(move |conn| complete(conn, &request, status_code, &response_body))
            .await
    }
}

impl Drop for OwnClaim {
    fn drop(&mut self) {
        let Some(request) = self.request.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Without a runtime the claim stays pending until PENDING_LEASE lets a retry take it over.
            return;
        };
        let db = self.db.clone();
        runtime.spawn(async move {
            if let Err(error) = db.run(move |conn| release(conn, &request)).await {
                tracing::warn!(error = %error, "could not release an idempotency claim");
            }
        });
    }
}

/// The HTTP answer that replays a remembered one, marked with [`REPLAYED_HEADER`].
pub fn replay(remembered: &Remembered) -> HttpResponse {
    let status = StatusCode::from_u16(remembered.status_code).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    response.insert_header((REPLAYED_HEADER, "true"));
    if remembered.response_body.is_empty() {
        response.finish()
    } else {
        response
            .content_type(ContentType::json())
            .body(remembered.response_body.clone())
    }
}

/// Forgets every answer about `subject` (an identity id); returns how many.
pub fn forget_subject(conn: &mut AnyConnection, subject: &str) -> Result<usize, DbError> {
    Ok(diesel::delete(dsl::idempotency_keys.filter(dsl::subject.eq(subject))).execute(conn)?)
}

/// Forgets every answer in `scope`; returns how many.
pub fn forget_scope(conn: &mut AnyConnection, scope: &str) -> Result<usize, DbError> {
    Ok(diesel::delete(dsl::idempotency_keys.filter(dsl::scope.eq(scope))).execute(conn)?)
}

/// Forgets the request's answer when it was first given before `before`, so that a key remembered only for
/// a window (the Kratos courier's dedupe window) counts as new after it. Call it before [`claim`], in the
/// same transaction.
pub fn forget_if_older(
    conn: &mut AnyConnection,
    request: &Request,
    before: NaiveDateTime,
) -> Result<usize, DbError> {
    Ok(diesel::delete(
        this(request)
            .filter(dsl::status_code.ne(PENDING))
            .filter(dsl::created_at.lt(before)),
    )
    .execute(conn)?)
}

/// Forgets answers older than `before`.
pub fn prune(conn: &mut AnyConnection, before: NaiveDateTime) -> Result<usize, DbError> {
    Ok(diesel::delete(dsl::idempotency_keys.filter(dsl::created_at.lt(before))).execute(conn)?)
}

type InScope<'a> = diesel::dsl::Filter<dsl::idempotency_keys, diesel::dsl::Eq<dsl::scope, &'a str>>;
type ThisRow<'a> = diesel::dsl::Filter<InScope<'a>, diesel::dsl::Eq<dsl::key, &'a str>>;

/// The request's row.
fn this(request: &Request) -> ThisRow<'_> {
    dsl::idempotency_keys
        .filter(dsl::scope.eq(request.scope.as_str()))
        .filter(dsl::key.eq(request.key.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_sqlite;

    fn request(body: &[u8]) -> Request {
        Request::new("test", IdempotencyKey::parse("k").expect("key"), body).about("someone")
    }

    fn claimed(waited: Waited) -> OwnClaim {
        match waited {
            Waited::Claimed(claim) => claim,
            other => panic!("expected a claim, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_claim_is_answered_once_and_replayed_and_another_body_is_told_apart() {
        let (_dir, db) = test_sqlite();
        let first = claimed(
            claim_or_wait(&db, &request(b"a"), Duration::ZERO)
                .await
                .expect("claim"),
        );
        // While the first is deciding, a retry sees the claim pending.
        assert!(matches!(
            claim_or_wait(&db, &request(b"a"), Duration::ZERO).await,
            Ok(Waited::Pending { same_request: true })
        ));
        first.complete(201, "{}".into()).await.expect("complete");
        let Ok(Waited::Answered(replayed)) =
            claim_or_wait(&db, &request(b"a"), Duration::ZERO).await
        else {
            panic!("expected the first answer");
        };
        assert_eq!(
            (replayed.status_code, replayed.response_body.as_str()),
            (201, "{}")
        );
        assert!(replayed.same_request);
        let Ok(Waited::Answered(other)) = claim_or_wait(&db, &request(b"b"), Duration::ZERO).await
        else {
            panic!("expected the first answer");
        };
        assert!(!other.same_request);
        let forgotten = db
            .run(|conn| forget_subject(conn, "someone"))
            .await
            .expect("forget");
        assert_eq!(forgotten, 1);
    }

    #[tokio::test]
    async fn a_claim_dropped_without_an_answer_is_released_for_the_retry() {
        let (_dir, db) = test_sqlite();
        drop(claimed(
            claim_or_wait(&db, &request(b"a"), Duration::ZERO)
                .await
                .expect("claim"),
        ));
        // The release runs in the background; the retry waits for it rather than deciding a second time.
        let retry = claim_or_wait(&db, &request(b"a"), Duration::from_secs(30))
            .await
            .expect("retry");
        assert!(matches!(retry, Waited::Claimed(_)), "{retry:?}");
    }

    #[tokio::test]
    async fn a_claim_pending_past_its_lease_is_taken_over() {
        let (_dir, db) = test_sqlite();
        let stale = chrono::Utc::now().naive_utc()
            - chrono::Duration::from_std(PENDING_LEASE).expect("lease")
            - chrono::Duration::seconds(1);
        let outcome = db
            .run(move |conn| {
                let first = claim(conn, &request(b"a"), stale)?;
                let second = claim(conn, &request(b"a"), chrono::Utc::now().naive_utc())?;
                Ok((first, second))
            })
            .await
            .expect("claims");
        assert_eq!(outcome, (Claim::Claimed, Claim::Claimed));
    }

    #[tokio::test]
    async fn an_answer_older_than_a_window_is_forgotten_and_a_newer_one_kept() {
        let (_dir, db) = test_sqlite();
        let now = chrono::Utc::now().naive_utc();
        let outcome = db
            .run(move |conn| {
                claim(conn, &request(b"a"), now)?;
                complete(conn, &request(b"a"), 202, "{}")?;
                let kept = forget_if_older(conn, &request(b"a"), now)?;
                let forgotten =
                    forget_if_older(conn, &request(b"a"), now + chrono::Duration::seconds(1))?;
                Ok((kept, forgotten, claim(conn, &request(b"a"), now)?))
            })
            .await
            .expect("forget");
        assert_eq!(outcome, (0, 1, Claim::Claimed));
    }

    #[test]
    fn keys_are_trimmed_and_must_be_visible_ascii() {
        assert_eq!(
            IdempotencyKey::parse("  order-42 ").map(|k| k.as_str().to_string()),
            Ok("order-42".to_string())
        );
        for bad in ["", "   ", "with space", "ünïcode", &"k".repeat(256)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
    }

    #[test]
    fn a_malformed_header_is_named_in_the_error() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            IdempotencyKey::from_headers(&headers, "Idempotency-Key"),
            Ok(None)
        );
        headers.insert(
            actix_web::http::header::HeaderName::from_static("idempotency-key"),
            actix_web::http::header::HeaderValue::from_static("two words"),
        );
        let error = IdempotencyKey::from_headers(&headers, "Idempotency-Key").expect_err("bad");
        assert_eq!(error.field, "Idempotency-Key");
    }
}
