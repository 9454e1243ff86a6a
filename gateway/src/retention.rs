//! The retention janitor: deletes finished messages (with their attempts) after
//! `gateway.retention.message_days`, idempotency records after `gateway.retention.idempotency_hours` and
//! abuse-limit records once no limit counts them (each carries its own expiry: its scope's longest window),
//! every `gateway.retention.interval_seconds`, and counts what it deleted. [`Janitor::run_once`] takes the
//! clock as an argument so tests reach "30 days later" without waiting.

use crate::metrics::GatewayMetrics;
use crate::{limits, outbox};
use chrono::{DateTime, TimeDelta, Utc};
use reclaim_common::settings::RetentionSettings;
use reclaim_common::shutdown::Shutdown;
use reclaim_common::{idempotency, Db};
use std::time::Duration;

/// What one run deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Swept {
    pub messages: usize,
    pub idempotency_records: usize,
    /// Verifications (with their sends) that expired `message_days` ago.
    pub verifications: usize,
    pub limit_records: usize,
}

#[derive(Clone)]
pub struct Janitor {
    db: Db,
    settings: RetentionSettings,
    metrics: GatewayMetrics,
}

impl Janitor {
    pub fn new(db: Db, settings: RetentionSettings, metrics: GatewayMetrics) -> Self {
        Self {
            db,
            settings,
            metrics,
        }
    }

    /// Deletes what is past its retention at `now`.
    pub async fn run_once(&self, now: DateTime<Utc>) -> anyhow::Result<Swept> {
        let messages_before =
            (now - TimeDelta::days(i64::from(self.settings.message_days))).naive_utc();
        let records_before =
            (now - TimeDelta::hours(i64::from(self.settings.idempotency_hours))).naive_utc();
        let swept = self
            .db
            .run(move |conn| {
                // Failed messages kept for an operator's retry lose their code once it has expired.
                outbox::wipe_expired_data(conn, now.naive_utc())?;
                Ok::<_, reclaim_common::db::DbError>(Swept {
                    messages: outbox::delete_finished(conn, messages_before)?,
                    idempotency_records: idempotency::prune(conn, records_before)?,
                    verifications: crate::verifications::delete_expired(conn, messages_before)?,
                    limit_records: limits::prune(conn, now.naive_utc())?,
                })
            })
            .await?;
        let deleted = &self.metrics.retention_deleted;
        deleted
            .with_label_values(&["messages"])
            .inc_by(swept.messages as u64);
        deleted
            .with_label_values(&["idempotency_records"])
            .inc_by(swept.idempotency_records as u64);
        deleted
            .with_label_values(&["verifications"])
            .inc_by(swept.verifications as u64);
        deleted
            .with_label_values(&["limit_records"])
            .inc_by(swept.limit_records as u64);
        Ok(swept)
    }

    /// Runs [`Janitor::run_once`] now and then every `interval_seconds` until `shutdown`.
    pub fn spawn(self, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let interval = Duration::from_secs(self.settings.interval_seconds);
            while !shutdown.is_triggered() {
                match self.run_once(Utc::now()).await {
                    Ok(swept) => tracing::info!(
                        retention.messages = swept.messages,
                        retention.idempotency_records = swept.idempotency_records,
                        retention.limit_records = swept.limit_records,
                        "retention janitor ran"
                    ),
                    // The next run tries again; nothing is lost by waiting.
                    Err(error) => {
                        tracing::warn!(error = %format!("{error:#}"), "retention janitor failed")
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = shutdown.wait() => {}
                }
            }
        })
    }
}
