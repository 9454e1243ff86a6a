//! The TwiML document of a voice call: the intro, then the code read one digit at a time with pauses, twice,
//! then the outro, all in the recipient's language. Written with an XML writer so text and attributes are
//! always escaped.

use quick_xml::events::BytesText;
use quick_xml::Writer;

/// Twilio refuses an inline `Twiml` parameter longer than this.
pub const MAX_TWIML_CHARS: usize = 4_000;

/// How a call speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceStyle {
    /// `<Say voice="…">`; empty = Twilio's default voice for the language.
    pub voice: String,
    /// Silence between two digits.
    pub digit_pause_seconds: u32,
}

/// The `<Say language>` codes Twilio documents for its standard voices.
const SAY_LANGUAGES: &[&str] = &[
    "ca-ES", "da-DK", "de-DE", "en-AU", "en-CA", "en-GB", "en-IN", "en-US", "es-ES", "es-MX",
    "fi-FI", "fr-CA", "fr-FR", "it-IT", "ja-JP", "ko-KR", "nb-NO", "nl-NL", "pl-PL", "pt-BR",
    "pt-PT", "ru-RU", "sv-SE", "zh-CN", "zh-HK", "zh-TW",
];

/// The language used for a bare language tag (`es` → `es-ES`).
const DEFAULT_REGIONS: &[(&str, &str)] = &[
    ("ca", "ca-ES"),
    ("da", "da-DK"),
    ("de", "de-DE"),
    ("en", "en-US"),
    ("es", "es-ES"),
    ("fi", "fi-FI"),
    ("fr", "fr-FR"),
    ("it", "it-IT"),
    ("ja", "ja-JP"),
    ("ko", "ko-KR"),
    ("nb", "nb-NO"),
    ("no", "nb-NO"),
    ("nl", "nl-NL"),
    ("pl", "pl-PL"),
    ("pt", "pt-BR"),
    ("ru", "ru-RU"),
    ("sv", "sv-SE"),
    ("zh", "zh-CN"),
];

/// Maps a BCP 47 locale (`es`, `es-MX`, `pt_PT`, `zh-Hant-TW`) to a Twilio `<Say>` language: the exact
/// language-region when Twilio has it, else the language's usual region, else `en-US`.
pub fn say_language(locale: &str) -> &'static str {
    let normalized = locale.trim().replace('_', "-");
    let mut subtags = normalized.split('-');
    let language = subtags.next().unwrap_or_default().to_ascii_lowercase();
    let region = subtags
        .find(|s| s.len() == 2 && s.chars().all(|c| c.is_ascii_alphabetic()))
        .map(str::to_ascii_uppercase);
    if let Some(region) = region {
        let tag = format!("{language}-{region}");
        if let Some(found) = SAY_LANGUAGES.iter().find(|known| **known == tag) {
            return found;
        }
    }
    DEFAULT_REGIONS
        .iter()
        .find(|(bare, _)| *bare == language)
        .map_or("en-US", |(_, tag)| tag)
}

/// Builds the TwiML of a call. The code's characters are read one at a time (Twilio reads "482913" as a
/// number otherwise) and the whole code is read twice, so a listener who missed it the first time need not
/// call back.
pub fn spoken_message(
    intro: &str,
    digits: Option<&str>,
    outro: Option<&str>,
    locale: &str,
    style: &VoiceStyle,
) -> std::io::Result<String> {
    let language = say_language(locale);
    let mut writer = Writer::new(Vec::new());
    let say = |writer: &mut Writer<Vec<u8>>, text: &str| -> std::io::Result<()> {
        let mut element = writer
            .create_element("Say")
            .with_attribute(("language", language));
        if !style.voice.is_empty() {
            element = element.with_attribute(("voice", style.voice.as_str()));
        }
        element.write_text_content(BytesText::new(text))?;
        Ok(())
    };
    let pause = |writer: &mut Writer<Vec<u8>>, seconds: u32| -> std::io::Result<()> {
        if seconds > 0 {
            writer
                .create_element("Pause")
                .with_attribute(("length", seconds.to_string().as_str()))
                .write_empty()?;
        }
        Ok(())
    };
    writer
        .create_element("Response")
        .write_inner_content(|writer| {
            if !intro.trim().is_empty() {
                say(writer, intro.trim())?;
            }
            let characters: Vec<char> = digits
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            if !characters.is_empty() {
                for _ in 0..2 {
                    pause(writer, style.digit_pause_seconds.max(1))?;
                    for (i, character) in characters.iter().enumerate() {
                        if i > 0 {
                            pause(writer, style.digit_pause_seconds)?;
                        }
                        say(writer, &character.to_string())?;
                    }
                }
            }
            if let Some(outro) = outro.filter(|o| !o.trim().is_empty()) {
                pause(writer, style.digit_pause_seconds.max(1))?;
                say(writer, outro.trim())?;
            }
            Ok(())
        })?;
    String::from_utf8(writer.into_inner()).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn style() -> VoiceStyle {
        VoiceStyle {
            voice: String::new(),
            digit_pause_seconds: 1,
        }
    }

    #[test]
    fn locales_map_to_twilio_say_languages() {
        assert_eq!(say_language("en"), "en-US");
        assert_eq!(say_language("es"), "es-ES");
        assert_eq!(say_language("es-MX"), "es-MX");
        assert_eq!(say_language("es-AR"), "es-ES");
        assert_eq!(say_language("pt_pt"), "pt-PT");
        assert_eq!(say_language("zh-Hant-TW"), "zh-TW");
        assert_eq!(say_language("xx"), "en-US");
        assert_eq!(say_language(""), "en-US");
    }

    #[test]
    fn the_code_is_read_digit_by_digit_twice_between_intro_and_outro() {
        let twiml = spoken_message(
            "Your code is",
            Some("123"),
            Some("Goodbye."),
            "en",
            &style(),
        )
        .expect("twiml");
        let digit = |d: &str| format!(r#"<Say language="en-US">{d}</Say>"#);
        let pause = r#"<Pause length="1"/>"#;
        let once = [digit("1"), digit("2"), digit("3")].join(pause);
        assert_eq!(
            twiml,
            format!(
                r#"<Response><Say language="en-US">Your code is</Say>{pause}{once}{pause}{once}{pause}<Say language="en-US">Goodbye.</Say></Response>"#
            )
        );
    }

    #[test]
    fn text_and_voice_are_escaped() {
        let custom = VoiceStyle {
            voice: "Polly.\"Lucia\"".into(),
            digit_pause_seconds: 0,
        };
        let twiml =
            spoken_message("<Play>x</Play> & \"más\"", None, None, "es", &custom).expect("twiml");
        assert_eq!(
            twiml,
            r#"<Response><Say language="es-ES" voice="Polly.&quot;Lucia&quot;">&lt;Play&gt;x&lt;/Play&gt; &amp; &quot;más&quot;</Say></Response>"#
        );
    }
}
