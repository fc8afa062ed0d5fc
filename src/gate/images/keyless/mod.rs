//! Keyless signatures (Sigstore's): the signer holds no long-lived key. A certificate
//! authority (Fulcio) certifies a short-lived key for ten minutes to an identity an OpenID
//! Connect issuer vouched for (a CI workflow, a person's email), and a transparency log (Rekor)
//! records the signature and signs the time it did. A bundle's signature counts when, checked
//! offline against the environment's trusted root:
//! - one of its log entries is the log's (its signed entry timestamp; its inclusion proof and
//!   checkpoint, which bundles from version 0.2 on must carry) and records this signature and
//!   certificate (`tlog`);
//! - its certificate was issued by the root's authorities for code signing and was valid when
//!   the entry was logged, and is in the root's certificate transparency logs (`certificate`);
//! - the certificate's key made the signature;
//! - the identity and issuer are one of those the environment names.
//!
//! cosign 2's keyless signatures (a message, its certificate and the log's promise in the
//! signature layer's annotations) are checked the same way. Timestamps from a timestamp
//! authority (RFC 3161) and logs that sign no entry timestamp (Rekor 2) are not read: such a
//! bundle is refused, and says why.

mod certificate;
pub mod root;
mod tlog;

use p256::ecdsa::Signature;
use p256::ecdsa::signature::Verifier;
use serde::Deserialize;

use self::root::TrustedRoot;
pub use self::tlog::Signed;
use super::cosign;
use crate::spec::model::gates::{KeylessSigners, SignerIdentity};

/// The most log entries of one bundle read.
const ENTRIES: usize = 4;

/// Who may sign keylessly: the trusted root, and the identities that count.
pub struct Keyless {
    root: TrustedRoot,
    identities: Vec<Identity>,
}

/// One identity that counts: the issuer that vouched for it, and the subject (exactly, or
/// matching a pattern).
struct Identity {
    issuer: String,
    subject: Subject,
}

/// An identity's subject, as the environment names it.
enum Subject {
    /// This subject exactly.
    Exactly(String),
    /// Any subject this pattern matches whole.
    Matching(regex::Regex),
}

impl Identity {
    /// Whether the subject `subject`, vouched for by `issuer`, is this identity.
    fn is(&self, issuer: &str, subject: &str) -> bool {
        self.issuer == issuer
            && match &self.subject {
                Subject::Exactly(exactly) => exactly == subject,
                Subject::Matching(pattern) => pattern.is_match(subject),
            }
    }
}

/// The bundle's verification material, as far as a keyless signature reads it.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Material {
    #[serde(default)]
    certificate: Option<Raw>,
    #[serde(default)]
    x509_certificate_chain: Option<Chain>,
    #[serde(default)]
    tlog_entries: Vec<serde_json::Value>,
}

/// A certificate as a bundle holds it (DER, base64).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    raw_bytes: String,
}

/// A chain of certificates as a bundle holds it, the signing one first.
#[derive(Deserialize)]
struct Chain {
    certificates: Vec<Raw>,
}

impl Material {
    /// Whether it holds a certificate: a keyless signature.
    pub fn is_keyless(&self) -> bool {
        self.certificate.is_some() || self.x509_certificate_chain.is_some()
    }
}

impl Keyless {
    /// The signers `policy` names; why they cannot be checked otherwise.
    pub fn new(policy: &KeylessSigners) -> Result<Keyless, String> {
        let root = TrustedRoot::parse(policy.root.as_bytes()).map_err(|why| format!("`{}`: {why}", policy.file))?;
        let identities = (policy.identities.iter())
            .map(identity)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Keyless { root, identities })
    }

    /// Checks a bundle's `signature` (DER) of what was `signed` against its `material`: who
    /// signed (`subject (issued by issuer)`); why it does not count otherwise. Its log entry
    /// must carry an inclusion proof when `proof_required` (bundles from version 0.2 on).
    pub fn verify_bundle(
        &self,
        material: &Material,
        signed: Signed<'_>,
        signature: &[u8],
        proof_required: bool,
    ) -> Result<String, String> {
        let leaf = match (&material.certificate, &material.x509_certificate_chain) {
            (Some(certificate), _) => certificate::raw(&certificate.raw_bytes)?,
            (None, Some(chain)) => {
                certificate::raw(&chain.certificates.first().ok_or("its chain is empty")?.raw_bytes)?
            }
            (None, None) => return Err("it holds no certificate".to_owned()),
        };
        self.verify(&leaf, &material.tlog_entries, signed, signature, proof_required)
    }

    /// Checks a cosign 2 keyless signature: `signature` (DER) of `payload`, with the
    /// certificate (PEM) and the log entry (the `dev.sigstore.cosign/bundle` annotation) its
    /// layer carries.
    pub fn verify_annotated(
        &self,
        certificate: &str,
        entry: Option<&str>,
        payload: &[u8],
        signature: &[u8],
    ) -> Result<String, String> {
        use x509_cert::der::{DecodePem, Encode};
        let leaf = x509_cert::Certificate::from_pem(certificate.as_bytes())
            .and_then(|c| c.to_der())
            .map_err(|e| format!("its certificate is not one (PEM): {e}"))?;
        let entries = match entry {
            Some(entry) => vec![annotated_entry(entry)?],
            None => Vec::new(),
        };
        self.verify(&leaf, &entries, Signed::Message(payload), signature, false)
    }

    /// Checks `signature` (DER) of what was `signed`, by the certificate `leaf` (DER), logged
    /// in one of `entries`.
    fn verify(
        &self,
        leaf: &[u8],
        entries: &[serde_json::Value],
        signed: Signed<'_>,
        signature: &[u8],
        proof_required: bool,
    ) -> Result<String, String> {
        let recorded = tlog::Recorded {
            signed,
            signature,
            certificate: leaf,
        };
        let at = self.logged(entries, &recorded, proof_required)?;
        let signer = certificate::verify(leaf, &self.root, at)?;
        let signature = Signature::from_der(signature).map_err(|e| format!("its signature is not ECDSA: {e}"))?;
        if signer.key.verify(signed.bytes(), &signature).is_err() {
            return Err("its signature was not made with its certificate's key".to_owned());
        }
        self.who(&signer)
    }

    /// When the first of `entries` (at most [`ENTRIES`] read) that the root's logs vouch for
    /// and that records `recorded` was logged; why none counts otherwise.
    fn logged(
        &self,
        entries: &[serde_json::Value],
        recorded: &tlog::Recorded<'_>,
        proof_required: bool,
    ) -> Result<i64, String> {
        if entries.is_empty() {
            return Err("it carries no transparency-log entry".to_owned());
        }
        let mut why = Vec::new();
        for entry in entries.iter().take(ENTRIES) {
            let checked = serde_json::from_value::<tlog::Entry>(entry.clone())
                .map_err(|e| format!("its log entry cannot be read: {e}"))
                .and_then(|entry| tlog::verify(&entry, &self.root, recorded, proof_required));
            match checked {
                Ok(at) => return Ok(at),
                Err(e) => why.push(e),
            }
        }
        Err(why.join("; "))
    }

    /// Who `signer` is, when one of the identities: `subject (issued by issuer)`.
    fn who(&self, signer: &certificate::Signer) -> Result<String, String> {
        for subject in &signer.identities {
            if self.identities.iter().any(|i| i.is(&signer.issuer, subject)) {
                return Ok(format!("{subject} (issued by {})", signer.issuer));
            }
        }
        let named = match signer.identities.as_slice() {
            [] => "no identity".to_owned(),
            identities => identities.join(", "),
        };
        Err(format!(
            "it was signed by {named} (issued by {}), none of the identities",
            signer.issuer
        ))
    }
}

/// cosign 2's log entry annotation (`{"SignedEntryTimestamp", "Payload": {"body",
/// "integratedTime", "logIndex", "logID"}}`, the log id in hex) in a bundle's form.
fn annotated_entry(annotation: &str) -> Result<serde_json::Value, String> {
    let why = |e: &dyn std::fmt::Display| format!("its log entry (`{}`) cannot be read: {e}", cosign::LOG_ENTRY);
    let entry: serde_json::Value = serde_json::from_str(annotation).map_err(|e| why(&e))?;
    let promised = &entry["Payload"];
    let id = promised["logID"].as_str().ok_or_else(|| why(&"it names no `logID`"))?;
    let id = hex::decode(id).map_err(|_| why(&"its `logID` is not hex"))?;
    use base64::Engine;
    Ok(serde_json::json!({
        "logIndex": promised["logIndex"],
        "logId": {"keyId": base64::engine::general_purpose::STANDARD.encode(id)},
        "integratedTime": promised["integratedTime"],
        "inclusionPromise": {"signedEntryTimestamp": entry["SignedEntryTimestamp"]},
        "canonicalizedBody": promised["body"],
    }))
}

/// The identity `rule` describes; why it is not one otherwise (a pattern that does not parse).
fn identity(rule: &SignerIdentity) -> Result<Identity, String> {
    let subject = match (&rule.subject, &rule.subject_pattern) {
        (Some(exactly), None) => Subject::Exactly(exactly.clone()),
        (None, Some(pattern)) => Subject::Matching(pattern_of(pattern)?),
        _ => return Err("an identity names exactly one of `subject` and `subjectPattern`".to_owned()),
    };
    Ok(Identity {
        issuer: rule.issuer.clone(),
        subject,
    })
}

/// `pattern`, matched against a whole subject (unlike `cosign verify
/// --certificate-identity-regexp`, whose pattern matches anywhere in it); why it is not a
/// pattern otherwise. It is read alone first, so that it cannot close the group that anchors
/// it.
pub fn pattern_of(pattern: &str) -> Result<regex::Regex, String> {
    let build = |pattern: &str| regex::RegexBuilder::new(pattern).size_limit(1 << 20).build();
    build(pattern).map_err(|e| format!("`{pattern}` is not a regular expression: {e}"))?;
    build(&format!(r"\A(?:{pattern})\z")).map_err(|e| {
        format!(
            "`{pattern}` cannot be matched against a whole subject (a comment or a flag of it runs to its end): {e}"
        )
    })
}

/// `seconds` since the epoch, as RFC 3339 writes it (UTC).
fn time(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map_or_else(|| seconds.to_string(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pattern matches whole subjects, and cannot close the group that anchors it.
    #[test]
    fn a_pattern_matches_the_whole_subject() {
        let either = pattern_of("a|b").unwrap();
        assert!(either.is_match("a") && either.is_match("b"));
        assert!(!either.is_match("ab") && !either.is_match("xa"));
        let workflow =
            pattern_of(r"https://github\.com/acme/web/\.github/workflows/release\.yml@refs/tags/v.+").unwrap();
        assert!(workflow.is_match("https://github.com/acme/web/.github/workflows/release.yml@refs/tags/v1.2"));
        assert!(!workflow.is_match("https://github.com/acme/web/.github/workflows/release.yml@refs/heads/main"));
        assert!(
            !workflow.is_match(
                "https://evil.example/?https://github.com/acme/web/.github/workflows/release.yml@refs/tags/v1"
            )
        );
        let escaping = pattern_of("https://github\\.com/acme/.*)|(.*").unwrap_err();
        assert!(
            escaping.starts_with("`https://github\\.com/acme/.*)|(.*` is not a regular expression: "),
            "{escaping}"
        );
    }
}
