//! A per-channel send rate in front of a provider (`gateway.channels.<channel>.max_per_second`), so a burst
//! of queued messages does not exceed what the provider account allows (Twilio queues or refuses beyond its
//! per-number rate; SMTP relays throttle). The limit is per process: with several worker processes, divide
//! the provider's rate between them.

use super::{Accepted, Outgoing, Provider, SendError};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// `C` is the clock the rate is measured on: the system's in production, a fake one in tests, so a test
/// decides when time passes instead of racing it.
pub struct RateLimited<C: Clock = DefaultClock> {
    inner: Arc<dyn Provider>,
    limiter: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>,
    clock: C,
}

impl RateLimited {
    /// `inner` itself when `max_per_second` is 0 (no limit).
    pub fn wrap(inner: Arc<dyn Provider>, max_per_second: u32) -> Arc<dyn Provider> {
        match NonZeroU32::new(max_per_second) {
            None => inner,
            Some(rate) => Arc::new(Self::with_clock(inner, rate, DefaultClock::default())),
        }
    }
}

impl<C: Clock + Clone> RateLimited<C> {
    pub fn with_clock(inner: Arc<dyn Provider>, per_second: NonZeroU32, clock: C) -> Self {
        Self {
            inner,
            limiter: RateLimiter::direct_with_clock(Quota::per_second(per_second), clock.clone()),
            clock,
        }
    }

    /// Takes a slot if one is free now (`None`), else says how long until the next one.
    fn take_slot(&self) -> Option<Duration> {
        self.limiter
            .check()
            .err()
            .map(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[async_trait::async_trait]
impl<C> Provider for RateLimited<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    /// Waits for a slot, then sends. The wait counts towards `gateway.worker.send_timeout_ms`: a channel
    /// far over its rate times out and the message is retried later instead of holding a worker.
    async fn send(&self, message: &Outgoing) -> Result<Accepted, SendError> {
        while let Some(wait) = self.take_slot() {
            tokio::time::sleep(wait).await;
        }
        self.inner.send(message).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Channel, Content, DiscardProvider};
    use governor::clock::FakeRelativeClock;

    fn message() -> Outgoing {
        Outgoing {
            message_id: uuid::Uuid::new_v4(),
            attempt: 1,
            channel: Channel::Sms,
            to: "+14155550100".into(),
            content: Content::Sms { body: "x".into() },
            locale: "en".into(),
            expires_at: None,
            status_callback: None,
        }
    }

    #[tokio::test]
    async fn sends_beyond_the_rate_wait_for_the_next_slot() {
        let clock = FakeRelativeClock::default();
        let rate = NonZeroU32::new(2).expect("non-zero");
        let limited = RateLimited::with_clock(Arc::new(DiscardProvider), rate, clock.clone());
        assert_eq!(limited.name(), "discard");
        // The burst allowance: two slots at once, both sent without waiting.
        for _ in 0..2 {
            assert_eq!(limited.take_slot(), None);
        }
        // At 2 per second the next slot is 500 ms away, and stays so while the clock stands still.
        assert_eq!(limited.take_slot(), Some(Duration::from_millis(500)));
        assert_eq!(limited.take_slot(), Some(Duration::from_millis(500)));
        clock.advance(Duration::from_millis(499));
        assert_eq!(limited.take_slot(), Some(Duration::from_millis(1)));
        clock.advance(Duration::from_millis(1));
        assert_eq!(limited.take_slot(), None, "one new slot after 500 ms");
        assert_eq!(limited.take_slot(), Some(Duration::from_millis(500)));
        // A send with a free slot goes through to the provider.
        clock.advance(Duration::from_secs(1));
        assert!(limited.send(&message()).await.is_ok());
    }

    #[tokio::test]
    async fn zero_means_no_limit() {
        let provider = RateLimited::wrap(Arc::new(DiscardProvider), 0);
        for _ in 0..100 {
            assert!(provider.send(&message()).await.is_ok());
        }
    }
}
