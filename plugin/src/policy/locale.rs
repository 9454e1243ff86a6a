//! Languages of the messages shown to end users.

use serde::Serialize;

/// A language we have messages in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    En,
    Es,
}

impl Locale {
    /// `en`, `es`, `es-MX`... → the language; anything else → `None`.
    pub fn parse(tag: &str) -> Option<Self> {
        let primary = tag.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Self::En),
            "es" => Some(Self::Es),
            _ => None,
        }
    }

    /// Picks the best language an `Accept-Language` header asks for (by q-value, then order), else `fallback`.
    pub fn negotiate(accept_language: Option<&str>, fallback: Locale) -> Locale {
        let Some(header) = accept_language else {
            return fallback;
        };
        let mut best: Option<(f32, Locale)> = None;
        for item in header.split(',') {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or_default();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if q <= 0.0 {
                continue;
            }
            if let Some(locale) = Self::parse(tag) {
                if best.is_none_or(|(best_q, _)| q > best_q) {
                    best = Some((q, locale));
                }
            }
        }
        best.map_or(fallback, |(_, locale)| locale)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Es => "es",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_quality_language_we_have_wins() {
        assert_eq!(
            Locale::negotiate(Some("fr-CH, fr;q=0.9, es;q=0.8, en;q=0.7"), Locale::En),
            Locale::Es
        );
        assert_eq!(
            Locale::negotiate(Some("es-MX;q=0.5, en-GB"), Locale::Es),
            Locale::En
        );
    }

    #[test]
    fn without_a_usable_header_the_configured_language_is_used() {
        assert_eq!(Locale::negotiate(None, Locale::Es), Locale::Es);
        assert_eq!(Locale::negotiate(Some("de, fr"), Locale::Es), Locale::Es);
        assert_eq!(Locale::negotiate(Some("en;q=0"), Locale::Es), Locale::Es);
    }
}
