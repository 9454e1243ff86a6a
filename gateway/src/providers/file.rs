//! Development and test provider: appends one JSON line per delivered message to
//! `<gateway.file.dir>/messages.jsonl`, so tests and people can read what would have been sent.

use super::{Accepted, Outgoing, Provider, SendError};
use reclaim_common::settings::FileProviderSettings;
use std::io::Write;
use std::path::PathBuf;

pub struct FileProvider {
    path: PathBuf,
    /// One writer at a time keeps lines whole.
    lock: tokio::sync::Mutex<()>,
}

impl FileProvider {
    pub fn new(settings: &FileProviderSettings) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&settings.dir).map_err(|e| {
            anyhow::anyhow!("gateway.file.dir = {}: cannot create it: {e}", settings.dir)
        })?;
        Ok(Self {
            path: PathBuf::from(&settings.dir).join("messages.jsonl"),
            lock: tokio::sync::Mutex::new(()),
        })
    }
}

#[async_trait::async_trait]
impl Provider for FileProvider {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn send(&self, message: &Outgoing) -> Result<Accepted, SendError> {
        let provider_message_id = format!("file-{}", uuid::Uuid::new_v4().simple());
        let mut line = serde_json::to_vec(&serde_json::json!({
            "provider_message_id": provider_message_id,
            "message_id": message.message_id,
            "attempt": message.attempt,
            "channel": message.channel,
            "to": message.to,
            "locale": message.locale,
            "expires_at": message.expires_at,
            "status_callback": message.status_callback,
            "content": message.content,
        }))
        .map_err(|e| SendError::Permanent {
            code: None,
            message: format!("cannot encode the message: {e}"),
        })?;
        line.push(b'\n');
        let _guard = self.lock.lock().await;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            // One write call per line, so a crash leaves at most one partial line at the end.
            file.write_all(&line)
        })
        .await
        .map_err(|e| SendError::Transient {
            code: None,
            message: format!("file writer failed: {e}"),
            retry_after: None,
        })?
        .map_err(|e| SendError::Transient {
            code: Some("io".into()),
            message: format!("cannot write {}: {e}", self.path.display()),
            retry_after: None,
        })?;
        Ok(Accepted {
            provider_message_id: Some(provider_message_id),
        })
    }
}
