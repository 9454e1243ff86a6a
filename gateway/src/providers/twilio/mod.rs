//! The `twilio` provider: a thin typed client of Twilio's 2010-04-01 REST API for SMS (`Messages.json`) and
//! voice calls (`Calls.json` with inline TwiML).
//!
//! - `client`: the provider itself (requests, responses, Basic auth, timeouts);
//! - `twiml`: the spoken message of a call and the mapping of our locales to Twilio's `<Say>` languages;
//! - `errors`: Twilio's error body, `Retry-After`, and the transient/permanent classification of failures.
//!
//! Status callbacks and their signatures are handled by the gateway's HTTP layer, not here.

mod client;
pub mod errors;
pub mod twiml;

pub use client::TwilioProvider;
pub use errors::{classify_twilio_code, ErrorClass};
