//! Foreign password hashes imported from an identity provider, verified one by one: argon2id/argon2i,
//! bcrypt (`$2b$`, `$2a$`, `$2y$`), pbkdf2-sha256 and scrypt, all as PHC / modular-crypt strings.
//!
//! Work factors are capped so that an imported hash cannot make one verification take unbounded memory or
//! time: memory at `max(plugin.history.argon2.m_kib, 131072)` KiB, argon2 passes `t` at 16 and lanes `p` at
//! 64, scrypt parallelism `p` at 16, bcrypt cost at 16, pbkdf2 at 10^7 rounds.

use argon2::password_hash::{PasswordHash, PasswordVerifier};

/// Never below what Ory Kratos uses by default for argon2 (128 MiB), so its hashes can always be imported.
const MIN_MEMORY_CAP_KIB: u64 = 131_072;
const MAX_BCRYPT_COST: u32 = 16;
const MAX_PBKDF2_ROUNDS: u64 = 10_000_000;
/// Time grows with passes × memory; Kratos uses 1, Keycloak 5, OWASP's profiles at most 5.
const MAX_ARGON2_T: u64 = 16;
/// Kratos defaults to twice its host's cores; 64 covers a 32-core host. Our verifier runs lanes one after
/// the other, so lanes cost time like passes do.
const MAX_ARGON2_P: u64 = 64;
/// scrypt runs its `p` mixes one after the other: time grows linearly with it; everyone uses 1.
const MAX_SCRYPT_P: u64 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignScheme {
    Argon2,
    Bcrypt,
    Pbkdf2Sha256,
    Scrypt,
}

impl ForeignScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Argon2 => "argon2",
            Self::Bcrypt => "bcrypt",
            Self::Pbkdf2Sha256 => "pbkdf2-sha256",
            Self::Scrypt => "scrypt",
        }
    }
}

/// Checks that `hash` is a supported foreign hash within the work caps; the message says what is wrong.
pub fn inspect(hash: &str, memory_cap_kib: u32) -> Result<ForeignScheme, String> {
    let cap = u64::from(memory_cap_kib).max(MIN_MEMORY_CAP_KIB);
    if let Some(rest) = ["$2b$", "$2a$", "$2y$"]
        .iter()
        .find_map(|prefix| hash.strip_prefix(prefix))
    {
        let cost = rest
            .get(..2)
            .and_then(|c| c.parse::<u32>().ok())
            .ok_or("is not a bcrypt hash: the cost is missing")?;
        if rest.len() != 2 + 1 + 53 || rest.as_bytes().get(2) != Some(&b'$') {
            return Err("is not a bcrypt hash: wrong length".into());
        }
        if !(4..=MAX_BCRYPT_COST).contains(&cost) {
            return Err(format!("bcrypt cost must be 4..={MAX_BCRYPT_COST}"));
        }
        return Ok(ForeignScheme::Bcrypt);
    }
    let parsed = PasswordHash::new(hash).map_err(|e| format!("is not a PHC string: {e}"))?;
    if parsed.hash.is_none() || parsed.salt.is_none() {
        return Err("has no salt or no hash".into());
    }
    let decimal = |name: &str| parsed.params.get_decimal(name).map(u64::from);
    match parsed.algorithm.as_str() {
        "argon2id" | "argon2i" => {
            let m = decimal("m").ok_or("argon2 parameter m is missing")?;
            if m > cap {
                return Err(format!("argon2 memory m={m} KiB is above the cap of {cap} KiB"));
            }
            let t = decimal("t").ok_or("argon2 parameter t is missing")?;
            if t > MAX_ARGON2_T {
                return Err(format!("argon2 passes t={t} are above the cap of {MAX_ARGON2_T}"));
            }
            let p = decimal("p").ok_or("argon2 parameter p is missing")?;
            if p > MAX_ARGON2_P {
                return Err(format!("argon2 lanes p={p} are above the cap of {MAX_ARGON2_P}"));
            }
            Ok(ForeignScheme::Argon2)
        }
        "pbkdf2-sha256" => {
            let rounds = decimal("i").ok_or("pbkdf2 parameter i is missing")?;
            if rounds > MAX_PBKDF2_ROUNDS {
                return Err(format!("pbkdf2 rounds must be at most {MAX_PBKDF2_ROUNDS}"));
            }
            Ok(ForeignScheme::Pbkdf2Sha256)
        }
        "scrypt" => {
            let ln = decimal("ln").ok_or("scrypt parameter ln is missing")?;
            let r = decimal("r").ok_or("scrypt parameter r is missing")?;
            // scrypt uses 128 · r · 2^ln bytes.
            let kib = if ln < 40 && r < 1 << 20 {
                ((128 * r) << ln) >> 10
            } else {
                u64::MAX
            };
            if kib > cap {
                return Err(format!("scrypt memory {kib} KiB is above the cap of {cap} KiB"));
            }
            let p = decimal("p").ok_or("scrypt parameter p is missing")?;
            if p > MAX_SCRYPT_P {
                return Err(format!("scrypt parallelism p={p} is above the cap of {MAX_SCRYPT_P}"));
            }
            Ok(ForeignScheme::Scrypt)
        }
        other => Err(format!(
            "algorithm `{other}` is not supported (argon2id, argon2i, bcrypt, pbkdf2-sha256, scrypt)"
        )),
    }
}

/// Verifies `password` against a foreign hash already accepted by [`inspect`]. CPU-heavy: call it through
/// the KDF pool.
pub fn verify(hash: &str, password: &[u8]) -> bool {
    if hash.starts_with("$2") {
        return bcrypt::verify(password, hash).unwrap_or(false);
    }
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    match parsed.algorithm.as_str() {
        "argon2id" | "argon2i" => argon2::Argon2::default()
            .verify_password(password, &parsed)
            .is_ok(),
        "pbkdf2-sha256" => pbkdf2::Pbkdf2.verify_password(password, &parsed).is_ok(),
        "scrypt" => scrypt::Scrypt.verify_password(password, &parsed).is_ok(),
        _ => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};

    /// Hashes of `password` in every supported scheme, with small work factors.
    pub(crate) fn samples(password: &str) -> Vec<(ForeignScheme, String)> {
        let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
        let argon = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(64, 1, 1, None).expect("params"),
        )
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2")
        .to_string();
        let argon2i = argon2::Argon2::new(
            argon2::Algorithm::Argon2i,
            argon2::Version::V0x13,
            argon2::Params::new(64, 1, 1, None).expect("params"),
        )
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2i")
        .to_string();
        let bcrypt = bcrypt::hash_with_salt(password, 4, *b"0123456789abcdef")
            .expect("bcrypt")
            .format_for_version(bcrypt::Version::TwoB);
        let pbkdf2 = pbkdf2::Pbkdf2
            .hash_password_customized(
                password.as_bytes(),
                Some(pbkdf2::Algorithm::Pbkdf2Sha256.ident()),
                None,
                pbkdf2::Params {
                    rounds: 1000,
                    output_length: 32,
                },
                &salt,
            )
            .expect("pbkdf2")
            .to_string();
        let scrypt = scrypt::Scrypt
            .hash_password_customized(
                password.as_bytes(),
                None,
                None,
                scrypt::Params::new(4, 8, 1, 32).expect("params"),
                &salt,
            )
            .expect("scrypt")
            .to_string();
        vec![
            (ForeignScheme::Argon2, argon),
            (ForeignScheme::Argon2, argon2i),
            (ForeignScheme::Bcrypt, bcrypt),
            (ForeignScheme::Pbkdf2Sha256, pbkdf2),
            (ForeignScheme::Scrypt, scrypt),
        ]
    }

    #[test]
    fn every_supported_scheme_is_recognised_and_verified() {
        for (scheme, hash) in samples("correct horse") {
            assert_eq!(inspect(&hash, 19_456), Ok(scheme), "{hash}");
            assert!(verify(&hash, b"correct horse"), "{hash}");
            assert!(!verify(&hash, b"wrong horse"), "{hash}");
        }
    }

    #[test]
    fn reference_hashes_from_other_systems_verify() {
        // A test vector of OpenBSD's bcrypt.
        let bcrypt = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
        assert_eq!(inspect(bcrypt, 19_456), Ok(ForeignScheme::Bcrypt));
        assert!(verify(bcrypt, b"U*U"));
    }

    #[test]
    fn unsupported_or_oversized_hashes_are_refused_with_a_reason() {
        assert!(inspect("$1$abc$def", 19_456).is_err());
        assert!(inspect("plain", 19_456).is_err());
        assert!(inspect("$md5$x$y", 19_456)
            .err()
            .is_some_and(|e| e.contains("not supported") || e.contains("not a PHC")));
        let huge = "$argon2id$v=19$m=4194304,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(inspect(huge, 19_456)
            .err()
            .is_some_and(|e| e.contains("cap")));
        assert!(inspect(
            "$2b$31$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            19_456
        )
        .is_err());
    }

    #[test]
    fn every_cost_parameter_is_capped_accepted_at_the_cap_and_refused_above() {
        let argon2 = |m: u32, t: u32, p: u32| {
            format!("$argon2id$v=19$m={m},t={t},p={p}$MDEyMzQ1Njc4OWFiY2RlZg$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        };
        let scrypt = |ln: u32, r: u32, p: u32| {
            format!("$scrypt$ln={ln},r={r},p={p}$MDEyMzQ1Njc4OWFiY2RlZg$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        };
        let pbkdf2 = |i: u32| {
            format!("$pbkdf2-sha256$i={i},l=32$MDEyMzQ1Njc4OWFiY2RlZg$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        };
        let bcrypt = |cost: u32| {
            format!("$2b${cost:02}$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW")
        };
        let cases = [
            (argon2(131_072, 1, 1), argon2(131_073, 1, 1), "memory"),
            (argon2(65_536, 16, 1), argon2(65_536, 17, 1), "t="),
            (argon2(65_536, 1, 64), argon2(65_536, 1, 65), "p="),
            (scrypt(17, 8, 1), scrypt(18, 8, 1), "memory"),
            (scrypt(15, 8, 16), scrypt(15, 8, 17), "p="),
            (pbkdf2(10_000_000), pbkdf2(10_000_001), "rounds"),
            (bcrypt(16), bcrypt(17), "cost"),
        ];
        for (at_cap, above, named) in cases {
            assert!(
                inspect(&at_cap, 19_456).is_ok(),
                "{at_cap}: {:?}",
                inspect(&at_cap, 19_456)
            );
            let refused = inspect(&above, 19_456);
            assert!(
                refused.as_ref().is_err_and(|e| e.contains(named)),
                "{above}: {refused:?}"
            );
        }
    }
}
