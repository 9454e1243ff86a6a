//! The `[gateway]` section: the code and notice delivery service.

use super::{check_listen, ApiSettings, Environment, Problem, TwilioSettings};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// Where the gateway's HTTP API, IdP courier adapters and provider callbacks listen.
    pub listen: String,
    pub api: ApiSettings,
    /// The Twilio REST client used by the SMS and voice channels.
    pub twilio: TwilioSettings,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4471".into(),
            api: ApiSettings::default(),
            twilio: TwilioSettings::default(),
        }
    }
}

impl GatewaySettings {
    pub(crate) fn validate(&self, environment: Environment, problems: &mut Vec<Problem>) {
        check_listen("gateway.listen", &self.listen, problems);
        self.twilio.validate(environment, problems);
    }
}
