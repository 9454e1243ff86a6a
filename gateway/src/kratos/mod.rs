//! Ory Kratos's HTTP courier: what Kratos sends to `POST /hooks/kratos/courier` (`courier.delivery_strategy:
//! http` for email, a `courier.channels` entry of type http for SMS) and how it becomes an outbox message.
//!
//! `payload` is the body as Kratos sends it; `courier` turns it into a [`courier::CourierMessage`] (channel,
//! destination, template type, code or link, locale), plans the outbox message (our template or Kratos's
//! rendering) and queues it once per Kratos retry window. Authentication and the HTTP answers live in
//! `routes::kratos_courier`; the templates themselves in `templates`.

pub mod courier;
pub mod payload;
