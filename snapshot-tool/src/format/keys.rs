//! Keys and signatures: Ed25519 over the exact bytes of `manifest.bin`.
//!
//! All three files are one line of ASCII, so they survive copy-paste and `cat`:
//!
//! ```text
//! public key   rackhand-snapshot-pubkey v1 <64 hex: Ed25519 public key>
//! secret key   rackhand-snapshot-seckey v1 <64 hex: Ed25519 seed>          (mode 0600)
//! signature    rackhand-snapshot-sig v1 <16 hex: key id> <128 hex: signature>
//! ```
//!
//! The key id is the first 8 bytes of SHA-256(public key). It only selects which trusted key
//! to try (the appliance keeps several in its keys directory); it is never trusted by itself.
//! The signed message is `"rackhand-snapshot-manifest-v1\0" || manifest.bin`: the prefix
//! separates this use of a key from any other thing the same key might sign. Verification uses
//! `verify_strict` (rejects small-order keys and non-canonical signatures).

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use super::{Digest, MAX_SIGNATURE_FILE_LEN, SignatureError};

/// Prefix of every signed message (domain separation).
const SIGNING_CONTEXT: &[u8] = b"rackhand-snapshot-manifest-v1\0";
const PUBKEY_TAG: &str = "rackhand-snapshot-pubkey";
const SECKEY_TAG: &str = "rackhand-snapshot-seckey";
const SIG_TAG: &str = "rackhand-snapshot-sig";
const FILE_VERSION: &str = "v1";

/// First 8 bytes of SHA-256 of a public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Splits a one-line key/signature file into its space-separated fields after checking the
/// size, the encoding and the line ending (one optional trailing `\n`, nothing else).
fn fields(bytes: &[u8], count: usize) -> Result<Vec<&str>, &'static str> {
    if bytes.len() > MAX_SIGNATURE_FILE_LEN {
        return Err("file too large");
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8")?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    if line.contains(['\n', '\r', '\t']) {
        return Err("not a single line");
    }
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != count {
        return Err("wrong number of fields");
    }
    Ok(parts)
}

fn hex_array<const N: usize>(text: &str) -> Result<[u8; N], &'static str> {
    if text.len() != 2 * N {
        return Err("hex field has the wrong length");
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|_| "hex field is not hex")?;
    Ok(out)
}

/// A trusted public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

impl PublicKey {
    /// From the 32 raw key bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, SignatureError> {
        VerifyingKey::from_bytes(bytes)
            .map(|key| Self { key })
            .map_err(|_| SignatureError::BadKeyFile {
                what: "not a valid Ed25519 public key",
            })
    }

    /// Parses a public key file.
    pub fn parse(bytes: &[u8]) -> Result<Self, SignatureError> {
        let bad = |what| SignatureError::BadKeyFile { what };
        let parts = fields(bytes, 3).map_err(bad)?;
        match parts.as_slice() {
            [tag, version, key] if *tag == PUBKEY_TAG => {
                if *version != FILE_VERSION {
                    return Err(bad("unsupported key file version"));
                }
                Self::from_bytes(&hex_array::<32>(key).map_err(bad)?)
            }
            _ => Err(bad("not a rackhand snapshot public key")),
        }
    }

    /// The public key file's contents.
    pub fn to_file(&self) -> String {
        format!(
            "{PUBKEY_TAG} {FILE_VERSION} {}\n",
            hex::encode(self.key.to_bytes())
        )
    }

    /// The key id.
    pub fn id(&self) -> KeyId {
        let digest = Digest::sha256(self.key.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(digest.0.get(..8).unwrap_or(&[0; 8]));
        KeyId(id)
    }
}

/// A signing key. Its Debug output shows only the key id.
#[derive(Clone)]
pub struct SecretKey {
    key: SigningKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.public().id())
    }
}

impl SecretKey {
    /// From a 32-byte seed (which must come from a CSPRNG).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// Parses a secret key file.
    pub fn parse(bytes: &[u8]) -> Result<Self, SignatureError> {
        let bad = |what| SignatureError::BadKeyFile { what };
        let parts = fields(bytes, 3).map_err(bad)?;
        match parts.as_slice() {
            [tag, version, seed] if *tag == SECKEY_TAG => {
                if *version != FILE_VERSION {
                    return Err(bad("unsupported key file version"));
                }
                Ok(Self::from_seed(&hex_array::<32>(seed).map_err(bad)?))
            }
            _ => Err(bad("not a rackhand snapshot secret key")),
        }
    }

    /// The secret key file's contents (write it with mode 0600).
    pub fn to_file(&self) -> String {
        format!(
            "{SECKEY_TAG} {FILE_VERSION} {}\n",
            hex::encode(self.key.to_bytes())
        )
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: self.key.verifying_key(),
        }
    }
}

/// The contents of `manifest.sig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFile {
    /// Id of the key that made the signature (a hint for key selection, not trusted).
    pub key_id: KeyId,
    /// The Ed25519 signature.
    pub signature: [u8; 64],
}

impl SignatureFile {
    /// Parses `manifest.sig`.
    pub fn parse(bytes: &[u8]) -> Result<Self, SignatureError> {
        let bad = |what| SignatureError::BadSignatureFile { what };
        let parts = fields(bytes, 4).map_err(bad)?;
        match parts.as_slice() {
            [tag, version, id, sig] if *tag == SIG_TAG => {
                if *version != FILE_VERSION {
                    return Err(bad("unsupported signature file version"));
                }
                Ok(Self {
                    key_id: KeyId(hex_array::<8>(id).map_err(bad)?),
                    signature: hex_array::<64>(sig).map_err(bad)?,
                })
            }
            _ => Err(bad("not a rackhand snapshot signature")),
        }
    }

    /// The file's contents.
    pub fn to_file(&self) -> String {
        format!(
            "{SIG_TAG} {FILE_VERSION} {} {}\n",
            self.key_id,
            hex::encode(self.signature)
        )
    }
}

fn signed_message(manifest_bytes: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + manifest_bytes.len());
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(manifest_bytes);
    message
}

/// Signs the exact bytes of `manifest.bin`.
pub fn sign_manifest(manifest_bytes: &[u8], key: &SecretKey) -> SignatureFile {
    let signature = key.key.sign(&signed_message(manifest_bytes));
    SignatureFile {
        key_id: key.public().id(),
        signature: signature.to_bytes(),
    }
}

/// Verifies `sig` over the exact bytes of `manifest.bin` with `key`. Call it before parsing
/// the manifest and before writing anything.
pub fn verify_signature(
    manifest_bytes: &[u8],
    sig: &SignatureFile,
    key: &PublicKey,
) -> Result<(), SignatureError> {
    let signed_by = sig.key_id.to_string();
    if sig.key_id != key.id() {
        return Err(SignatureError::BadSignature {
            what: "made by a different key than the one given",
            signed_by,
        });
    }
    let signature = Signature::from_bytes(&sig.signature);
    key.key
        .verify_strict(&signed_message(manifest_bytes), &signature)
        .map_err(|_| SignatureError::BadSignature {
            what: "signature does not match the manifest",
            signed_by,
        })
}

/// Verifies `sig` with whichever of the trusted `keys` has its key id; returns that key.
pub fn verify_signature_any<'k>(
    manifest_bytes: &[u8],
    sig: &SignatureFile,
    keys: &'k [PublicKey],
) -> Result<&'k PublicKey, SignatureError> {
    let key =
        keys.iter()
            .find(|k| k.id() == sig.key_id)
            .ok_or_else(|| SignatureError::BadSignature {
                what: "no trusted key has the signature's key id",
                signed_by: sig.key_id.to_string(),
            })?;
    verify_signature(manifest_bytes, sig, key)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_file_roundtrips() {
        let key = SecretKey::from_seed(&[42; 32]);
        let public = key.public();
        let sig = sign_manifest(b"manifest bytes", &key);
        verify_signature(b"manifest bytes", &sig, &public).unwrap();
        let err = verify_signature(b"manifest bytez", &sig, &public).unwrap_err();
        assert_eq!(err.code(), "bad_signature");

        let other = SecretKey::from_seed(&[43; 32]).public();
        let err = verify_signature(b"manifest bytes", &sig, &other).unwrap_err();
        assert_eq!(err.code(), "bad_signature");
        let keys = [other.clone(), public.clone()];
        assert_eq!(
            verify_signature_any(b"manifest bytes", &sig, &keys).unwrap(),
            &public
        );
        let err = verify_signature_any(b"manifest bytes", &sig, &keys[..1]).unwrap_err();
        assert_eq!(err.code(), "bad_signature");

        assert_eq!(SignatureFile::parse(sig.to_file().as_bytes()).unwrap(), sig);
        assert_eq!(
            PublicKey::parse(public.to_file().as_bytes()).unwrap(),
            public
        );
        let back = SecretKey::parse(key.to_file().as_bytes()).unwrap();
        assert_eq!(back.public(), public);
        assert!(!format!("{key:?}").contains(&hex::encode([42u8; 32])));
    }

    #[test]
    fn malformed_files_are_rejected() {
        let key = SecretKey::from_seed(&[1; 32]);
        let good = key.public().to_file();
        let cases: &[&[u8]] = &[
            b"",
            b"rackhand-snapshot-pubkey v1",
            b"rackhand-snapshot-pubkey v2 00",
            b"rackhand-snapshot-seckey v1 0000000000000000000000000000000000000000000000000000000000000000",
            b"\xff\xfe",
            &[b'a'; 4096],
        ];
        for case in cases {
            assert_eq!(PublicKey::parse(case).unwrap_err().code(), "bad_key_file");
        }
        let crlf = good.replace('\n', "\r\n");
        assert_eq!(
            PublicKey::parse(crlf.as_bytes()).unwrap_err().code(),
            "bad_key_file"
        );
        let sig = sign_manifest(b"m", &key).to_file();
        let short = sig.replacen(" v1 ", " v1  ", 1);
        assert_eq!(
            SignatureFile::parse(short.as_bytes()).unwrap_err().code(),
            "bad_signature_file"
        );
        assert_eq!(
            SignatureFile::parse(good.as_bytes()).unwrap_err().code(),
            "bad_signature_file"
        );
    }
}
