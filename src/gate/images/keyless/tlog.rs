//! A bundle's transparency-log entry (Rekor), checked offline against the trusted root: the
//! log's signed entry timestamp (its promise to include the entry, signing the time it was
//! logged), the inclusion proof up to a checkpoint the log signed (which bundles from version
//! 0.2 on must carry), and that the entry records this very signature and certificate.

use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::root::{LogId, TrustedRoot};

/// A transparency-log entry as a bundle holds it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    #[serde(deserialize_with = "int64")]
    log_index: i64,
    log_id: LogId,
    #[serde(deserialize_with = "int64")]
    integrated_time: i64,
    #[serde(default)]
    inclusion_promise: Option<Promise>,
    #[serde(default)]
    inclusion_proof: Option<Proof>,
    canonicalized_body: String,
}

/// The log's promise to include an entry: its signature (base64 of DER).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Promise {
    signed_entry_timestamp: String,
}

/// An inclusion proof: the entry's index in a tree of a size, its path, and the checkpoint the
/// log signed of that tree.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Proof {
    #[serde(deserialize_with = "int64")]
    log_index: i64,
    root_hash: String,
    #[serde(deserialize_with = "int64")]
    tree_size: i64,
    hashes: Vec<String>,
    #[serde(default)]
    checkpoint: Option<Checkpoint>,
}

/// A checkpoint: a signed note of a tree's size and root.
#[derive(Deserialize)]
struct Checkpoint {
    envelope: String,
}

/// What the entry must record: what was signed, the signature, by this certificate.
pub struct Recorded<'a> {
    /// What was signed.
    pub signed: Signed<'a>,
    /// The signature (DER).
    pub signature: &'a [u8],
    /// The signing certificate (DER).
    pub certificate: &'a [u8],
}

/// What a keyless signature signs.
#[derive(Clone, Copy)]
pub enum Signed<'a> {
    /// A DSSE envelope's payload (a bundle's); the key signs its pre-authentication encoding,
    /// `encoded`. Rekor records it as a `dsse` entry.
    Envelope {
        /// The payload's bytes.
        payload: &'a [u8],
        /// Its pre-authentication encoding.
        encoded: &'a [u8],
    },
    /// A message itself (cosign 2's payload). Rekor records its hash as a `hashedrekord`.
    Message(&'a [u8]),
}

impl Signed<'_> {
    /// The bytes the key signed.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Signed::Envelope { encoded, .. } => encoded,
            Signed::Message(message) => message,
        }
    }
}

/// Checks `entry` against `root` and `recorded`: the time (seconds since the epoch) the log
/// says it was logged, which its signed entry timestamp vouches for; why it does not count
/// otherwise. Its inclusion proof is checked when it carries one, and must be there when
/// `proof_required` (bundles from version 0.2 on carry one).
pub fn verify(entry: &Entry, root: &TrustedRoot, recorded: &Recorded<'_>, proof_required: bool) -> Result<i64, String> {
    let base64 = base64::engine::general_purpose::STANDARD;
    let id = base64
        .decode(&entry.log_id.key_id)
        .map_err(|e| format!("its log id is not base64: {e}"))?;
    let body = base64
        .decode(&entry.canonicalized_body)
        .map_err(|e| format!("its log entry's body is not base64: {e}"))?;
    // The promise: the log signed the entry's body, index and time (canonical JSON, keys
    // sorted). Without it, the time the entry claims is vouched for by nothing.
    let promise = (entry.inclusion_promise.as_ref()).ok_or(
        "its log entry carries no signed entry timestamp (an inclusion promise): when it was signed is vouched for by nothing",
    )?;
    let promised = format!(
        r#"{{"body":"{}","integratedTime":{},"logID":"{}","logIndex":{}}}"#,
        base64.encode(&body),
        entry.integrated_time,
        hex::encode(&id),
        entry.log_index
    );
    let signature = base64
        .decode(&promise.signed_entry_timestamp)
        .map_err(|e| format!("its signed entry timestamp is not base64: {e}"))?;
    let key = promised_by(root, &id, promised.as_bytes(), &signature, entry.integrated_time)?;
    match (&entry.inclusion_proof, proof_required) {
        (Some(proof), _) => included(&body, proof, key, &id).map_err(|why| format!("its inclusion proof: {why}"))?,
        (None, true) => {
            return Err("its log entry carries no inclusion proof, which a bundle of its version must".to_owned());
        }
        (None, false) => {}
    }
    records(&body, recorded)?;
    Ok(entry.integrated_time)
}

/// The key of the log of id `id` that made the promise `signature` over `promised`, trusted at
/// `at` (a log may be listed once per period of its key); why there is none otherwise.
fn promised_by<'a>(
    root: &'a TrustedRoot,
    id: &[u8],
    promised: &[u8],
    signature: &[u8],
    at: i64,
) -> Result<&'a VerifyingKey, String> {
    let mut why = Vec::new();
    for log in root.logs_of(id) {
        let name = log.name();
        let reason = match &log.key {
            Err(e) => format!("the log {name}: {e}"),
            Ok(key) if !signed_by(key, promised, signature) => {
                format!("its signed entry timestamp was not made by the log {name}")
            }
            Ok(_) if !log.valid.holds(at) => format!(
                "it was logged at {}, when the trusted root did not trust the log {name}",
                super::time(at),
            ),
            Ok(key) => return Ok(key),
        };
        if !why.contains(&reason) {
            why.push(reason);
        }
    }
    if why.is_empty() {
        return Err(format!(
            "it was logged in {}, a log the trusted root does not hold",
            hex::encode(id)
        ));
    }
    Err(why.join("; "))
}

/// Whether `signature` (DER) is `key`'s over `message`.
fn signed_by(key: &VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    Signature::from_der(signature).is_ok_and(|s| key.verify(message, &s).is_ok())
}

/// Checks that `body` is the leaf `proof` places in a tree whose root the log signed in the
/// proof's checkpoint (RFC 9162's inclusion proof, and a signed note).
fn included(body: &[u8], proof: &Proof, key: &VerifyingKey, id: &[u8]) -> Result<(), String> {
    let base64 = base64::engine::general_purpose::STANDARD;
    let (Ok(index), Ok(size)) = (u64::try_from(proof.log_index), u64::try_from(proof.tree_size)) else {
        return Err("its index or tree size is negative".to_owned());
    };
    let path = (proof.hashes.iter())
        .map(|h| base64.decode(h).ok().and_then(|h| <[u8; 32]>::try_from(h).ok()))
        .collect::<Option<Vec<_>>>()
        .ok_or("a hash of its path is not a SHA-256 hash")?;
    let leaf = hash(&[&[0], body]);
    let computed = root_of(leaf, index, size, &path).ok_or("its path does not fit its index and tree size")?;
    let root = base64
        .decode(&proof.root_hash)
        .map_err(|e| format!("its root hash is not base64: {e}"))?;
    if computed[..] != root[..] {
        return Err("the entry is not in the tree it names".to_owned());
    }
    let note = proof
        .checkpoint
        .as_ref()
        .ok_or("it carries no checkpoint the log signed")?;
    let (note_size, note_root) = checkpoint(&note.envelope, key, id)?;
    if note_size != size || note_root != root {
        return Err("its checkpoint is of another tree".to_owned());
    }
    Ok(())
}

/// The root of a tree of `size` leaves whose leaf `index` is `leaf`, from its audit `path`
/// (RFC 9162, 2.1.3.2); `None` when the path does not fit.
fn root_of(leaf: [u8; 32], index: u64, size: u64, path: &[[u8; 32]]) -> Option<[u8; 32]> {
    if index >= size {
        return None;
    }
    let (mut node, mut last) = (index, size - 1);
    let mut root = leaf;
    for sibling in path {
        if last == 0 {
            return None;
        }
        if node & 1 == 1 || node == last {
            root = hash(&[&[1], sibling, &root]);
            while node & 1 == 0 && node != 0 {
                node >>= 1;
                last >>= 1;
            }
        } else {
            root = hash(&[&[1], &root, sibling]);
        }
        node >>= 1;
        last >>= 1;
    }
    (last == 0).then_some(root)
}

/// The SHA-256 of `parts` one after the other.
fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// The tree size and root a checkpoint (a signed note: origin, size, root in base64, other
/// lines, a blank line, then `— name base64(key hint ‖ signature)` lines) holds, once one of
/// its signatures is found to be the log's.
fn checkpoint(note: &str, key: &VerifyingKey, id: &[u8]) -> Result<(u64, Vec<u8>), String> {
    let base64 = base64::engine::general_purpose::STANDARD;
    let (text, signatures) = note.split_once("\n\n").ok_or("its checkpoint is not a signed note")?;
    let signed = format!("{text}\n");
    let signed_by_log = signatures.lines().any(|line| {
        let Some(signature) = line.strip_prefix("\u{2014} ").and_then(|l| l.rsplit(' ').next()) else {
            return false;
        };
        let Ok(raw) = base64.decode(signature) else {
            return false;
        };
        // The key hint: the first four bytes of the log's id.
        raw.len() > 4 && raw[..4] == id[..4.min(id.len())] && signed_by(key, signed.as_bytes(), &raw[4..])
    });
    if !signed_by_log {
        return Err("its checkpoint is not signed by the log".to_owned());
    }
    let mut lines = text.lines().skip(1);
    let size = (lines.next()).and_then(|s| s.parse::<u64>().ok());
    let root = (lines.next()).and_then(|r| base64.decode(r).ok());
    size.zip(root)
        .ok_or_else(|| "its checkpoint names no tree size and root".to_owned())
}

/// Checks that the log entry `body` records `recorded`: a `hashedrekord` entry of the hash of
/// what the key signed, this signature and this certificate; or, for an envelope, a `dsse`
/// entry whose payload hash is the payload's and whose signatures include this signature by
/// this certificate.
fn records(body: &[u8], recorded: &Recorded<'_>) -> Result<(), String> {
    let body: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("its log entry's body is not JSON: {e}"))?;
    let (kind, spec) = (body["kind"].as_str().unwrap_or_default(), &body["spec"]);
    let base64 = base64::engine::general_purpose::STANDARD;
    let is_sha256_of = |hash: &serde_json::Value, bytes: &[u8]| {
        hash["algorithm"] == "sha256"
            && (hash["value"].as_str()).is_some_and(|v| v.eq_ignore_ascii_case(&hex::encode(Sha256::digest(bytes))))
    };
    let decoded = |value: &serde_json::Value| value.as_str().and_then(|v| base64.decode(v).ok());
    let by_this = |signature: &serde_json::Value, verifier: &serde_json::Value| {
        decoded(signature).is_some_and(|s| s == recorded.signature)
            && decoded(verifier)
                .and_then(|pem| pem_der(&pem))
                .is_some_and(|der| der == recorded.certificate)
    };
    let (what, hash, signed_here) = match (kind, recorded.signed) {
        ("dsse", Signed::Envelope { payload, .. }) => (
            "payload",
            is_sha256_of(&spec["payloadHash"], payload),
            (spec["signatures"].as_array().into_iter().flatten()).any(|r| by_this(&r["signature"], &r["verifier"])),
        ),
        // What the key signed, by hash: a message, or an envelope's encoding (as some signers
        // log an envelope).
        ("hashedrekord", signed) => (
            "signed message",
            is_sha256_of(&spec["data"]["hash"], signed.bytes()),
            by_this(
                &spec["signature"]["content"],
                &spec["signature"]["publicKey"]["content"],
            ),
        ),
        _ => {
            let signed = match recorded.signed {
                Signed::Envelope { .. } => "a DSSE envelope",
                Signed::Message(_) => "a signed message",
            };
            return Err(format!(
                "its log entry is of kind `{kind}`, which does not record {signed}"
            ));
        }
    };
    if !hash {
        return Err(format!("its log entry records another {what}"));
    }
    if !signed_here {
        return Err("its log entry records another signature or certificate".to_owned());
    }
    Ok(())
}

/// The DER of the one certificate in `pem`.
fn pem_der(pem: &[u8]) -> Option<Vec<u8>> {
    use x509_cert::der::{DecodePem, Encode};
    x509_cert::Certificate::from_pem(pem).ok()?.to_der().ok()
}

/// An int64 as protobuf's JSON writes it (a string), or as a number.
fn int64<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Number(i64),
        Text(String),
    }
    match Int::deserialize(deserializer)? {
        Int::Number(n) => Ok(n),
        Int::Text(t) => t.parse().map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gate::images::keyless::root::tests::PUBLIC_GOOD;

    /// sigstore-go's example of a bundle version 0.2: a signature logged in Sigstore's
    /// public-good Rekor, with its inclusion proof and checkpoint (and no promise).
    pub(crate) const PROVED: &str = include_str!("testdata/hashedrekord-v02.json");
    /// sigstore-go's example of a bundle version 0.1: an entry with its signed entry
    /// timestamp.
    const PROMISED: &str = include_str!("testdata/intoto-set.json");

    fn entry_of(bundle: &str) -> serde_json::Value {
        let bundle: serde_json::Value = serde_json::from_str(bundle).unwrap();
        bundle["verificationMaterial"]["tlogEntries"][0].clone()
    }

    /// The public-good log's proof and checkpoint verify; a proof of another leaf, another
    /// index, or a checkpoint whose signature or root changed does not.
    #[test]
    fn an_inclusion_proof_of_the_public_good_log_verifies() {
        let root = TrustedRoot::parse(PUBLIC_GOOD.as_bytes()).unwrap();
        let log = &root.logs[0];
        let key = log.key.as_ref().unwrap();
        let entry: Entry = serde_json::from_value(entry_of(PROVED)).unwrap();
        let body = base64::engine::general_purpose::STANDARD
            .decode(&entry.canonicalized_body)
            .unwrap();
        let proof = entry.inclusion_proof.as_ref().unwrap();
        assert_eq!(included(&body, proof, key, &log.id), Ok(()));
        assert_eq!(
            included(b"another body", proof, key, &log.id).unwrap_err(),
            "the entry is not in the tree it names"
        );
        let mut moved: Proof = serde_json::from_value(entry_of(PROVED)["inclusionProof"].clone()).unwrap();
        moved.log_index -= 1;
        assert!(included(&body, &moved, key, &log.id).is_err());
        let mut forged: Proof = serde_json::from_value(entry_of(PROVED)["inclusionProof"].clone()).unwrap();
        let note = forged.checkpoint.as_mut().unwrap();
        note.envelope = note.envelope.replacen("23083062\n", "23083063\n", 1);
        assert_eq!(
            included(&body, &forged, key, &log.id).unwrap_err(),
            "its checkpoint is not signed by the log"
        );
        // Without its promise, the entry's time is vouched for by nothing.
        let recorded = Recorded {
            signed: Signed::Message(b""),
            signature: b"",
            certificate: b"",
        };
        assert!(
            verify(&entry, &root, &recorded, false)
                .unwrap_err()
                .contains("no signed entry timestamp")
        );
    }

    /// The public-good log's signed entry timestamp verifies over the entry's canonical form;
    /// another time does not. The entry records an `intoto` statement (a key's), not a DSSE
    /// envelope: it does not count for one.
    #[test]
    fn a_signed_entry_timestamp_of_the_public_good_log_verifies() {
        let root = TrustedRoot::parse(PUBLIC_GOOD.as_bytes()).unwrap();
        let recorded = Recorded {
            signed: Signed::Envelope {
                payload: b"",
                encoded: b"",
            },
            signature: b"",
            certificate: b"",
        };
        let entry: Entry = serde_json::from_value(entry_of(PROMISED)).unwrap();
        assert_eq!(
            verify(&entry, &root, &recorded, false).unwrap_err(),
            "its log entry is of kind `intoto`, which does not record a DSSE envelope"
        );
        let mut later = entry_of(PROMISED);
        later["integratedTime"] = "1681839917".into();
        let later: Entry = serde_json::from_value(later).unwrap();
        assert_eq!(
            verify(&later, &root, &recorded, false).unwrap_err(),
            "its signed entry timestamp was not made by the log https://tlog.sigstore.dev"
        );
        let mut elsewhere = entry_of(PROMISED);
        elsewhere["logId"]["keyId"] = "3T0wasbHETJjGR4cmWc3AqJKXrjePK3/h4pygC8p7o4=".into();
        let elsewhere: Entry = serde_json::from_value(elsewhere).unwrap();
        assert!(
            verify(&elsewhere, &root, &recorded, false)
                .unwrap_err()
                .ends_with("a log the trusted root does not hold")
        );
    }

    /// Small trees, each leaf against the root computed whole (RFC 9162's definition).
    #[test]
    fn inclusion_paths_fit_every_leaf_of_small_trees() {
        fn tree_root(leaves: &[[u8; 32]]) -> [u8; 32] {
            if leaves.len() == 1 {
                return leaves[0];
            }
            let split = leaves.len().next_power_of_two() / 2;
            hash(&[&[1], &tree_root(&leaves[..split]), &tree_root(&leaves[split..])])
        }
        fn path(leaves: &[[u8; 32]], index: usize) -> Vec<[u8; 32]> {
            if leaves.len() == 1 {
                return Vec::new();
            }
            let split = leaves.len().next_power_of_two() / 2;
            let (mut path, sibling) = if index < split {
                (path(&leaves[..split], index), tree_root(&leaves[split..]))
            } else {
                (path(&leaves[split..], index - split), tree_root(&leaves[..split]))
            };
            path.push(sibling);
            path
        }
        for size in 1..=9usize {
            let leaves: Vec<[u8; 32]> = (0..size).map(|i| hash(&[&[0], &[i as u8]])).collect();
            let root = tree_root(&leaves);
            for index in 0..size {
                let proof = path(&leaves, index);
                assert_eq!(root_of(leaves[index], index as u64, size as u64, &proof), Some(root));
                if size > 1 {
                    let other = (index + 1) % size;
                    assert_ne!(root_of(leaves[other], index as u64, size as u64, &proof), Some(root));
                }
            }
            assert_eq!(root_of(leaves[0], size as u64, size as u64, &[]), None);
        }
    }
}
