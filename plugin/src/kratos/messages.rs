//! Kratos UI message ids of our own. Kratos uses 1xxxxxx for information and 4xxxxxx for errors; Reclaim's
//! ids are 147xxxx and 447xxxx (after our port, 4470), so they never collide with Kratos's and a UI can
//! translate them like Kratos's own.

use super::response::UiMessage;
use crate::policy::{Locale, Violation, ViolationCode};
use serde_json::Value;

/// The id Kratos shows for a policy violation or notice.
pub fn id_for(code: ViolationCode) -> u32 {
    match code {
        ViolationCode::PasswordReused => 4_470_001,
        ViolationCode::PasswordTooYoung => 4_470_002,
        ViolationCode::PasswordExpired => 4_470_003,
        ViolationCode::PasswordChangeRequired => 4_470_004,
        ViolationCode::GraceLogin => 1_470_001,
        ViolationCode::PasswordExpiresSoon => 1_470_002,
    }
}

/// Messages of the adapter itself (not policy decisions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterMessage {
    /// The request could not be understood (broken body, no identity).
    InvalidRequest,
    /// Reclaim could not decide (database unavailable) and the hook fails closed.
    Unavailable,
    /// The password change did not pass through the edge guard, so its history could not be checked.
    NotChecked,
}

impl AdapterMessage {
    pub fn id(self) -> u32 {
        match self {
            Self::InvalidRequest => 4_470_010,
            Self::Unavailable => 4_470_011,
            Self::NotChecked => 4_470_012,
        }
    }

    fn text(self, locale: Locale) -> &'static str {
        match (self, locale) {
            (Self::InvalidRequest, Locale::En) => "The request could not be processed. Please try again.",
            (Self::InvalidRequest, Locale::Es) => "No se pudo procesar la solicitud. Inténtalo de nuevo.",
            (Self::Unavailable, Locale::En) => {
                "We cannot check your password right now. Please try again in a few minutes."
            }
            (Self::Unavailable, Locale::Es) => {
                "No podemos comprobar tu contraseña en este momento. Inténtalo de nuevo en unos minutos."
            }
            (Self::NotChecked, Locale::En) => "The new password could not be checked. Reload the page and try again.",
            (Self::NotChecked, Locale::Es) => {
                "No se pudo comprobar la nueva contraseña. Vuelve a cargar la página e inténtalo de nuevo."
            }
        }
    }

    pub fn ui(self, locale: Locale) -> UiMessage {
        UiMessage {
            id: self.id(),
            text: self.text(locale).to_string(),
            kind: "error",
            context: Value::Null,
        }
    }
}

/// The guard refused to let Kratos send a recovery code: the gateway's limits for the address (or the
/// client) were reached. `retry_after_seconds` is when a send will be allowed again, if ever.
pub fn recovery_send_refused(locale: Locale, retry_after_seconds: Option<u64>) -> UiMessage {
    let text = match (retry_after_seconds, locale) {
        (Some(seconds), Locale::En) => format!(
            "Too many codes were sent. Please wait {} before asking for another one.",
            wait_en(seconds)
        ),
        (Some(seconds), Locale::Es) => format!(
            "Se han enviado demasiados códigos. Espera {} antes de pedir otro.",
            wait_es(seconds)
        ),
        (None, Locale::En) => "A code cannot be sent to this address.".to_string(),
        (None, Locale::Es) => "No se puede enviar un código a esta dirección.".to_string(),
    };
    UiMessage {
        id: 4_470_020,
        text,
        kind: "error",
        context: match retry_after_seconds {
            Some(seconds) => serde_json::json!({ "retry_after_seconds": seconds }),
            None => Value::Null,
        },
    }
}

fn wait_en(seconds: u64) -> String {
    match seconds {
        0..=59 => format!("{} seconds", seconds.max(1)),
        60..=119 => "a minute".to_string(),
        _ => format!("{} minutes", seconds.div_ceil(60)),
    }
}

fn wait_es(seconds: u64) -> String {
    match seconds {
        0..=59 => format!("{} segundos", seconds.max(1)),
        60..=119 => "un minuto".to_string(),
        _ => format!("{} minutos", seconds.div_ceil(60)),
    }
}

/// A policy violation as a Kratos message; the violation's numbers go into `context`.
pub fn from_violation(violation: &Violation) -> UiMessage {
    let mut context = serde_json::to_value(violation).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut context {
        map.remove("message");
    }
    let kind = match violation.code {
        ViolationCode::GraceLogin | ViolationCode::PasswordExpiresSoon => "info",
        _ => "error",
    };
    UiMessage {
        id: id_for(violation.code),
        text: violation.message.clone(),
        kind,
        context,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapter_messages_read_exactly_in_english_and_spanish() {
        let cases = [
            (AdapterMessage::InvalidRequest, Locale::En, 4_470_010, "The request could not be processed. Please try again."),
            (AdapterMessage::InvalidRequest, Locale::Es, 4_470_010, "No se pudo procesar la solicitud. Inténtalo de nuevo."),
            (AdapterMessage::Unavailable, Locale::En, 4_470_011, "We cannot check your password right now. Please try again in a few minutes."),
            (AdapterMessage::Unavailable, Locale::Es, 4_470_011, "No podemos comprobar tu contraseña en este momento. Inténtalo de nuevo en unos minutos."),
            (AdapterMessage::NotChecked, Locale::En, 4_470_012, "The new password could not be checked. Reload the page and try again."),
            (AdapterMessage::NotChecked, Locale::Es, 4_470_012, "No se pudo comprobar la nueva contraseña. Vuelve a cargar la página e inténtalo de nuevo."),
        ];
        for (message, locale, id, text) in cases {
            let ui = message.ui(locale);
            assert_eq!((ui.id, ui.text.as_str(), ui.kind), (id, text, "error"));
        }
    }
}
