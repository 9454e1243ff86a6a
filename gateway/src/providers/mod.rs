//! Providers: what actually hands a message to the outside world, one attempt at a time.
//!
//! Here: the interface every provider implements, the provider per channel chosen from config
//! (`gateway.channels.<channel>.provider`), the error classification tables (`classify`), and the
//! providers `smtp`, `console`, `file` and `discard`. The Twilio client lives in `twilio/`.
//! Not here: retries, fallback and bookkeeping (the delivery worker does those).

pub mod classify;
mod console;
mod discard;
mod file;
mod rate_limited;
mod smtp;
pub mod twilio;

pub use crate::channel::Channel;
use reclaim_common::settings::{ChannelSettings, ProviderKind};
use reclaim_common::Settings;
use std::collections::HashMap;
use std::sync::Arc;

pub use console::ConsoleProvider;
pub use discard::DiscardProvider;
pub use file::FileProvider;
pub use rate_limited::RateLimited;
pub use smtp::SmtpProvider;

/// What a provider is asked to deliver: one attempt of one outbox message.
pub struct Outgoing {
    pub message_id: uuid::Uuid,
    pub attempt: u32,
    pub channel: Channel,
    /// Already validated: E.164 for sms/voice, RFC 5322 addr-spec for email.
    pub to: String,
    pub content: Content,
    /// BCP 47, e.g. "en", "es".
    pub locale: String,
    /// Never deliver after; SMS ValidityPeriod derives from it.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Absolute URL for provider status callbacks, if configured.
    pub status_callback: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
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

impl SendError {
    /// The same error with every address in its text masked: providers quote recipients (an SMTP 550
    /// names the mailbox, Twilio names the number), and the text is logged, stored in `last_error` and
    /// shown by `GET /v1/messages/{id}`.
    pub fn masked(self) -> Self {
        use reclaim_common::secret::mask_addresses_in;
        match self {
            Self::Transient {
                code,
                message,
                retry_after,
            } => Self::Transient {
                code,
                message: mask_addresses_in(&message),
                retry_after,
            },
            Self::Permanent { code, message } => Self::Permanent {
                code,
                message: mask_addresses_in(&message),
            },
        }
    }
}

#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// "smtp", "twilio", "console", "file", ...
    fn name(&self) -> &'static str;
    async fn send(&self, message: &Outgoing) -> Result<Accepted, SendError>;
}

/// The provider of each channel, built once at start-up.
#[derive(Clone)]
pub struct Providers {
    by_channel: HashMap<Channel, Arc<dyn Provider>>,
}

impl Providers {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let channels = &settings.gateway.channels;
        let mut built: HashMap<ProviderKind, Arc<dyn Provider>> = HashMap::new();
        let mut by_channel = HashMap::new();
        for (channel, config) in [
            (Channel::Email, &channels.email),
            (Channel::Sms, &channels.sms),
            (Channel::Voice, &channels.voice),
        ] {
            let provider = match built.get(&config.provider) {
                Some(provider) => provider.clone(),
                None => {
                    let provider = build(settings, config)?;
                    built.insert(config.provider, provider.clone());
                    provider
                }
            };
            by_channel.insert(channel, RateLimited::wrap(provider, config.max_per_second));
        }
        Ok(Self { by_channel })
    }

    /// Puts `provider` in charge of `channel` (tests and embedders).
    pub fn with(mut self, channel: Channel, provider: Arc<dyn Provider>) -> Self {
        self.by_channel.insert(channel, provider);
        self
    }

    pub fn for_channel(&self, channel: Channel) -> Option<&Arc<dyn Provider>> {
        self.by_channel.get(&channel)
    }
}

fn build(settings: &Settings, config: &ChannelSettings) -> anyhow::Result<Arc<dyn Provider>> {
    let gateway = &settings.gateway;
    Ok(match config.provider {
        ProviderKind::Smtp => Arc::new(SmtpProvider::new(&gateway.smtp)?),
        ProviderKind::Console => Arc::new(ConsoleProvider),
        ProviderKind::File => Arc::new(FileProvider::new(&gateway.file)?),
        ProviderKind::Discard => Arc::new(DiscardProvider),
        ProviderKind::Twilio => Arc::new(twilio::TwilioProvider::new(&gateway.twilio)?),
    })
}
