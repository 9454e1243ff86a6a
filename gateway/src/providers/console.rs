//! Development provider: writes a masked summary and the rendered message to the log.
//! Production configurations refuse it, because the rendered message holds the code.

use super::{Accepted, Content, Outgoing, Provider, SendError};

pub struct ConsoleProvider;

#[async_trait::async_trait]
impl Provider for ConsoleProvider {
    fn name(&self) -> &'static str {
        "console"
    }

    async fn send(&self, message: &Outgoing) -> Result<Accepted, SendError> {
        let rendered = match &message.content {
            Content::Email { subject, text, .. } => format!("Subject: {subject}\n\n{text}"),
            Content::Sms { body } => body.clone(),
            Content::Voice {
                intro,
                digits,
                outro,
            } => format!(
                "{intro} {} {}",
                digits.as_deref().unwrap_or(""),
                outro.as_deref().unwrap_or("")
            ),
        };
        tracing::info!(
            message.id = %message.message_id,
            message.channel = %message.channel,
            message.to = %reclaim_common::secret::mask_address(&message.to),
            attempt = message.attempt,
            "console delivery (development only):\n{rendered}"
        );
        Ok(Accepted {
            provider_message_id: None,
        })
    }
}
