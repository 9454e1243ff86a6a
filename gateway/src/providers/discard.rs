//! Benchmark provider: accepts every message and does nothing with it, so a benchmark measures the
//! gateway's own cost. Never use it for real traffic (production configurations refuse it).
//! The message id it returns records the instant its `send` returned, so the gateway benchmark can measure
//! enqueue → provider call returned from the stored attempt rows, with nothing kept in memory.

use super::{Accepted, Outgoing, Provider, SendError};

pub struct DiscardProvider;

/// Prefix of the message ids the discard provider hands back.
const ID_PREFIX: &str = "discard:";

impl DiscardProvider {
    /// The instant a send returned, read back from the message id it returned (the attempt and message
    /// rows store it); `None` for any other id.
    pub fn returned_at(provider_message_id: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        let instant = provider_message_id.strip_prefix(ID_PREFIX)?;
        chrono::DateTime::parse_from_rfc3339(instant)
            .ok()
            .map(|at| at.to_utc())
    }
}

#[async_trait::async_trait]
impl Provider for DiscardProvider {
    fn name(&self) -> &'static str {
        "discard"
    }

    async fn send(&self, _message: &Outgoing) -> Result<Accepted, SendError> {
        // Taken as the last step, so it is the instant the call returns.
        let returned = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        Ok(Accepted {
            provider_message_id: Some(format!("{ID_PREFIX}{returned}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Channel, Content};

    #[tokio::test]
    async fn the_message_id_records_the_instant_the_send_returned() {
        let message = Outgoing {
            message_id: uuid::Uuid::new_v4(),
            attempt: 1,
            channel: Channel::Sms,
            to: "+14155550100".into(),
            content: Content::Sms { body: "x".into() },
            locale: "en".into(),
            expires_at: None,
            status_callback: None,
        };
        let before = chrono::Utc::now();
        let accepted = DiscardProvider
            .send(&message)
            .await
            .expect("discard accepts");
        let after = chrono::Utc::now();
        let id = accepted.provider_message_id.expect("an id");
        let returned = DiscardProvider::returned_at(&id).expect("the id holds an instant");
        assert!(
            before <= returned && returned <= after,
            "{before} <= {returned} <= {after}"
        );
        assert_eq!(DiscardProvider::returned_at("SM0123"), None);
    }
}
