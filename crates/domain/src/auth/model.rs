//! Keys, scopes and the rules that relate them.

use std::fmt;

use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::prompt::FieldError;

/// What a key may do. `admin` implies the others and `release` implies
/// `write`; `write` does not imply `read`, so an application can hold a key
/// that only logs runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every GET under `/v1`.
    Read,
    /// Creating and changing prompts, versions and runs, and moving labels
    /// that are not protected.
    Write,
    /// What `write` may do, plus moving, removing and rolling back protected
    /// labels.
    Release,
    /// Managing keys; implies read and write.
    Admin,
}

impl Scope {
    pub const ALL: [Self; 4] = [Self::Read, Self::Write, Self::Release, Self::Admin];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Release => "release",
            Self::Admin => "admin",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "release" => Some(Self::Release),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A non-empty set of scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// # Errors
    /// An empty list or an unknown scope.
    pub fn parse(names: &[String]) -> Result<Self, FieldError> {
        let mut scopes = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let scope = Scope::parse(name).ok_or_else(|| {
                FieldError::new(
                    format!("scopes[{i}]"),
                    "must be `read`, `write`, `release` or `admin`",
                )
            })?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        if scopes.is_empty() {
            return Err(FieldError::new("scopes", "at least one scope is needed"));
        }
        scopes.sort();
        Ok(Self(scopes))
    }

    #[must_use]
    pub fn admin() -> Self {
        Self(vec![Scope::Admin])
    }

    /// Whether these scopes allow an operation that needs `needed`.
    #[must_use]
    pub fn allow(&self, needed: Scope) -> bool {
        self.0
            .iter()
            .any(|s| *s == needed || *s == Scope::Admin || (*s == Scope::Release && needed == Scope::Write))
    }

    #[must_use]
    pub fn as_slice(&self) -> &[Scope] {
        &self.0
    }
}

const MAX_KEY_NAME: usize = 100;

/// A key's label: 1–100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName(String);

impl KeyName {
    /// # Errors
    /// An empty, too long or control-character name.
    pub fn new(s: &str) -> Result<Self, FieldError> {
        let len = s.trim().chars().count();
        if len == 0 || len > MAX_KEY_NAME || s.chars().any(char::is_control) {
            return Err(FieldError::new(
                "name",
                format!("must be 1 to {MAX_KEY_NAME} characters, without control characters"),
            ));
        }
        Ok(Self(s.trim().to_owned()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key as stored and listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: KeyName,
    /// The public part of the key, shown in listings to tell keys apart.
    pub prefix: String,
    pub scopes: Scopes,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

/// The SHA-256 of a key, hex-encoded: what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHash(pub String);

/// Lowercase hex, without a formatting call per byte: this runs on every
/// authenticated request.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The SHA-256 of a key, as bytes: what a presented key is compared by
/// before anything is hex-encoded.
pub type KeyDigest = [u8; 32];

impl KeyHash {
    #[must_use]
    pub fn of(key: &str) -> Self {
        Self::from_digest(&Self::digest(key))
    }

    #[must_use]
    pub fn digest(key: &str) -> KeyDigest {
        Sha256::digest(key.as_bytes()).into()
    }

    #[must_use]
    pub fn from_digest(digest: &KeyDigest) -> Self {
        Self(hex(digest))
    }

    /// Compares in time that does not depend on where the hashes differ.
    #[must_use]
    pub fn matches(&self, other: &Self) -> bool {
        same_bytes(self.0.as_bytes(), other.0.as_bytes())
    }
}

/// Whether `a` and `b` are equal, in time that does not depend on where they
/// differ: for secrets and their hashes.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A freshly generated key: the full secret (shown once) and its parts.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    pub secret: String,
    pub prefix: String,
    pub hash: KeyHash,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl GeneratedKey {
    /// Builds a key from 24 random bytes: 4 for the public prefix, 20 (160
    /// bits) for the secret.
    #[must_use]
    pub fn from_random(bytes: [u8; 24]) -> Self {
        let prefix = hex(&bytes[..4]);
        let secret = format!("pr_{prefix}_{}", hex(&bytes[4..]));
        Self {
            hash: KeyHash::of(&secret),
            secret,
            prefix,
        }
    }
}

/// The public prefix of a presented key, if it has the key shape.
#[must_use]
pub fn prefix_of(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix("pr_")?;
    let (prefix, secret) = rest.split_once('_')?;
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    (prefix.len() == 8 && secret.len() == 40 && hex(prefix) && hex(secret)).then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_implies_every_scope_and_write_does_not_imply_read() {
        assert!(Scope::ALL.iter().all(|s| Scopes::admin().allow(*s)));
        let write = Scopes::parse(&["write".into()]).expect("valid");
        assert!(write.allow(Scope::Write));
        assert!(!write.allow(Scope::Read));
        assert!(!write.allow(Scope::Admin));
        assert!(!write.allow(Scope::Release));
        let release = Scopes::parse(&["release".into()]).expect("valid");
        assert!(release.allow(Scope::Write) && release.allow(Scope::Release));
        assert!(!release.allow(Scope::Read) && !release.allow(Scope::Admin));
    }

    #[test]
    fn scopes_must_be_known_and_not_empty() {
        assert_eq!(Scopes::parse(&[]).map_err(|e| e.field), Err("scopes".to_owned()));
        assert_eq!(
            Scopes::parse(&["read".into(), "root".into()]).map_err(|e| e.field),
            Err("scopes[1]".to_owned())
        );
        let s = Scopes::parse(&["write".into(), "read".into(), "read".into()]).expect("valid");
        assert_eq!(s.as_slice(), [Scope::Read, Scope::Write]);
    }

    #[test]
    fn a_generated_key_has_its_prefix_and_160_secret_bits() {
        let key = GeneratedKey::from_random([7; 24]);
        assert_eq!(key.prefix, "07070707");
        assert_eq!(key.secret.len(), 3 + 8 + 1 + 40);
        assert_eq!(prefix_of(&key.secret), Some("07070707"));
        assert!(KeyHash::of(&key.secret).matches(&key.hash));
        assert!(
            !format!("{key:?}").contains(&key.secret[12..]),
            "Debug hides the secret"
        );
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        for bad in [
            "",
            "pr_",
            "pr_0707070_x",
            "sk_07070707_0707070707070707070707070707070707070707",
            "pr_zzzzzzzz_0707070707070707070707070707070707070707",
        ] {
            assert_eq!(prefix_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn hex_is_lowercase_and_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(
            KeyHash::of("abc").0,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hashes_compare_whole() {
        let a = KeyHash::of("a");
        assert!(a.matches(&KeyHash::of("a")));
        assert!(!a.matches(&KeyHash::of("b")));
        assert!(!a.matches(&KeyHash("short".into())));
    }
}
