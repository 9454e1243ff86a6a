//! HTTP handlers: the messages API (`/v1/messages`) and provider callbacks (`/providers/...`).

pub mod messages;
pub mod twilio_status;

use crate::metrics::GatewayMetrics;
use crate::templates::Templates;
use actix_web::web;
use reclaim_common::sealed::Keyring;
use reclaim_common::settings::GatewaySettings;
use std::sync::Arc;

/// What the handlers share.
pub struct ApiState {
    pub settings: GatewaySettings,
    pub templates: Arc<Templates>,
    pub metrics: GatewayMetrics,
    /// Seals message data before it is stored.
    pub keyring: Keyring,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/messages", web::post().to(messages::enqueue_message))
        .route("/v1/messages/{id}", web::get().to(messages::get_message))
        .route(
            "/providers/twilio/status",
            web::post().to(twilio_status::receive_twilio_status),
        );
}
