//! Secrets: per-boot agent tokens and the operator token.
//!
//! A token is 32 bytes from the OS CSPRNG, written as 64 lowercase hex digits. Only its SHA-256
//! is stored; comparisons are constant-time. Tokens travel only in `Authorization: Bearer`
//! headers (and, for the agent, on the kernel command line of its own boot script) and are never
//! logged.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Length of a token in hex digits.
pub const TOKEN_HEX_LEN: usize = 64;

/// A fresh random token.
pub fn generate() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// SHA-256 of a token, hex: the form the store keeps.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// True if `s` has the shape of a token (64 lowercase hex digits).
pub fn is_well_formed(s: &str) -> bool {
    s.len() == TOKEN_HEX_LEN
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Extracts a well-formed token from an `Authorization` header value.
pub fn from_bearer(header: Option<&str>) -> Option<&str> {
    let v = header?.strip_prefix("Bearer ")?.trim();
    is_well_formed(v).then_some(v)
}

/// Constant-time equality of two tokens.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_well_formed() {
        let a = generate();
        let b = generate();
        assert!(is_well_formed(&a) && is_well_formed(&b));
        assert_ne!(a, b);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), a);
    }

    #[test]
    fn bearer_parsing() {
        let t = generate();
        assert_eq!(from_bearer(Some(&format!("Bearer {t}"))), Some(t.as_str()));
        for bad in [
            None,
            Some("".to_string()),
            Some(t.clone()),
            Some(format!("Basic {t}")),
            Some(format!("Bearer {}", t.to_uppercase())),
            Some(format!("Bearer {}", &t[1..])),
            Some("Bearer zz".to_string()),
        ] {
            assert_eq!(from_bearer(bad.as_deref()), None, "{bad:?}");
        }
    }
}
