//! A candidate password: 1..=1024 bytes of UTF-8, never shown.

/// The longest password accepted, in bytes (argon2 takes any length; this bounds request cost).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A plaintext password. `Debug` shows `***`; there is no `Display` and no `Serialize`.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn parse(value: String) -> Result<Self, String> {
        if value.is_empty() {
            return Err("must not be empty".into());
        }
        if value.len() > MAX_PASSWORD_BYTES {
            return Err(format!("must be at most {MAX_PASSWORD_BYTES} bytes"));
        }
        Ok(Self(value))
    }

    /// Raw bytes, e.g. from a form body: must be UTF-8.
    pub fn from_bytes(value: Vec<u8>) -> Result<Self, String> {
        String::from_utf8(value)
            .map_err(|_| "must be valid UTF-8".to_string())
            .and_then(Self::parse)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_one_to_1024_bytes_of_utf8_and_never_shown() {
        assert!(Password::parse(String::new()).is_err());
        assert!(Password::parse("é".repeat(512)).is_ok());
        assert!(Password::parse("é".repeat(513)).is_err());
        assert!(Password::from_bytes(vec![0xff, 0x41]).is_err());
        let password = Password::parse("hunter2".into()).expect("valid");
        assert_eq!(format!("{password:?}"), "Password(***)");
    }
}
