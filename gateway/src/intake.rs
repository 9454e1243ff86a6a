//! Group commit for `POST /v1/messages`: concurrent requests share one transaction.
//!
//! Every accepted message is a durable write, and a commit is the expensive part of one (a WAL flush, a
//! round trip per statement). A request hands its validated, sealed message to [`Intake::submit`], which
//! queues it; the first request that finds no writer running starts one. A writer takes everything queued
//! (up to [`MAX_BATCH`]), stores it in one transaction — one multi-row insert for the messages, one insert
//! per Idempotency-Key — and answers each request when the commit returned. While it commits, the next
//! requests queue up for its next round, so the batch grows with the load and a lone request waits for no
//! one: there is no timer.
//!
//! A request is answered 202 only after the commit that holds its message, so "accepted" still means "on
//! disk". If a batch's transaction fails, each of its messages is stored again in a transaction of its own,
//! so that one bad row cannot refuse its neighbours; an unavailable database refuses them all (503).
//!
//! SQLite has one writer at a time, so one batch writes at a time there; PostgreSQL takes
//! [`POSTGRES_WRITERS`] batches at once, so that one batch's commit overlaps the next one's statements.

use crate::delivery::Doorbell;
use crate::outbox::{self, NewMessage};
use reclaim_common::db::{write_transaction, AnyConnection, Backend, DbError};
use reclaim_common::idempotency::{self, Claim, Remembered};
use reclaim_common::Db;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Most messages one transaction stores (PostgreSQL allows 65,535 bind parameters a statement, SQLite
/// 32,766; a message has 17 columns).
pub const MAX_BATCH: usize = 256;
/// Batches written at once on PostgreSQL.
pub const POSTGRES_WRITERS: usize = 2;

/// A message ready to store: validated, its data sealed, its answer (the `202` body) rendered.
pub struct Submission {
    /// Already [`NewMessage::sealed`].
    pub message: NewMessage,
    /// With an Idempotency-Key: the request, so that a retry gets the first answer.
    pub once: Option<idempotency::Request>,
    /// The answer a new message gets; remembered under the key in the same transaction.
    pub answer: String,
}

/// What became of a submission.
#[derive(Debug)]
pub enum Stored {
    /// Stored now; `answer` is the submission's own.
    New,
    /// The key was used before: this is what it was answered (or the other request's body differed).
    Earlier(Remembered),
}

/// The queue in front of the writers; cheap to clone.
#[derive(Clone)]
pub struct Intake {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    /// Rung after every batch that stored a message.
    doorbell: Doorbell,
    max_writers: usize,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    writers: usize,
}

struct Waiting {
    submission: Submission,
    reply: oneshot::Sender<Result<Stored, DbError>>,
}

impl Intake {
    pub fn new(db: Db, doorbell: Doorbell) -> Self {
        let max_writers = match db.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => POSTGRES_WRITERS,
        };
        Self {
            inner: Arc::new(Inner {
                db,
                doorbell,
                max_writers,
                queue: Mutex::new(Queue::default()),
            }),
        }
    }

    /// Stores `submission` in the next batch; returns once that batch committed (or failed).
    pub async fn submit(&self, submission: Submission) -> Result<Stored, DbError> {
        let (reply, answer) = oneshot::channel();
        let start_writer = {
            let mut queue = self.lock();
            queue.waiting.push_back(Waiting { submission, reply });
            let start = queue.writers < self.inner.max_writers;
            if start {
                queue.writers += 1;
            }
            start
        };
        if start_writer {
            // A task of its own: the request that started it may be dropped (its client went away) while
            // the batch still answers others.
            tokio::spawn(self.clone().write());
        }
        answer
            .await
            .map_err(|_| DbError::Task("the message writer stopped".into()))?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A writer never panics while holding the lock; if one did, the queue itself is still whole.
        self.inner
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes batches until the queue is empty.
    async fn write(self) {
        loop {
            let batch: Vec<Waiting> = {
                let mut queue = self.lock();
                if queue.waiting.is_empty() {
                    queue.writers -= 1;
                    return;
                }
                let take = queue.waiting.len().min(MAX_BATCH);
                queue.waiting.drain(..take).collect()
            };
            let (submissions, replies): (Vec<Submission>, Vec<_>) =
                batch.into_iter().map(|w| (w.submission, w.reply)).unzip();
            let results = self
                .inner
                .db
                .run(move |conn| Ok(store(conn, submissions)))
                .await;
            match results {
                Ok(results) => {
                    if results.iter().any(|r| matches!(r, Ok(Stored::New))) {
                        self.inner.doorbell.ring();
                    }
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                }
                // No connection (pool exhausted or database down): the whole batch is refused.
                Err(error) => {
                    let text = error.to_string();
                    let unavailable = error.is_unavailable();
                    for reply in replies {
                        let _ = reply.send(Err(if unavailable {
                            DbError::Connect(text.clone())
                        } else {
                            DbError::Task(text.clone())
                        }));
                    }
                }
            }
        }
    }
}

/// Stores a batch in one transaction; when that fails, each submission in a transaction of its own.
/// An unavailable database refuses the whole batch at once.
fn store(conn: &mut AnyConnection, submissions: Vec<Submission>) -> Vec<Result<Stored, DbError>> {
    if submissions.len() > 1 {
        match write_transaction(conn, |conn| store_all(conn, &submissions)) {
            Ok(stored) => return stored.into_iter().map(Ok).collect(),
            Err(error) if error.is_unavailable() => {
                let text = error.to_string();
                return submissions
                    .iter()
                    .map(|_| Err(DbError::Connect(text.clone())))
                    .collect();
            }
            Err(_) => {}
        }
    }
    submissions
        .iter()
        .map(|one| {
            write_transaction(conn, |conn| store_all(conn, std::slice::from_ref(one)))
                .map(|mut stored| stored.remove(0))
        })
        .collect()
}

/// Remembers each key's answer, then inserts every message whose key was new (or that has none) with one
/// statement. Keys are taken in sorted order, so that two concurrent batches on PostgreSQL wait for each
/// other's keys in the same order instead of deadlocking.
fn store_all(conn: &mut AnyConnection, submissions: &[Submission]) -> Result<Vec<Stored>, DbError> {
    let mut stored: Vec<Option<Stored>> = submissions.iter().map(|_| None).collect();
    let mut keyed: Vec<usize> = (0..submissions.len())
        .filter(|&i| submissions[i].once.is_some())
        .collect();
    keyed.sort_by(|&a, &b| {
        let key = |i: usize| submissions[i].once.as_ref().map(|r| (r.scope(), r.key()));
        key(a).cmp(&key(b))
    });
    for i in keyed {
        let submission = &submissions[i];
        let Some(once) = &submission.once else {
            continue;
        };
        let now = submission.message.created_at;
        match idempotency::answer_at_once(conn, once, now, 202, &submission.answer)? {
            None => {}
            Some(Claim::Answered(found)) => stored[i] = Some(Stored::Earlier(found)),
            // Claim and answer commit together here, so a pending claim of this scope is another
            // process's that is still running: the caller retries, like any 503.
            Some(Claim::Pending { .. }) | Some(Claim::Claimed) => {
                return Err(DbError::Task("a message's key is pending".into()))
            }
        }
    }
    let new: Vec<NewMessage> = submissions
        .iter()
        .zip(&stored)
        .filter(|(_, s)| s.is_none())
        .map(|(s, _)| s.message.clone())
        .collect();
    outbox::insert_sealed(conn, new)?;
    Ok(stored
        .into_iter()
        .map(|s| s.unwrap_or(Stored::New))
        .collect())
}
