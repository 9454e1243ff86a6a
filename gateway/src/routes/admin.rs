//! `/admin/...`: operator actions, behind `gateway.admin.tokens` (never the API tokens).

use super::messages::internal;
use super::ApiState;
use crate::outbox;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use reclaim_common::Db;
use serde::Serialize;
use utoipa::ToSchema;

/// Messages re-sealed per transaction, so that a large outbox is never locked for long.
const RESEAL_BATCH: i64 = 500;

/// What a re-seal did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResealView {
    /// The key that now seals every readable message (the last of `gateway.storage.keys`).
    pub key_id: String,
    /// Messages moved from an older key (or from clear text written before sealing) to `key_id`.
    pub resealed: usize,
    /// Messages sealed with a key that is no longer configured; they stay as they are and fail when claimed.
    pub unreadable: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ResealError {
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ResponseError for ResealError {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Unexpected(e) => internal(e),
        }
    }
}

/// Re-seals every stored message with the newest key, so that older keys can be removed from
/// `gateway.storage.keys`.
#[utoipa::path(
    post,
    path = "/admin/storage/reseal",
    responses(
        (status = 200, description = "Every readable message is now sealed with the newest key", body = ResealView),
        (status = 401, description = "Missing or wrong admin bearer token"),
    ),
    security(("bearer" = []))
)]
pub async fn reseal_storage(
    state: web::Data<ApiState>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ResealError> {
    let keyring = state.keyring.clone();
    let mut view = ResealView {
        key_id: keyring.newest_id().to_string(),
        resealed: 0,
        unreadable: 0,
    };
    let mut after = String::new();
    loop {
        let ring = keyring.clone();
        let from = after.clone();
        let batch = db
            .run(move |conn| outbox::reseal_batch(conn, &ring, &from, RESEAL_BATCH))
            .await
            .map_err(anyhow::Error::new)?;
        view.resealed += batch.resealed;
        view.unreadable += batch.unreadable;
        match batch.last_id {
            Some(last) => after = last,
            None => break,
        }
    }
    tracing::info!(
        storage.key_id = %view.key_id,
        storage.resealed = view.resealed,
        storage.unreadable = view.unreadable,
        "message data re-sealed"
    );
    Ok(HttpResponse::Ok().json(view))
}
