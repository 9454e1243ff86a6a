//! Providers: the services that carry a message to a person (SMTP, Twilio, ...), behind one trait.
//!
//! A provider delivers one attempt of one outbox message and says whether a failure is worth retrying; the
//! outbox, retries and fallbacks live elsewhere.

pub mod twilio;

/// What a provider is asked to deliver: one attempt of one outbox message.
pub struct Outgoing {
    pub message_id: uuid::Uuid,
    pub attempt: u32,
    pub channel: Channel,
    /// Already validated: E.164 for sms/voice.
    pub to: String,
    pub content: Content,
    /// BCP 47, e.g. "en", "es".
    pub locale: String,
    /// Never deliver after; the SMS `ValidityPeriod` derives from it.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Absolute URL for provider status callbacks, if configured.
    pub status_callback: Option<String>,
}

pub enum Channel {
    Email,
    Sms,
    Voice,
}

pub enum Content {
    Email {
        subject: String,
        text: String,
        html: Option<String>,
    },
    Sms {
        body: String,
    },
    /// Spoken message: `intro` then the code read digit by digit (twice), in `locale`.
    Voice {
        intro: String,
        digits: Option<String>,
        outro: Option<String>,
    },
}

pub struct Accepted {
    pub provider_message_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("transient: {message}")]
    Transient {
        code: Option<String>,
        message: String,
        retry_after: Option<std::time::Duration>,
    },
    #[error("permanent: {message}")]
    Permanent {
        code: Option<String>,
        message: String,
    },
}

#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &'static str;
    async fn send(&self, message: &Outgoing) -> Result<Accepted, SendError>;
}
