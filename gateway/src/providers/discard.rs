//! Benchmark provider: accepts every message and does nothing with it, so a benchmark measures the
//! gateway's own cost. Never use it for real traffic (production configurations refuse it).

use super::{Accepted, Outgoing, Provider, SendError};

pub struct DiscardProvider;

#[async_trait::async_trait]
impl Provider for DiscardProvider {
    fn name(&self) -> &'static str {
        "discard"
    }

    async fn send(&self, _message: &Outgoing) -> Result<Accepted, SendError> {
        Ok(Accepted {
            provider_message_id: None,
        })
    }
}
