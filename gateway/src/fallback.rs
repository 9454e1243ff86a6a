//! The configured fallback chain of a message (`gateway.channels.<channel>.fallback`), for requests that
//! bring no chain of their own.

use crate::address::Destination;
use crate::channel::Channel;
use crate::outbox::FallbackStep;
use crate::templates::Templates;
use reclaim_common::settings::ChannelsSettings;

/// The channels configured after `channel`, to the same destination, keeping only those the template has a
/// version for in `locale` (a link cannot become a call).
pub fn configured(
    channels: &ChannelsSettings,
    templates: &Templates,
    template: &str,
    locale: &str,
    channel: Channel,
    destination: &Destination,
) -> Vec<FallbackStep> {
    let configured = match channel {
        Channel::Email => &channels.email.fallback,
        Channel::Sms => &channels.sms.fallback,
        Channel::Voice => &channels.voice.fallback,
    };
    configured
        .iter()
        .filter_map(|name| Channel::parse(name))
        .filter(|next| templates.supports(template, locale, *next))
        .map(|next| FallbackStep {
            channel: next,
            to: destination.as_str().to_string(),
        })
        .collect()
}
