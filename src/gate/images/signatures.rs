//! Finding an image's signatures in its registry and checking each: cosign 2's under the
//! `sha256-<hex>.sig` tag, then cosign 3's Sigstore bundles among the artifacts that refer to
//! the image (the referrers API, and the `sha256-<hex>` tag written where a registry has none).
//! What does not count is noted, with why, and the search goes on: only a registry that cannot
//! be read now stops it.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use super::registry::{Registry, Unread};
use super::{Signers, bundle, cosign};

/// The most Sigstore bundles, and the most cosign 2 signatures, read for one image.
pub const BUNDLES: usize = 16;

/// The most reasons a refusal lists.
const REASONS: usize = 8;

/// The most characters of a string the registry chose that a reason quotes.
const QUOTED: usize = 80;

/// The most characters of one reason: what a registry sends is quoted in them, and errors
/// quote it too.
const REASON: usize = 400;

/// What the search came to.
pub enum Verdict {
    /// A signature verified: who made it (a key's file, a keyless identity).
    Signed(String),
    /// None did: why each signature found does not count (none when none was found).
    Unsigned(Reasons),
}

/// Why the signatures found do not count, the first few in full.
#[derive(Default)]
pub struct Reasons {
    /// The first few, in the order found.
    listed: Vec<String>,
    /// How many more there were.
    more: usize,
}

impl Reasons {
    /// Notes why a signature does not count (cut to a readable length).
    fn add(&mut self, why: String) {
        if self.listed.len() < REASONS {
            self.listed.push(cut(&why, REASON));
        } else {
            self.more += 1;
        }
    }

    /// Whether no signature was found at all.
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }
}

impl std::fmt::Display for Reasons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.listed.join("; "))?;
        if self.more > 0 {
            write!(f, "; and {} more", self.more)?;
        }
        Ok(())
    }
}

/// An artifact as an image index lists it (any field may be missing: such an entry is passed
/// over).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    digest: String,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// Whether it says it is a Sigstore bundle.
    fn is_bundle(&self) -> bool {
        (self.artifact_type.as_deref()).is_some_and(|t| t.starts_with(bundle::MEDIA_TYPE_PREFIX))
    }

    /// The predicate type its annotation says its statement has.
    fn predicate(&self) -> Option<&str> {
        self.annotations.get(bundle::PREDICATE_ANNOTATION).map(String::as_str)
    }
}

/// An image index: what the referrers API answers, and what the `sha256-<hex>` tag holds.
#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

/// The most referrers of one image looked at.
const REFERRERS: usize = 1_000;

/// Searches the registry for a signature of the manifest `digest` by one of `signers`.
pub async fn search(registry: &mut Registry<'_>, digest: &str, signers: &Signers) -> Result<Verdict, Unread> {
    let mut reasons = Reasons::default();
    if let Some(signer) = by_tag(registry, digest, signers, &mut reasons).await? {
        return Ok(Verdict::Signed(signer));
    }
    if let Some(signer) = by_bundle(registry, digest, signers, &mut reasons).await? {
        return Ok(Verdict::Signed(signer));
    }
    Ok(Verdict::Unsigned(reasons))
}

/// cosign 2's signatures of `digest`: the layers of the manifest tagged `sha256-<hex>.sig`.
async fn by_tag(
    registry: &mut Registry<'_>,
    digest: &str,
    signers: &Signers,
    reasons: &mut Reasons,
) -> Result<Option<String>, Unread> {
    let tag = cosign::signature_tag(digest);
    let label = format!("signature {tag}");
    let Some(Some((_, manifest))) = settled(registry.manifest(&tag).await, &mut reasons_for(reasons, &label))? else {
        return Ok(None);
    };
    let manifest: serde_json::Value = match serde_json::from_slice(&manifest) {
        Ok(manifest) => manifest,
        Err(e) => {
            reasons.add(format!("{label}: its manifest is not JSON: {e}"));
            return Ok(None);
        }
    };
    let mut signatures = 0;
    for layer in manifest["layers"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let annotations = &layer["annotations"];
        let (Some(blob), Some(signature)) = (
            layer["digest"].as_str().filter(|d| is_digest(d)),
            annotations[cosign::SIGNATURE].as_str(),
        ) else {
            continue;
        };
        signatures += 1;
        if signatures > BUNDLES {
            reasons.add(format!(
                "{label}: it holds more than {BUNDLES} signatures: the rest were not read"
            ));
            break;
        }
        let Some(payload) = settled(registry.blob(blob).await, &mut reasons_for(reasons, &label))? else {
            continue;
        };
        // By a key (which may come with a certificate: `cosign sign --key --cert`), else by a
        // keyless identity when it carries a certificate.
        let by_key = cosign::verify(&payload, signature, digest, &signers.keys).map(|key| signers.files[key].clone());
        let verified = match (by_key, annotations[cosign::CERTIFICATE].as_str()) {
            (Err(by_key), Some(certificate)) if !signers.keys.is_empty() => {
                keyless(signers, &payload, signature, digest, certificate, annotations)
                    .map_err(|keyless| format!("{by_key}; as a keyless signature: {keyless}"))
            }
            (Err(_), Some(certificate)) => keyless(signers, &payload, signature, digest, certificate, annotations),
            (by_key, _) => by_key,
        };
        match verified {
            Ok(signer) => return Ok(Some(signer)),
            Err(why) => reasons.add(format!("{label}: {why}")),
        }
    }
    if signatures == 0 {
        reasons.add(format!("{label}: its manifest holds no signature"));
    }
    Ok(None)
}

/// Whether a cosign 2 keyless signature (`signature` of `payload`, with the `certificate` and
/// log entry its layer's `annotations` hold) is one of the image `digest` by one of the keyless
/// `signers`: who signed; why not otherwise.
fn keyless(
    signers: &Signers,
    payload: &[u8],
    signature: &str,
    digest: &str,
    certificate: &str,
    annotations: &serde_json::Value,
) -> Result<String, String> {
    let keyless = signers.keyless.as_ref().ok_or(
        "it is a keyless signature (a Fulcio certificate), and the environment names no keyless identity (`keyless`)",
    )?;
    cosign::claims(payload, digest)?;
    let entry = annotations[cosign::LOG_ENTRY].as_str();
    keyless.verify_annotated(certificate, entry, payload, &cosign::der(signature)?)
}

/// cosign 3's signatures of `digest`: Sigstore bundles among the artifacts that refer to it,
/// those that say they are signatures first. One that says it holds another kind of statement
/// (an SBOM, a provenance) is passed over unread; what the others hold is checked in full.
async fn by_bundle(
    registry: &mut Registry<'_>,
    digest: &str,
    signers: &Signers,
    reasons: &mut Reasons,
) -> Result<Option<String>, Unread> {
    let mut bundles: Vec<Descriptor> = referrers(registry, digest, reasons)
        .await?
        .into_iter()
        .filter(Descriptor::is_bundle)
        .collect();
    bundles.sort_by_key(|d| d.predicate() != Some(bundle::SIGN_PREDICATE));
    let (mut seen, mut read) = (HashSet::new(), 0);
    for referrer in &bundles {
        let at = &referrer.digest;
        if !is_digest(at) {
            reasons.add(format!("a referrer's digest `{}` is not a SHA-256 digest", quoted(at)));
            continue;
        }
        if !seen.insert(at) {
            continue;
        }
        if let Some(predicate) = referrer.predicate().filter(|p| *p != bundle::SIGN_PREDICATE) {
            reasons.add(format!(
                "referrer {at}: an attestation (`{}`), not a signature; not read",
                quoted(predicate)
            ));
            continue;
        }
        read += 1;
        if read > BUNDLES {
            reasons.add(format!(
                "more than {BUNDLES} bundles refer to {digest}: the rest were not read (delete the old signatures)"
            ));
            break;
        }
        let mut note = |why: String| reasons.add(format!("referrer {at}: {why}"));
        let Some(bundle) = bundle_of(registry, at, &mut note).await? else {
            continue;
        };
        match bundle::verify(&bundle, digest, signers) {
            Ok(signer) => return Ok(Some(signer)),
            Err(why) => note(why),
        }
    }
    Ok(None)
}

/// The artifacts that refer to `digest`: the referrers API's pages, then the `sha256-<hex>`
/// tag's index; at most [`REFERRERS`] of them.
async fn referrers(
    registry: &mut Registry<'_>,
    digest: &str,
    reasons: &mut Reasons,
) -> Result<Vec<Descriptor>, Unread> {
    let mut note = |why| reasons.add(format!("the referrers API for {digest}: {why}"));
    let listing = settled(registry.referrers(digest).await, &mut note)?.flatten();
    if let Some(why) = listing.as_ref().and_then(|l| l.stopped.clone()) {
        note(why);
    }
    let mut pages: Vec<(Vec<u8>, String)> = (listing.into_iter().flat_map(|l| l.pages))
        .map(|page| (page, "a page of the referrers API".to_owned()))
        .collect();
    let tag = digest.replacen(':', "-", 1);
    let label = format!("the tag {tag}");
    if let Some(Some((_, index))) = settled(registry.manifest(&tag).await, &mut reasons_for(reasons, &label))? {
        pages.push((index, label.clone()));
    }
    let mut listed = Vec::new();
    for (page, from) in pages {
        match serde_json::from_slice::<Index>(&page) {
            Ok(index) => listed.extend(index.manifests),
            Err(e) => reasons.add(format!("{from} is not an image index: {e}")),
        }
        if listed.len() > REFERRERS {
            listed.truncate(REFERRERS);
            reasons.add(format!(
                "more than {REFERRERS} artifacts refer to {digest}: the rest were not looked at"
            ));
            break;
        }
    }
    Ok(listed)
}

/// The Sigstore bundle the artifact `at` holds (its manifest's first layer), read whole and
/// checked against its digest; `None` with why noted when there is none.
async fn bundle_of(
    registry: &mut Registry<'_>,
    at: &str,
    note: &mut impl FnMut(String),
) -> Result<Option<Vec<u8>>, Unread> {
    let manifest = match settled(registry.manifest(at).await, note)? {
        Some(Some((_, manifest))) => manifest,
        Some(None) => {
            note("its manifest is not in the registry".to_owned());
            return Ok(None);
        }
        None => return Ok(None),
    };
    let layer = serde_json::from_slice::<serde_json::Value>(&manifest)
        .ok()
        .and_then(|m| m["layers"].get(0).cloned())
        .filter(|l| {
            l["mediaType"]
                .as_str()
                .is_some_and(|t| t.starts_with(bundle::MEDIA_TYPE_PREFIX))
        });
    let Some(blob) = layer
        .as_ref()
        .and_then(|l| l["digest"].as_str())
        .filter(|d| is_digest(d))
    else {
        note("its manifest holds no Sigstore bundle".to_owned());
        return Ok(None);
    };
    settled(registry.blob(blob).await, note)
}

/// What a read came to: what was read, or `None` with why noted when the registry's answer
/// settles that it cannot be; a registry that cannot be read now stops the search.
fn settled<T>(read: Result<T, Unread>, note: &mut impl FnMut(String)) -> Result<Option<T>, Unread> {
    match read {
        Ok(read) => Ok(Some(read)),
        Err(Unread::Refused(why)) => {
            note(why);
            Ok(None)
        }
        Err(unavailable) => Err(unavailable),
    }
}

/// Notes a reason about what `label` names.
fn reasons_for<'a>(reasons: &'a mut Reasons, label: &'a str) -> impl FnMut(String) + 'a {
    move |why| reasons.add(format!("{label}: {why}"))
}

/// Whether `s` is a SHA-256 digest as registries write them (`sha256:` and 64 hex digits).
fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// `s`, cut to a length fit for a message.
fn quoted(s: &str) -> String {
    cut(s, QUOTED)
}

/// `s`, cut to at most `most` characters (and an ellipsis).
fn cut(s: &str, most: usize) -> String {
    match s.char_indices().nth(most) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}
