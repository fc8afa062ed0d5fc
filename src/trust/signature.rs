//! Checking one commit's OpenPGP signature against the certificates of a policy, at the time the
//! signature was made: a key that expired later still vouches for what it signed before; a key
//! revoked as retired stops vouching from its revocation on; a key revoked as compromised never
//! vouches again. Each failure is told apart, so the refusal says what to fix.

use std::collections::BTreeSet;
use std::time::SystemTime;

use sequoia_openpgp::cert::Cert;
use sequoia_openpgp::cert::amalgamation::ValidAmalgamation as _;
use sequoia_openpgp::packet::Signature;
use sequoia_openpgp::parse::{PacketParser, PacketParserResult, Parse};
use sequoia_openpgp::policy::{HashAlgoSecurity, Policy as _, StandardPolicy};
use sequoia_openpgp::types::{RevocationStatus, RevocationType};
use sequoia_openpgp::{Fingerprint, KeyHandle, Packet};

/// Who made a good signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signer {
    /// The primary key's fingerprint.
    pub fingerprint: Fingerprint,
    /// When the signature was made.
    pub time: SystemTime,
}

/// Why a signature does not vouch for a commit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The commit carries no signature.
    #[error("the commit is not signed")]
    Unsigned,
    /// The signature cannot be parsed, or lacks its creation time.
    #[error("the signature is malformed: {0}")]
    Malformed(String),
    /// The signature uses an algorithm too weak to trust (SHA-1, MD5…).
    #[error("the signature uses {0}, which is too weak to trust")]
    WeakAlgorithm(String),
    /// No certificate of the policy holds the signing key.
    #[error("the signing key {0} is not in the parent commit's signing policy")]
    UnknownSigner(String),
    /// The key had expired when the signature was made.
    #[error("certificate {0} had expired when the commit was signed")]
    Expired(Fingerprint),
    /// The key is revoked: always when compromised, or from its date on when retired.
    #[error("certificate {fingerprint} is revoked{}", if *.hard { " (compromised: every signature is void)" } else { " since before the commit was signed" })]
    Revoked {
        /// The certificate.
        fingerprint: Fingerprint,
        /// A hard revocation voids even signatures made before it.
        hard: bool,
    },
    /// The certificate was not usable at signing time for another reason (not yet valid, no
    /// signing-capable key, a weak self-signature).
    #[error("certificate {fingerprint} could not sign at that time: {reason}")]
    UnusableCertificate {
        /// The certificate.
        fingerprint: Fingerprint,
        /// Sequoia's explanation.
        reason: String,
    },
    /// The signature does not match the commit: it was altered after signing.
    #[error("the signature by {0} does not match the commit's content")]
    BadSignature(Fingerprint),
}

/// How revocations for compromise (hard revocations) count for one commit.
#[derive(Clone, Copy, Debug)]
pub enum Compromise<'a> {
    /// Certificates and keys revoked as compromised anywhere in the history being checked:
    /// their signatures are void even where the parent's policy does not yet know of the
    /// revocation, and a certificate's own hard revocation voids them whatever their date.
    Voids(&'a BTreeSet<Fingerprint>),
    /// The commit is goodlisted by an authenticated policy: an auditor vouched for it, so a
    /// hard revocation does not void its signature (a soft one still counts from its date).
    Forgiven,
}

/// Verifies `signature` (armored, as git stores it) over `data` against `certs`, and returns
/// every signer whose signature is good (a commit may carry several), hard revocations counting
/// as `compromise` says.
pub fn verify<'a>(
    signature: &[u8],
    data: &[u8],
    certs: impl Iterator<Item = &'a Cert> + Clone,
    compromise: Compromise<'_>,
) -> Result<Vec<Signer>, SignatureError> {
    let policy = StandardPolicy::new();
    let signatures = parse(signature)?;
    let mut signers = Vec::new();
    let mut first_error = None;
    for sig in &signatures {
        match verify_one(&policy, sig, data, certs.clone(), compromise) {
            Ok(signer) => signers.push(signer),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match (signers.is_empty(), first_error) {
        (false, _) => Ok(signers),
        (true, e) => Err(e.unwrap_or(SignatureError::Unsigned)),
    }
}

fn parse(signature: &[u8]) -> Result<Vec<Signature>, SignatureError> {
    let malformed = |e: anyhow::Error| SignatureError::Malformed(e.to_string());
    // The packets are taken as they are read (git's signatures hold no containers to open);
    // anything but a signature is skipped.
    let mut signatures = Vec::new();
    let mut read = PacketParser::from_bytes(signature).map_err(malformed)?;
    while let PacketParserResult::Some(parser) = read {
        let (packet, next) = parser.next().map_err(malformed)?;
        if let Packet::Signature(sig) = packet {
            signatures.push(sig);
        }
        read = next;
    }
    if signatures.is_empty() {
        return Err(SignatureError::Malformed("no signature packet".to_owned()));
    }
    Ok(signatures)
}

/// Tries every certificate holding one of the signature's issuer keys: a certificate may list
/// someone else's key without a binding (anyone may add packets to a certificate), and that must
/// not shadow the certificate the key really belongs to.
fn verify_one<'a>(
    policy: &StandardPolicy,
    sig: &Signature,
    data: &[u8],
    certs: impl Iterator<Item = &'a Cert>,
    compromise: Compromise<'_>,
) -> Result<Signer, SignatureError> {
    let time = sig
        .signature_creation_time()
        .ok_or_else(|| SignatureError::Malformed("no creation time".to_owned()))?;
    if policy.signature(sig, HashAlgoSecurity::CollisionResistance).is_err() {
        return Err(SignatureError::WeakAlgorithm(sig.hash_algo().to_string()));
    }
    let issuers: Vec<KeyHandle> = sig.get_issuers();
    let mut first_error = None;
    for cert in certs.filter(|cert| {
        cert.keys()
            .any(|k| issuers.iter().any(|i| i.aliases(k.key().key_handle())))
    }) {
        match verify_with(policy, sig, time, &issuers, data, cert, compromise) {
            Ok(signer) => return Ok(signer),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| {
        SignatureError::UnknownSigner(
            issuers
                .first()
                .map(ToString::to_string)
                .unwrap_or_else(|| "(none)".into()),
        )
    }))
}

fn verify_with(
    policy: &StandardPolicy,
    sig: &Signature,
    time: SystemTime,
    issuers: &[KeyHandle],
    data: &[u8],
    cert: &Cert,
    compromise: Compromise<'_>,
) -> Result<Signer, SignatureError> {
    let fingerprint = cert.fingerprint();
    let voided = |fingerprint: &Fingerprint| matches!(compromise, Compromise::Voids(set) if set.contains(fingerprint));
    if voided(&fingerprint) {
        return Err(SignatureError::Revoked {
            fingerprint,
            hard: true,
        });
    }
    // The revocations that count: a goodlisted commit's signature outlives a hard one.
    let counted = |revocations: Vec<&Signature>| -> Option<bool> {
        let counted: Vec<&Signature> = revocations
            .into_iter()
            .filter(|r| !(matches!(compromise, Compromise::Forgiven) && is_hard(r)))
            .collect();
        (!counted.is_empty()).then(|| counted.iter().any(|r| is_hard(r)))
    };
    let unusable = |reason: String| SignatureError::UnusableCertificate {
        fingerprint: fingerprint.clone(),
        reason,
    };
    // Revocation is judged before validity: sequoia refuses a revoked certificate's binding too,
    // and "revoked" is the more useful reason.
    if let RevocationStatus::Revoked(revocations) = cert.revocation_status(policy, time)
        && let Some(hard) = counted(revocations)
    {
        return Err(SignatureError::Revoked { fingerprint, hard });
    }
    let valid = cert.with_policy(policy, time).map_err(|e| unusable(e.to_string()))?;
    if valid.alive().is_err() {
        return Err(SignatureError::Expired(fingerprint));
    }
    // Only keys bound to the certificate at signing time count.
    let key = valid
        .keys()
        .for_signing()
        .find(|k| issuers.iter().any(|i| i.aliases(k.key().key_handle())))
        .ok_or_else(|| unusable("the signing key is not a valid signing key of the certificate".to_owned()))?;
    if voided(&key.key().fingerprint()) {
        return Err(SignatureError::Revoked {
            fingerprint,
            hard: true,
        });
    }
    if let RevocationStatus::Revoked(revocations) = key.revocation_status()
        && let Some(hard) = counted(revocations)
    {
        return Err(SignatureError::Revoked { fingerprint, hard });
    }
    if key.alive().is_err() {
        return Err(SignatureError::Expired(fingerprint));
    }
    sig.verify_message(key.key(), data)
        .map_err(|_| SignatureError::BadSignature(fingerprint.clone()))?;
    Ok(Signer { fingerprint, time })
}

/// Whether a revocation voids every signature, past ones included: compromised keys, and
/// revocations that give no reason (OpenPGP's conservative reading).
pub fn is_hard(revocation: &Signature) -> bool {
    match revocation.reason_for_revocation() {
        Some((reason, _)) => reason.revocation_type() == RevocationType::Hard,
        None => true,
    }
}

/// The certificates and keys among `certs` that carry a hard revocation (at any time): primary
/// keys revoked with their certificate, and subkeys revoked on their own.
pub fn hard_revocations<'a>(certs: impl Iterator<Item = &'a Cert>) -> Vec<Fingerprint> {
    let policy = StandardPolicy::new();
    let mut revoked = Vec::new();
    for cert in certs {
        if let RevocationStatus::Revoked(revocations) = cert.revocation_status(&policy, None)
            && revocations.iter().any(|r| is_hard(r))
        {
            revoked.push(cert.fingerprint());
        }
        for subkey in cert.keys().subkeys() {
            let hard = subkey.self_revocations().any(is_hard);
            if hard {
                revoked.push(subkey.key().fingerprint());
            }
        }
    }
    revoked
}
