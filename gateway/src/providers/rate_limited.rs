//! A per-channel send rate in front of a provider (`gateway.channels.<channel>.max_per_second`), so a burst
//! of queued messages does not exceed what the provider account allows (Twilio queues or refuses beyond its
//! per-number rate; SMTP relays throttle). The limit is per process: with several worker processes, divide
//! the provider's rate between them.

use super::{Accepted, Outgoing, Provider, SendError};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;

pub struct RateLimited {
    inner: Arc<dyn Provider>,
    limiter: DefaultDirectRateLimiter,
}

impl RateLimited {
    /// `inner` itself when `max_per_second` is 0 (no limit).
    pub fn wrap(inner: Arc<dyn Provider>, max_per_second: u32) -> Arc<dyn Provider> {
        match NonZeroU32::new(max_per_second) {
            None => inner,
            Some(rate) => Arc::new(Self {
                inner,
                limiter: RateLimiter::direct(Quota::per_second(rate)),
            }),
        }
    }
}

#[async_trait::async_trait]
impl Provider for RateLimited {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    /// Waits for a slot, then sends. The wait counts towards `gateway.worker.send_timeout_ms`: a channel
    /// far over its rate times out and the message is retried later instead of holding a worker.
    async fn send(&self, message: &Outgoing) -> Result<Accepted, SendError> {
        self.limiter.until_ready().await;
        self.inner.send(message).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Channel, Content, DiscardProvider};
    use std::time::Duration;

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
        let provider = RateLimited::wrap(Arc::new(DiscardProvider), 2);
        assert_eq!(provider.name(), "discard");
        for _ in 0..2 {
            let sent =
                tokio::time::timeout(Duration::from_secs(5), provider.send(&message())).await;
            assert!(
                matches!(sent, Ok(Ok(_))),
                "the burst allowance is sent at once"
            );
        }
        // At 2 per second the next slot is about 500 ms away.
        let third =
            tokio::time::timeout(Duration::from_millis(100), provider.send(&message())).await;
        assert!(third.is_err(), "the third send waits for the rate");
    }

    #[tokio::test]
    async fn zero_means_no_limit() {
        let provider = RateLimited::wrap(Arc::new(DiscardProvider), 0);
        for _ in 0..100 {
            assert!(provider.send(&message()).await.is_ok());
        }
    }
}
