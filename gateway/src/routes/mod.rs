//! HTTP handlers: the messages API (`/v1/messages`, `gateway.api.tokens`), operator actions (`/admin`,
//! `gateway.admin.tokens` and `operators`), identity provider couriers (`/hooks/kratos/courier`, Kratos's own credentials,
//! `gateway.kratos`; `/hooks/zitadel/{sms,email}`, signed, `gateway.zitadel`;
//! `/hooks/supabase/send-sms|send-email`, signed, `gateway.supabase`) and provider callbacks
//! (`/providers/...`, signed by the provider).

pub mod admin;
pub mod document;
pub mod kratos_courier;
pub mod messages;
pub mod supabase_send;
pub mod support;
pub mod twilio_status;
pub mod verifications;
pub mod zitadel_provider;

use crate::metrics::GatewayMetrics;
use crate::templates::Templates;
use actix_web::middleware::from_fn;
use actix_web::web;
use reclaim_common::auth::{require_admin, require_bearer, AdminOperators, BearerTokens};
use reclaim_common::clock::Clock;
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
    /// The time handlers decide by (tests move it past a dedupe window).
    pub clock: Clock,
    /// The abuse limits every send passes.
    pub limits: crate::limits::Limits,
    /// Checks Supabase's send-hook signatures (`gateway.supabase.hook_secrets`).
    pub supabase_verifier: reclaim_common::auth::standard_webhooks::Verifier,
    /// Tells the plugin of Supabase's password changes (`gateway.supabase.plugin_url`, or `serve all`).
    pub supabase_plugin: crate::supabase::plugin_link::PluginReporter,
    /// Stores `POST /v1/messages` messages, concurrent requests in one transaction.
    pub intake: crate::intake::Intake,
    /// Wakes this process's idle delivery workers when an identity provider's hook queued a message.
    pub doorbell: crate::delivery::Doorbell,
}

/// Mounts the routes. The bearer token is checked before any body is read.
pub fn configure(cfg: &mut web::ServiceConfig, settings: &GatewaySettings) {
    cfg.service(
        web::scope("/v1")
            .app_data(web::Data::new(BearerTokens(settings.api.tokens.clone())))
            .wrap(from_fn(require_bearer))
            .route("/messages", web::post().to(messages::enqueue_message))
            .route("/messages/{id}", web::get().to(messages::get_message))
            .route(
                "/verifications",
                web::post().to(verifications::start_verification),
            )
            .route(
                "/verifications/{id}",
                web::get().to(verifications::show_verification),
            )
            .route(
                "/verifications/{id}/resend",
                web::post().to(verifications::resend_verification),
            )
            .route(
                "/verifications/{id}/check",
                web::post().to(verifications::check_verification),
            )
            .route(
                "/verifications/{id}/cancel",
                web::post().to(verifications::cancel_verification),
            ),
    )
    .service(
        web::scope("/admin")
            .app_data(web::Data::new(AdminOperators(settings.admin.operators())))
            .wrap(from_fn(require_admin))
            .route("/storage/reseal", web::post().to(admin::reseal_storage))
            .route(
                "/recipients/{address}/timeline",
                web::get().to(support::recipient_timeline),
            )
            .route(
                "/messages/{id}/retry",
                web::post().to(support::retry_message),
            )
            .route("/limits", web::delete().to(support::lift_limits)),
    )
    // Kratos authenticates with its own key or Basic credentials, checked by the handler.
    .route(
        "/hooks/kratos/courier",
        web::post().to(kratos_courier::receive_kratos_courier),
    )
    // ZITADEL signs its HTTP provider calls; the handler checks the signature over the raw body.
    .route(
        "/hooks/zitadel/sms",
        web::post().to(zitadel_provider::receive_zitadel_sms),
    )
    .route(
        "/hooks/zitadel/email",
        web::post().to(zitadel_provider::receive_zitadel_email),
    )
    // Supabase signs its send hooks (Standard Webhooks), checked by the handler over the raw body.
    .route(
        "/hooks/supabase/send-sms",
        web::post().to(supabase_send::receive_supabase_send_sms),
    )
    .route(
        "/hooks/supabase/send-email",
        web::post().to(supabase_send::receive_supabase_send_email),
    )
    .route(
        "/providers/twilio/status",
        web::post().to(twilio_status::receive_twilio_status),
    );
}
