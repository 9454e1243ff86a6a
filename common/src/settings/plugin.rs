//! The `[plugin]` section: the password-policy service.

use super::{check_listen, ApiSettings, Environment, KratosSettings, Problem};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginSettings {
    /// Where the plugin's HTTP API and webhooks listen.
    pub listen: String,
    pub api: ApiSettings,
    pub kratos: KratosSettings,
}

impl Default for PluginSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4470".into(),
            api: ApiSettings::default(),
            kratos: KratosSettings::default(),
        }
    }
}

impl PluginSettings {
    pub(crate) fn validate(&self, environment: Environment, problems: &mut Vec<Problem>) {
        check_listen("plugin.listen", &self.listen, problems);
        self.kratos.validate(environment, problems);
    }
}
