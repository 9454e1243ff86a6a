//! Who a password belongs to: the identity's id and what profile selection and notices need.

use crate::policy::IdentityTraits;
use std::collections::BTreeMap;

/// An identity id as the identity provider knows it (a Kratos UUID, a ZITADEL user id...): 1..=255 printable
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdentityId(String);

impl IdentityId {
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.is_empty() {
            return Err("must not be empty".into());
        }
        if value.len() > 255 {
            return Err("must be at most 255 bytes".into());
        }
        if value.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IdentityId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An identity as an adapter sees it. Only `id` is required; the rest selects a profile and addresses
/// notices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: IdentityId,
    pub schema_id: Option<String>,
    /// Flat string view of the identity's metadata, for `[[plugin.policy.select]]` metadata rules.
    pub metadata: BTreeMap<String, String>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

impl Identity {
    pub fn new(id: IdentityId) -> Self {
        Self {
            id,
            schema_id: None,
            metadata: BTreeMap::new(),
            email: None,
            phone: None,
        }
    }

    pub fn traits(&self) -> IdentityTraits<'_> {
        IdentityTraits {
            schema_id: self.schema_id.as_deref(),
            metadata: Some(&self.metadata),
        }
    }

    /// True when profile selection has something to look at; otherwise a stored profile is kept.
    pub fn has_traits(&self) -> bool {
        self.schema_id.is_some() || !self.metadata.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_ids_are_non_empty_short_and_printable() {
        assert!(IdentityId::parse("9f6a1c2e-0000-4000-8000-000000000001").is_ok());
        assert!(IdentityId::parse("").is_err());
        assert!(IdentityId::parse(&"x".repeat(256)).is_err());
        assert!(IdentityId::parse("a\nb").is_err());
    }
}
