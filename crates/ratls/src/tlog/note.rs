//! Signed notes (C2SP signed-note, <https://c2sp.org/signed-note>, v1.0.0): text signed by one or
//! more keys, each signature on its own line after a blank line:
//! `— <key name> base64(4-byte key ID || signature)`.
//!
//! Only Ed25519 (signature type `0x01`) is made and checked. A key ID is
//! `SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4]`, big-endian. A verifier key
//! ("vkey") is `<key name>+<hex key ID>+base64(0x01 || public key)`. The signer key file is the
//! text golang.org/x/mod/sumdb/note reads and writes (the C2SP note defines no format for it):
//! `PRIVATE+KEY+<key name>+<hex key ID>+base64(0x01 || 32-byte Ed25519 seed)`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use zeroize::Zeroizing;

use super::TlogError;

/// The signature type byte of Ed25519 (C2SP signed-note, "Signature types").
const ALG_ED25519: u8 = 0x01;

/// Signature lines read from one note at most (C2SP asks verifiers to accept at least 16;
/// golang.org/x/mod/sumdb/note stops at 100).
const MAX_SIGNATURES: usize = 100;

/// The em dash and space that start a signature line (U+2014 U+0020).
const SIG_PREFIX: &str = "\u{2014} ";

fn malformed(reason: impl Into<String>) -> TlogError {
    TlogError::Malformed {
        what: "signed note",
        reason: reason.into(),
    }
}

/// Checks a key name: non-empty, no Unicode space, no `+` (C2SP signed-note, "Format").
pub fn check_key_name(name: &str) -> Result<(), TlogError> {
    if name.is_empty() {
        return Err(TlogError::Key("the key name is empty".into()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || *c == '+' || c.is_control())
    {
        return Err(TlogError::Key(format!(
            "the key name {name:?} contains {c:?} (no spaces, no '+', no control characters)"
        )));
    }
    Ok(())
}

/// The key ID of an Ed25519 key named `name`.
fn key_id(name: &str, public: &[u8]) -> u32 {
    let mut c = ring::digest::Context::new(&ring::digest::SHA256);
    c.update(name.as_bytes());
    c.update(b"\n");
    c.update(&[ALG_ED25519]);
    c.update(public);
    let d = c.finish();
    u32::from_be_bytes([d.as_ref()[0], d.as_ref()[1], d.as_ref()[2], d.as_ref()[3]])
}

/// A verifier key: the name, the key ID and the Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    public: [u8; 32],
}

impl VerifierKey {
    /// Parses `<name>+<hex key ID>+base64(0x01 || public key)`, checking that the key ID is the
    /// key's.
    pub fn parse(text: &str) -> Result<Self, TlogError> {
        let text = text.trim();
        let bad = |why: &str| {
            TlogError::Key(format!(
                "{text:?} is not a verifier key <name>+<8 hex digits>+<base64 key>: {why}"
            ))
        };
        // Names have no '+', base64 may: split from the left.
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("it has fewer than three parts"));
        };
        check_key_name(name)?;
        if id_hex.len() != 8 || !id_hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad("the key ID is not 8 hex digits"));
        }
        let id = u32::from_str_radix(id_hex, 16).map_err(|_| bad("the key ID is not hex"))?;
        let key = STANDARD
            .decode(b64)
            .map_err(|_| bad("the key is not base64"))?;
        let Some((&ALG_ED25519, public)) = key.split_first() else {
            return Err(bad("the key is not an Ed25519 key (type 0x01)"));
        };
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| bad("an Ed25519 public key has 32 bytes"))?;
        if key_id(name, &public) != id {
            return Err(bad("the key ID is not the hash of this name and key"));
        }
        Ok(Self {
            name: name.to_owned(),
            id,
            public,
        })
    }

    /// The key name (for a log, its origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// `name+hex ID`, how messages name the key.
    pub fn label(&self) -> String {
        format!("{}+{:08x}", self.name, self.id)
    }

    fn verify(&self, text: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public)
            .verify(text, sig)
            .is_ok()
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut key = Vec::with_capacity(33);
        key.push(ALG_ED25519);
        key.extend_from_slice(&self.public);
        write!(f, "{}+{:08x}+{}", self.name, self.id, STANDARD.encode(key))
    }
}

/// An Ed25519 signing key with its name. The seed is zeroized on drop and never printed; the
/// expanded key inside `ring` lives as long as this value.
pub struct SigningKey {
    name: String,
    id: u32,
    seed: Zeroizing<[u8; 32]>,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}+{:08x})", self.name, self.id)
    }
}

impl SigningKey {
    fn from_seed(name: &str, seed: Zeroizing<[u8; 32]>) -> Result<Self, TlogError> {
        check_key_name(name)?;
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed[..])
            .map_err(|_| TlogError::Key("not an Ed25519 seed".into()))?;
        let id = key_id(name, pair.public_key().as_ref());
        Ok(Self {
            name: name.to_owned(),
            id,
            seed,
            pair,
        })
    }

    /// A new random key named `name`.
    pub fn generate(name: &str) -> Result<Self, TlogError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed[..])
            .map_err(|_| TlogError::Key("no randomness for a new key".into()))?;
        Self::from_seed(name, seed)
    }

    /// Parses `PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 || seed)`.
    pub fn parse(text: &str) -> Result<Self, TlogError> {
        let bad = |why: &str| {
            TlogError::Key(format!(
                "not a signer key PRIVATE+KEY+<name>+<8 hex digits>+<base64 key>: {why}"
            ))
        };
        let rest = text
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| bad("it does not start with PRIVATE+KEY+"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("it has fewer than three parts after PRIVATE+KEY"));
        };
        if id_hex.len() != 8 || !id_hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad("the key ID is not 8 hex digits"));
        }
        let id = u32::from_str_radix(id_hex, 16).map_err(|_| bad("the key ID is not hex"))?;
        let key = Zeroizing::new(
            STANDARD
                .decode(b64)
                .map_err(|_| bad("the key is not base64"))?,
        );
        let Some((&ALG_ED25519, seed)) = key.split_first() else {
            return Err(bad("the key is not an Ed25519 key (type 0x01)"));
        };
        if seed.len() != 32 {
            return Err(bad("an Ed25519 seed has 32 bytes"));
        }
        let mut s = Zeroizing::new([0u8; 32]);
        s.copy_from_slice(seed);
        let k = Self::from_seed(name, s)?;
        if k.id != id {
            return Err(bad("the key ID is not the hash of this name and key"));
        }
        Ok(k)
    }

    /// The key as text for its file (zeroized when dropped).
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut key = Zeroizing::new(Vec::with_capacity(33));
        key.push(ALG_ED25519);
        key.extend_from_slice(&self.seed[..]);
        Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            STANDARD.encode(&key[..])
        ))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key that checks this key's signatures.
    pub fn verifier(&self) -> VerifierKey {
        let mut public = [0u8; 32];
        public.copy_from_slice(self.pair.public_key().as_ref());
        VerifierKey {
            name: self.name.clone(),
            id: self.id,
            public,
        }
    }

    /// Signs `text` (which must end in a newline) into a signed note with one signature.
    pub fn sign(&self, text: &str) -> Result<String, TlogError> {
        check_text(text)?;
        let sig = self.pair.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&self.id.to_be_bytes());
        blob.extend_from_slice(sig.as_ref());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(blob)
        ))
    }
}

/// The text of a note must be UTF-8 (it is a `str`), end in a newline, and hold no control
/// character other than newline (C2SP signed-note, "Format").
fn check_text(text: &str) -> Result<(), TlogError> {
    if !text.ends_with('\n') {
        return Err(malformed("the text does not end in a newline"));
    }
    if let Some(c) = text.chars().find(|c| c.is_control() && *c != '\n') {
        return Err(malformed(format!(
            "the text contains control character {c:?}"
        )));
    }
    Ok(())
}

/// Opens a signed note with `key`: returns its text once a signature by `key` verifies.
/// Signatures by other keys are ignored (C2SP: "Verifiers MUST ignore signatures from unknown
/// keys"); a signature by `key` that does not verify refuses the note.
pub fn open<'a>(note: &'a str, key: &VerifierKey) -> Result<&'a str, TlogError> {
    let Some(split) = note.rfind("\n\n") else {
        return Err(malformed("no blank line before the signatures"));
    };
    let text = &note[..split + 1];
    check_text(text)?;
    let sigs = &note[split + 2..];
    if !sigs.ends_with('\n') {
        return Err(malformed(
            "the last signature line does not end in a newline",
        ));
    }
    let mut signers = Vec::new();
    let mut verified = false;
    for line in sigs[..sigs.len() - 1].split('\n') {
        if signers.len() == MAX_SIGNATURES {
            return Err(malformed(format!("more than {MAX_SIGNATURES} signatures")));
        }
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or_else(|| malformed(format!("{line:?} is not a signature line")))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| malformed(format!("{line:?} has no signature after the key name")))?;
        check_key_name(name).map_err(|e| malformed(e.to_string()))?;
        let blob = STANDARD
            .decode(b64)
            .map_err(|_| malformed(format!("the signature of {name} is not base64")))?;
        if blob.len() < 4 {
            return Err(malformed(format!("the signature of {name} is too short")));
        }
        let id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
        signers.push(format!("{name}+{id:08x}"));
        if name == key.name && id == key.id {
            if !key.verify(text.as_bytes(), &blob[4..]) {
                return Err(TlogError::Signature(format!(
                    "the signature by {} does not verify (the note was changed after it was signed, or signed by another key of that name)",
                    key.label()
                )));
            }
            verified = true;
        }
    }
    if !verified {
        return Err(TlogError::Signature(format!(
            "not signed by {} (signed by: {})",
            key.label(),
            if signers.is_empty() {
                "nobody".into()
            } else {
                signers.join(", ")
            }
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    // golang.org/x/mod/sumdb/note, note_test.go (TestNewSigner, TestSign, TestOpen).
    const PETER_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    #[test]
    fn signs_and_opens_as_the_go_reference_does() {
        let k = SigningKey::parse(PETER_SKEY).unwrap();
        assert_eq!(k.verifier().to_string(), PETER_VKEY);
        assert_eq!(&*k.to_text(), PETER_SKEY);
        // Ed25519 is deterministic: the same bytes as the Go reference.
        assert_eq!(k.sign(TEXT).unwrap(), format!("{TEXT}\n{PETER_SIG}"));
        let peter = VerifierKey::parse(PETER_VKEY).unwrap();
        let enoch = VerifierKey::parse(ENOCH_VKEY).unwrap();
        let both = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
        assert_eq!(open(&both, &peter).unwrap(), TEXT);
        assert_eq!(open(&both, &enoch).unwrap(), TEXT);
        let only_peter = format!("{TEXT}\n{PETER_SIG}");
        let e = open(&only_peter, &enoch).unwrap_err().to_string();
        assert!(e.contains("not signed by EnochRoot+af0cfe78"), "{e}");
        assert!(e.contains("PeterNeumann+c74f20a3"), "{e}");
    }

    // C2SP signed-note, "Verifier keys", "Example".
    #[test]
    fn opens_the_c2sp_example() {
        let k = VerifierKey::parse(
            "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        )
        .unwrap();
        let note = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
        assert_eq!(open(note, &k).unwrap(), "This is an example message.\n");
        let edited = note.replace("example message", "example massage");
        assert!(matches!(open(&edited, &k), Err(TlogError::Signature(_))));
    }

    #[test]
    fn malformed_keys_and_notes_are_refused() {
        let mut b = PETER_VKEY.as_bytes().to_vec();
        for i in 0..b.len() {
            b[i] = b[i].wrapping_add(1);
            if let Ok(s) = std::str::from_utf8(&b) {
                assert!(VerifierKey::parse(s).is_err(), "{s}");
            }
            b[i] = b[i].wrapping_sub(1);
        }
        assert!(VerifierKey::parse(&PETER_VKEY[..PETER_VKEY.len() - 4]).is_err());
        assert!(SigningKey::parse(&PETER_SKEY.replace("c74f20a3", "c74f20a4")).is_err());
        let peter = VerifierKey::parse(PETER_VKEY).unwrap();
        for bad in [
            TEXT.to_owned(),
            format!("{TEXT}\n"),
            format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
            format!("\x01{TEXT}\n{PETER_SIG}"),
            format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"),
            format!("{TEXT}\n\u{2014} Bad Name x08go/ZJku\n"),
            format!("{TEXT}\n{}", PETER_SIG.repeat(101)),
        ] {
            assert!(open(&bad, &peter).is_err(), "{bad:?}");
        }
        assert!(matches!(
            SigningKey::parse(PETER_SKEY).unwrap().sign("no newline"),
            Err(TlogError::Malformed { .. })
        ));
        assert!(SigningKey::generate("a b").is_err());
        assert!(SigningKey::generate("a+b").is_err());
    }

    #[test]
    fn a_new_key_signs_what_its_verifier_opens() {
        let k = SigningKey::generate("teeserve.test/log").unwrap();
        let v = VerifierKey::parse(&k.verifier().to_string()).unwrap();
        assert_eq!(v, k.verifier());
        assert!(!format!("{k:?}").contains(&*k.to_text()));
        let note = k.sign("hello\n").unwrap();
        assert_eq!(open(&note, &v).unwrap(), "hello\n");
        let other = SigningKey::generate("teeserve.test/log")
            .unwrap()
            .verifier();
        assert!(matches!(open(&note, &other), Err(TlogError::Signature(_))));
        let k2 = SigningKey::parse(&k.to_text()).unwrap();
        assert_eq!(k2.verifier(), v);
    }
}
