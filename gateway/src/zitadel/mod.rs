//! ZITADEL's HTTP notification providers: what an active HTTP SMS or email provider sends to
//! `POST /hooks/zitadel/sms` and `/hooks/zitadel/email`, and how it becomes an outbox message.
//!
//! `payload` is the body as ZITADEL sends it (`contextInfo`, `templateData`, `args`); `notification` turns
//! it into a [`notification::ZitadelMessage`] (channel, destination, event, code), plans the outbox message
//! (our template for the code events we know, else ZITADEL's rendered text) and hands it to
//! [`crate::handoff`] to be queued once per retry window. The signature check and the HTTP answers live in
//! `routes::zitadel_provider`.

pub mod notification;
pub mod payload;
