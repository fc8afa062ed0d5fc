//! Encrypted values: `ENC[age,<base64 of an age file>]`, as written in a service's `env` or
//! `config.values`. The repository holds only ciphertext; the agent opens each value with the
//! X25519 identities it is given (files in `age-keygen` format, never from the repository)
//! when it renders a commit, and a value it cannot open refuses the commit. The clear values
//! travel beside the service ([`Opened`]) and are never serialized, printed or logged.
//!
//! Sealing ([`seal`]) writes the same format for recipients (`age1…`): `plumb seal`, or
//! `age -r <recipient> | base64 -w0` with the age tool.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use age::secrecy::ExposeSecret;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::model::scalar::{ENCRYPTED_PREFIX, is_encrypted};
use crate::secret::Secret;

/// The scheme plumb opens.
const AGE: &str = "age";
/// The largest clear value plumb opens or seals.
pub const MAX_CLEAR: u64 = 64 * 1024;
/// How many opened values are kept to spare decrypting them at every render.
const CACHE: usize = 4096;

/// The clear values of a service's encrypted values, by ciphertext (as written, `ENC[…]`).
/// Two services compare equal whatever they hold here: the ciphertexts, which are compared,
/// decide the clear values.
#[derive(Clone, Default)]
pub struct Opened(Arc<BTreeMap<String, Secret>>);

impl Opened {
    /// The table of `values`.
    pub fn new(values: BTreeMap<String, Secret>) -> Self {
        Opened(Arc::new(values))
    }

    /// The clear value of `sealed` (as written), when it was opened.
    pub fn get(&self, sealed: &str) -> Option<&Secret> {
        self.0.get(sealed)
    }

    /// Every clear value: what output quoting them must mask.
    pub fn clear_values(&self) -> impl Iterator<Item = &Secret> {
        self.0.values()
    }

    /// Every encrypted string in `value` (at path `at`) replaced by its clear value; the path
    /// of the first one it holds no clear value for.
    pub fn open_in(&self, value: &mut Value, at: &str) -> Result<(), String> {
        match value {
            Value::String(s) if is_encrypted(s) => match self.get(s) {
                Some(clear) => {
                    *s = clear.expose().to_owned();
                    Ok(())
                }
                None => Err(at.to_owned()),
            },
            Value::Object(map) => map
                .iter_mut()
                .try_for_each(|(k, v)| self.open_in(v, &format!("{at}.{k}"))),
            Value::Array(items) => items
                .iter_mut()
                .enumerate()
                .try_for_each(|(i, v)| self.open_in(v, &format!("{at}[{i}]"))),
            _ => Ok(()),
        }
    }
}

impl PartialEq for Opened {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Opened(<{} values>)", self.0.len())
    }
}

/// Why a value cannot be opened. Never holds any of the clear value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// Not `ENC[<scheme>,<ciphertext>]`.
    #[error("an encrypted value is written `ENC[age,<base64 ciphertext>]`")]
    Malformed,
    /// A scheme other than age.
    #[error("encryption scheme `{0}` is not one plumb opens (it opens `age`)")]
    Scheme(String),
    /// The agent holds no identity.
    #[error("this agent holds no identity to decrypt it (`decryption.identities` in its configuration)")]
    NoIdentity,
    /// The ciphertext is not an age file.
    #[error("the ciphertext is not an age file: {0}")]
    Corrupt(String),
    /// Encrypted with a passphrase: its work factor is the sender's to choose, so plumb refuses.
    #[error("the value is encrypted with a passphrase; plumb opens values encrypted to X25519 recipients only")]
    Passphrase,
    /// None of the identities is a recipient.
    #[error("none of this agent's identities ({0}) can decrypt it: it was encrypted to other recipients")]
    NotRecipient(String),
    /// Opened, but too long or not text.
    #[error("the decrypted value {0}")]
    Content(&'static str),
}

/// Why identities cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file cannot be read.
    #[error("cannot read identity file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is not an identity.
    #[error("{path}:{line}: not an age X25519 identity (`AGE-SECRET-KEY-1…`)")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line.
        line: usize,
    },
    /// The file holds none.
    #[error("{path}: holds no identity")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// The identities an agent opens values with, and the values it opened already.
#[derive(Default)]
pub struct Keyring {
    identities: Vec<age::x25519::Identity>,
    cache: Mutex<HashMap<String, Secret>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({})", self.recipients().join(", "))
    }
}

impl Keyring {
    /// A keyring of `identities`.
    pub fn new(identities: Vec<age::x25519::Identity>) -> Self {
        Keyring {
            identities,
            cache: Mutex::default(),
        }
    }

    /// Reads identity files: one identity per line, `#` comments and blank lines skipped (the
    /// format `age-keygen` writes).
    pub fn read(files: &[PathBuf]) -> Result<Self, IdentityError> {
        let mut identities = Vec::new();
        for path in files {
            identities.extend(read_identities(path)?);
        }
        Ok(Keyring::new(identities))
    }

    /// The public recipients of its identities (`age1…`), for messages and for sealing.
    pub fn recipients(&self) -> Vec<String> {
        self.identities.iter().map(|i| i.to_public().to_string()).collect()
    }

    /// The clear value of `sealed` (`ENC[age,…]`).
    pub fn open(&self, sealed: &str) -> Result<Secret, OpenError> {
        if let Some(clear) = self.cache.lock().expect("cache lock").get(sealed) {
            return Ok(clear.clone());
        }
        let clear = self.decrypt(sealed)?;
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE {
            cache.clear();
        }
        cache.insert(sealed.to_owned(), clear.clone());
        Ok(clear)
    }

    fn decrypt(&self, sealed: &str) -> Result<Secret, OpenError> {
        let ciphertext = ciphertext(sealed)?;
        if self.identities.is_empty() {
            return Err(OpenError::NoIdentity);
        }
        let decryptor = age::Decryptor::new(&ciphertext[..]).map_err(|e| OpenError::Corrupt(e.to_string()))?;
        if decryptor.is_scrypt() {
            return Err(OpenError::Passphrase);
        }
        let identities = self.identities.iter().map(|i| i as &dyn age::Identity);
        let reader = decryptor.decrypt(identities).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => OpenError::NotRecipient(self.recipients().join(", ")),
            other => OpenError::Corrupt(other.to_string()),
        })?;
        let mut clear = Vec::new();
        reader
            .take(MAX_CLEAR + 1)
            .read_to_end(&mut clear)
            .map_err(|e| OpenError::Corrupt(e.to_string()))?;
        if clear.len() as u64 > MAX_CLEAR {
            return Err(OpenError::Content("is longer than 64 KiB"));
        }
        String::from_utf8(clear)
            .map(Secret::new)
            .map_err(|_| OpenError::Content("is not UTF-8 text"))
    }
}

fn read_identities(path: &Path) -> Result<Vec<age::x25519::Identity>, IdentityError> {
    let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let identity = age::x25519::Identity::from_str(line).map_err(|_| IdentityError::Invalid {
            path: path.to_owned(),
            line: index + 1,
        })?;
        found.push(identity);
    }
    if found.is_empty() {
        return Err(IdentityError::Empty { path: path.to_owned() });
    }
    Ok(found)
}

/// The age file inside `ENC[age,<base64>]`.
fn ciphertext(sealed: &str) -> Result<Vec<u8>, OpenError> {
    let inner = sealed
        .strip_prefix(ENCRYPTED_PREFIX)
        .and_then(|s| s.strip_suffix(']'))
        .ok_or(OpenError::Malformed)?;
    let (scheme, body) = inner.split_once(',').ok_or(OpenError::Malformed)?;
    if scheme != AGE {
        return Err(OpenError::Scheme(scheme.to_owned()));
    }
    STANDARD
        .decode(body.trim())
        .map_err(|e| OpenError::Corrupt(format!("not base64 ({e})")))
}

/// Why a value cannot be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A recipient is not `age1…`.
    #[error("`{0}` is not an age X25519 recipient (`age1…`)")]
    Recipient(String),
    /// No recipient was given.
    #[error("seal a value for at least one recipient")]
    NoRecipient,
}

/// `clear` encrypted to `recipients` (`age1…`), written `ENC[age,<base64>]`.
pub fn seal(recipients: &[String], clear: &str) -> Result<String, SealError> {
    let parsed = recipients
        .iter()
        .map(|r| age::x25519::Recipient::from_str(r.trim()).map_err(|_| SealError::Recipient(r.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let encryptor = age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
        .map_err(|_| SealError::NoRecipient)?;
    let mut out = Vec::new();
    let mut writer = encryptor
        .wrap_output(&mut out)
        .expect("writing to memory does not fail");
    writer
        .write_all(clear.as_bytes())
        .expect("writing to memory does not fail");
    writer.finish().expect("writing to memory does not fail");
    Ok(format!("{ENCRYPTED_PREFIX}{AGE},{}]", STANDARD.encode(out)))
}

/// A new identity, as `age-keygen` writes it, and its recipient.
pub fn generate() -> (Secret, String) {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    (Secret::new(identity.to_string().expose_secret()), recipient)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> (Keyring, String) {
        let (identity, recipient) = generate();
        let parsed = age::x25519::Identity::from_str(identity.expose()).unwrap();
        (Keyring::new(vec![parsed]), recipient)
    }

    #[test]
    fn sealed_values_open_with_a_recipient_identity() {
        let (keys, recipient) = keyring();
        let sealed = seal(&[recipient], "hunter2 ünïcode").unwrap();
        assert!(sealed.starts_with("ENC[age,") && sealed.ends_with(']'));
        assert_eq!(keys.open(&sealed).unwrap().expose(), "hunter2 ünïcode");
        // A second opening comes from the cache, and agrees.
        assert_eq!(keys.open(&sealed).unwrap().expose(), "hunter2 ünïcode");
    }

    #[test]
    fn what_cannot_be_opened_says_why() {
        let (keys, _) = keyring();
        let (_, stranger) = generate();
        let theirs = seal(&[stranger], "x").unwrap();
        assert!(matches!(keys.open(&theirs), Err(OpenError::NotRecipient(r)) if r.starts_with("age1")));
        assert_eq!(keys.open("ENC[pgp,AAAA]"), Err(OpenError::Scheme("pgp".into())));
        assert_eq!(keys.open("ENC[age]"), Err(OpenError::Malformed));
        assert!(matches!(keys.open("ENC[age,@@@]"), Err(OpenError::Corrupt(_))));
        assert!(matches!(keys.open("ENC[age,YWJj]"), Err(OpenError::Corrupt(_))));
        assert_eq!(Keyring::default().open(&theirs), Err(OpenError::NoIdentity));
    }

    #[test]
    fn a_passphrase_is_refused() {
        let (keys, _) = keyring();
        let encryptor = age::Encryptor::with_user_passphrase(age::secrecy::SecretString::from("pass".to_owned()));
        let mut out = Vec::new();
        let mut writer = encryptor.wrap_output(&mut out).unwrap();
        writer.write_all(b"x").unwrap();
        writer.finish().unwrap();
        let sealed = format!("ENC[age,{}]", STANDARD.encode(out));
        assert_eq!(keys.open(&sealed), Err(OpenError::Passphrase));
    }

    #[test]
    fn identity_files_name_a_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, _) = generate();
        let good = dir.path().join("good.txt");
        std::fs::write(
            &good,
            format!("# created: now\n# public key: age1…\n{}\n", identity.expose()),
        )
        .unwrap();
        assert_eq!(
            Keyring::read(std::slice::from_ref(&good)).unwrap().recipients().len(),
            1
        );
        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, "# comment\n\nAGE-SECRET-KEY-NOPE\n").unwrap();
        let error = Keyring::read(&[bad]).unwrap_err().to_string();
        assert!(
            error.ends_with("bad.txt:3: not an age X25519 identity (`AGE-SECRET-KEY-1…`)"),
            "{error}"
        );
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "# nothing\n").unwrap();
        assert!(
            Keyring::read(&[empty])
                .unwrap_err()
                .to_string()
                .contains("holds no identity")
        );
    }
}
