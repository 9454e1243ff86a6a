//! The bounded KDF pool and the keyed digest: HMAC-SHA256(pepper, argon2id(password, salt, params)).
//!
//! Every argon2 run (and every foreign-hash verification) goes through [`Kdf::run`]: it runs on one of
//! `max_concurrent_kdf` dedicated threads, never on an HTTP worker nor on tokio's (growable) blocking pool; a
//! caller that cannot get a thread within `max_queue_ms` gets [`KdfError::Saturated`]. Each thread reuses one
//! argon2 memory buffer, so argon2 memory stays at threads × m_kib under any load instead of growing with
//! allocator arenas.

use crate::metrics::PluginMetrics;
use crate::password::Password;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use hmac::{Hmac, Mac};
use reclaim_common::secret::constant_time_eq;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Semaphore};

pub const DIGEST_LEN: usize = 32;
/// Bytes of each identity's history salt.
pub const SALT_LEN: usize = 16;

/// A keyed history digest. `Debug` never shows it; comparison is constant-time.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordDigest([u8; DIGEST_LEN]);

impl PasswordDigest {
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; DIGEST_LEN]>::try_from(bytes).ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Constant-time comparison with a stored digest.
    pub fn matches(&self, stored: &[u8]) -> bool {
        constant_time_eq(&self.0, stored)
    }
}

impl std::fmt::Debug for PasswordDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordDigest(***)")
    }
}

/// Argon2id parameters of a history group, stored with each entry as `argon2id$v=19$m=..,t=..,p=..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KdfParams {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl KdfParams {
    pub fn encode(&self) -> String {
        format!("argon2id$v=19$m={},t={},p={}", self.m_kib, self.t, self.p)
    }

    pub fn decode(value: &str) -> Option<Self> {
        let rest = value.strip_prefix("argon2id$v=19$")?;
        let (mut m, mut t, mut p) = (None, None, None);
        for pair in rest.split(',') {
            let (key, number) = pair.split_once('=')?;
            let number = number.parse::<u32>().ok()?;
            match key {
                "m" => m = Some(number),
                "t" => t = Some(number),
                "p" => p = Some(number),
                _ => return None,
            }
        }
        Some(Self {
            m_kib: m?,
            t: t?,
            p: p?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KdfError {
    #[error("every KDF slot stayed busy for the whole queue time")]
    Saturated { retry_after: Duration },
    #[error("KDF failed: {0}")]
    Failed(String),
}

/// The pool, the pepper and the parameters for new entries. Cheap to clone.
#[derive(Clone)]
pub struct Kdf {
    inner: Arc<Inner>,
}

type Job = Box<dyn FnOnce() + Send>;

struct Inner {
    slots: Arc<Semaphore>,
    /// Jobs for the KDF threads; a job is only sent while holding a slot, so none ever waits here.
    jobs: Mutex<mpsc::Sender<Job>>,
    max_queue: Duration,
    pepper: Vec<u8>,
    params: KdfParams,
    metrics: PluginMetrics,
}

impl Kdf {
    /// `pepper` must not be empty (the facade substitutes the development pepper).
    pub fn new(
        pepper: &[u8],
        params: KdfParams,
        max_concurrent: usize,
        max_queue: Duration,
        metrics: PluginMetrics,
    ) -> Self {
        let threads = max_concurrent.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            // The threads end when the last `Kdf` clone is dropped and the channel closes.
            let spawned = std::thread::Builder::new()
                .name(format!("reclaim-kdf-{i}"))
                .spawn(move || loop {
                    let job = match queue.lock() {
                        Ok(receiver) => receiver.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a KDF thread");
            }
        }
        metrics
            .kdf_slots
            .set(i64::try_from(threads).unwrap_or(i64::MAX));
        Self {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(threads)),
                jobs: Mutex::new(jobs),
                max_queue,
                pepper: pepper.to_vec(),
                params,
                metrics,
            }),
        }
    }

    /// Parameters for new entries.
    pub fn params(&self) -> KdfParams {
        self.inner.params
    }

    /// Runs CPU-heavy `work` in a slot on the blocking pool, waiting at most `max_queue` for the slot.
    pub async fn run<R, F>(&self, work: F) -> Result<R, KdfError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let inner = &self.inner;
        let permit = match tokio::time::timeout(
            inner.max_queue,
            inner.slots.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(closed)) => return Err(KdfError::Failed(closed.to_string())),
            Err(_) => {
                inner.metrics.kdf_rejections.inc();
                let seconds = inner.max_queue.as_secs_f64().ceil().max(1.0);
                return Err(KdfError::Saturated {
                    retry_after: Duration::from_secs_f64(seconds),
                });
            }
        };
        let metrics = inner.metrics.clone();
        let span = tracing::Span::current();
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _entered = span.enter();
            let _permit = permit;
            metrics.kdf_in_flight.inc();
            let started = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(work));
            metrics
                .kdf_duration
                .observe(started.elapsed().as_secs_f64());
            metrics.kdf_in_flight.dec();
            let _ = done.send(outcome.map_err(|_| "a KDF job panicked".to_string()));
        });
        inner
            .jobs
            .lock()
            .map_err(|_| KdfError::Failed("KDF queue poisoned".into()))?
            .send(job)
            .map_err(|_| KdfError::Failed("KDF threads are gone".into()))?;
        result
            .await
            .map_err(|_| KdfError::Failed("KDF thread stopped".into()))?
            .map_err(KdfError::Failed)
    }

    /// The keyed digest of `password` in the group `(salt, params)`.
    pub async fn digest(
        &self,
        password: &Password,
        salt: &[u8],
        params: KdfParams,
    ) -> Result<PasswordDigest, KdfError> {
        let password = password.clone();
        let salt = salt.to_vec();
        let pepper = self.inner.pepper.clone();
        self.run(move || keyed_digest(&pepper, password.expose().as_bytes(), &salt, params))
            .await?
    }
}

thread_local! {
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// HMAC-SHA256(pepper, argon2id(password, salt, params)), computed on the calling thread.
pub fn keyed_digest(
    pepper: &[u8],
    password: &[u8],
    salt: &[u8],
    params: KdfParams,
) -> Result<PasswordDigest, KdfError> {
    let argon_params = Params::new(params.m_kib, params.t, params.p, Some(DIGEST_LEN))
        .map_err(|e| KdfError::Failed(e.to_string()))?;
    let mut stretched = [0u8; DIGEST_LEN];
    let blocks = argon_params.block_count();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);
    // One buffer per thread, reused: allocating m_kib per run lets the allocator keep freed buffers in
    // per-thread arenas, and resident memory then grows with load instead of staying at threads × m_kib.
    MEMORY
        .with(|memory| {
            let mut memory = memory.borrow_mut();
            if memory.len() != blocks {
                memory.clear();
                memory.shrink_to_fit();
                memory.resize(blocks, Block::default());
            }
            argon.hash_password_into_with_memory(password, salt, &mut stretched, &mut memory[..])
        })
        .map_err(|e| KdfError::Failed(e.to_string()))?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(pepper)
        .map_err(|e| KdfError::Failed(e.to_string()))?;
    mac.update(&stretched);
    stretched.fill(0);
    let out: [u8; DIGEST_LEN] = mac.finalize().into_bytes().into();
    Ok(PasswordDigest(out))
}

/// The pepper used in development when none is configured. Public knowledge: never for production.
pub fn development_pepper() -> Vec<u8> {
    Sha256::digest(b"reclaim development pepper: not a secret, never use in production").to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    #[test]
    fn digests_depend_on_password_salt_params_and_pepper() {
        let base = keyed_digest(b"pepper", b"pw", b"saltsaltsalt", SMALL).expect("digest");
        let again = keyed_digest(b"pepper", b"pw", b"saltsaltsalt", SMALL).expect("digest");
        assert!(base.matches(again.as_bytes()));
        for other in [
            keyed_digest(b"pepper", b"pw2", b"saltsaltsalt", SMALL),
            keyed_digest(b"pepper", b"pw", b"saltsaltsal2", SMALL),
            keyed_digest(
                b"pepper",
                b"pw",
                b"saltsaltsalt",
                KdfParams { t: 2, ..SMALL },
            ),
            keyed_digest(b"other", b"pw", b"saltsaltsalt", SMALL),
        ] {
            assert!(!base.matches(other.expect("digest").as_bytes()));
        }
        assert_eq!(format!("{base:?}"), "PasswordDigest(***)");
    }

    #[test]
    fn params_round_trip_through_their_stored_form() {
        let params = KdfParams {
            m_kib: 19_456,
            t: 2,
            p: 1,
        };
        assert_eq!(params.encode(), "argon2id$v=19$m=19456,t=2,p=1");
        assert_eq!(KdfParams::decode(&params.encode()), Some(params));
        assert_eq!(KdfParams::decode("bcrypt"), None);
    }

    #[tokio::test]
    async fn a_saturated_pool_refuses_after_the_queue_time() {
        let registry = prometheus::Registry::new();
        let metrics = PluginMetrics::register(&registry).expect("metrics");
        let kdf = Kdf::new(b"p", SMALL, 1, Duration::from_millis(50), metrics.clone());
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel::<()>();
        let busy = {
            let kdf = kdf.clone();
            tokio::spawn(async move {
                kdf.run(move || {
                    let _ = started.send(());
                    wait.recv().ok()
                })
                .await
            })
        };
        running.await.expect("the first run holds the only slot");
        let refused = kdf.run(|| ()).await;
        assert!(
            matches!(refused, Err(KdfError::Saturated { .. })),
            "{refused:?}"
        );
        assert_eq!(metrics.kdf_rejections.get(), 1);
        release.send(()).expect("release");
        assert!(busy.await.expect("join").is_ok());
        assert!(kdf.run(|| ()).await.is_ok());
    }
}
