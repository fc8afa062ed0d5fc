//! A keyless signature's certificate (Fulcio's): issued, at the time the signature was logged,
//! by one of the trusted root's certificate authorities for code signing; recorded in one of
//! its certificate transparency logs (an embedded signed certificate timestamp); and naming who
//! signed: the identity (an email address or a URI, such as a CI workflow's) and the OpenID
//! Connect issuer that vouched for it.

use base64::Engine as _;
use p256::ecdsa::VerifyingKey;
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::DecodePublicKey;
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::der::asn1::{ObjectIdentifier, OctetString, Utf8StringRef};
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, SubjectAltName};

use super::root::{Log, TrustedRoot};

/// Code signing (extended key usage 1.3.6.1.5.5.7.3.3), the content of its DER.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
/// Fulcio's extension naming the OpenID Connect issuer (a DER UTF8String).
const ISSUER: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
/// Fulcio's first extension naming the issuer (the string's bytes, unwrapped).
const ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
/// The embedded signed certificate timestamps (RFC 6962, 3.3).
const SCTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.11129.2.4.2");
/// The subject alternative name.
const SAN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
/// The extended key usage.
const EXTENDED_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");

/// The signature algorithms certificate chains may use.
static ALGORITHMS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
];

/// Who a certificate says signed, and the key it certifies.
#[derive(Debug)]
pub struct Signer {
    /// The OpenID Connect issuer that vouched for the identity.
    pub issuer: String,
    /// The identities it names (its subject alternative names: emails, URIs).
    pub identities: Vec<String>,
    /// The key it certifies.
    pub key: VerifyingKey,
}

/// Checks the certificate `der` as of `at` (seconds since the epoch, the time its signature
/// was logged): who it says signed; why it does not count otherwise.
pub fn verify(der: &[u8], root: &TrustedRoot, at: i64) -> Result<Signer, String> {
    let certificate = Certificate::from_der(der).map_err(|e| format!("its certificate is not X.509: {e}"))?;
    if !for_code_signing(&certificate) {
        return Err("its certificate was not issued for code signing".to_owned());
    }
    let issuer_key = issued(der, root, at)?;
    timestamped(&certificate, &issuer_key, &root.ct_logs)?;
    let spki = (certificate.tbs_certificate.subject_public_key_info.to_der())
        .map_err(|e| format!("its certificate's key cannot be read: {e}"))?;
    let key = VerifyingKey::from_public_key_der(&spki)
        .map_err(|_| "its certificate's key is not an ECDSA P-256 key, which plumb does not check".to_owned())?;
    Ok(Signer {
        issuer: issuer(&certificate).ok_or("its certificate names no OpenID Connect issuer (Fulcio's extension)")?,
        identities: identities(&certificate),
        key,
    })
}

/// Whether `certificate`'s extended key usage names code signing.
fn for_code_signing(certificate: &Certificate) -> bool {
    let code_signing = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
    (certificate
        .tbs_certificate
        .extensions
        .as_deref()
        .unwrap_or_default()
        .iter())
    .find(|e| e.extn_id == EXTENDED_KEY_USAGE)
    .and_then(|e| ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok())
    .is_some_and(|usage| usage.0.contains(&code_signing))
}

/// Checks that `der` was issued, valid at `at`, through one of the root's authorities trusted
/// then (each certificate of the path that names its uses naming code signing): the key (SPKI,
/// DER) of the certificate that issued it.
fn issued(der: &[u8], root: &TrustedRoot, at: i64) -> Result<Vec<u8>, String> {
    let leaf = CertificateDer::from(der);
    let end_entity =
        webpki::EndEntityCert::try_from(&leaf).map_err(|e| format!("its certificate cannot be read: {e}"))?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at.max(0).unsigned_abs()));
    let mut refused = Vec::new();
    for authority in root.authorities.iter().filter(|a| a.valid.holds(at)) {
        let certificates: Vec<CertificateDer<'_>> = (authority.certificates.iter())
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let (anchors, intermediates): (Vec<_>, Vec<_>) = certificates.iter().partition(|c| self_issued(c));
        let anchors: Vec<_> = (anchors.into_iter())
            .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
            .collect();
        let intermediates: Vec<CertificateDer<'_>> = intermediates.into_iter().cloned().collect();
        let usage = webpki::KeyUsage::required_if_present(CODE_SIGNING);
        match end_entity.verify_for_usage(ALGORITHMS, &anchors, &intermediates, time, usage, None, None) {
            Ok(path) => return Ok(path.issuer_spki().as_ref().to_vec()),
            Err(e) => {
                let name = if authority.uri.is_empty() {
                    "an authority"
                } else {
                    &authority.uri
                };
                let why = format!("{name}: {}", in_words(&e));
                if !refused.contains(&why) {
                    refused.push(why);
                }
            }
        }
    }
    if refused.is_empty() {
        return Err(format!(
            "no certificate authority of the trusted root was trusted at {}, when it was logged",
            super::time(at)
        ));
    }
    Err(format!(
        "its certificate was not issued by the trusted root's authorities at {}, when it was logged ({})",
        super::time(at),
        refused.join("; ")
    ))
}

/// Why a chain did not verify, in words.
fn in_words(error: &webpki::Error) -> String {
    let at = |time: &UnixTime| super::time(i64::try_from(time.as_secs()).unwrap_or(i64::MAX));
    match error {
        webpki::Error::CertExpired { not_after, .. } => format!("it had expired ({})", at(not_after)),
        webpki::Error::CertNotValidYet { not_before, .. } => {
            format!("it was not valid yet (from {})", at(not_before))
        }
        webpki::Error::UnknownIssuer => "it was not issued by this authority".to_owned(),
        webpki::Error::InvalidSignatureForPublicKey => "its signature was not made by the authority's key".to_owned(),
        webpki::Error::RequiredEkuNotFoundContext(_) => {
            "a certificate of the chain names its uses and code signing is not one".to_owned()
        }
        other => format!("{other:?}"),
    }
}

/// Whether `der` is self-issued (its subject is its issuer): a root, an anchor.
fn self_issued(der: &CertificateDer<'_>) -> bool {
    Certificate::from_der(der.as_ref()).is_ok_and(|c| c.tbs_certificate.subject == c.tbs_certificate.issuer)
}

/// Checks that `certificate` carries a signed certificate timestamp of one of `logs`, made
/// while the root trusted that log, over the certificate as it was before the timestamps were
/// added (its precertificate), issued under `issuer_key`.
fn timestamped(certificate: &Certificate, issuer_key: &[u8], logs: &[Log]) -> Result<(), String> {
    let extensions = certificate.tbs_certificate.extensions.as_deref().unwrap_or_default();
    let list = (extensions.iter().find(|e| e.extn_id == SCTS))
        .ok_or("its certificate carries no certificate transparency timestamp")?;
    let unreadable = "its certificate's transparency timestamps cannot be read";
    let list = OctetString::from_der(list.extn_value.as_bytes()).map_err(|_| unreadable)?;
    let scts = sct_list(list.as_bytes()).ok_or(unreadable)?;
    let mut precertificate = certificate.tbs_certificate.clone();
    if let Some(extensions) = precertificate.extensions.as_mut() {
        extensions.retain(|e| e.extn_id != SCTS);
    }
    let tbs = precertificate
        .to_der()
        .map_err(|e| format!("its certificate cannot be encoded again: {e}"))?;
    let issuer_hash: [u8; 32] = Sha256::digest(issuer_key).into();
    let counted = scts.iter().any(|sct| {
        let signed = sct_signed(sct, &issuer_hash, &tbs);
        let seconds = i64::try_from(sct.timestamp / 1000).unwrap_or(i64::MAX);
        (logs.iter().filter(|l| l.id == sct.log_id && l.valid.holds(seconds))).any(|log| {
            log.key.as_ref().is_ok_and(|key| {
                p256::ecdsa::Signature::from_der(sct.signature).is_ok_and(|s| key.verify(&signed, &s).is_ok())
            })
        })
    });
    if counted {
        Ok(())
    } else {
        Err(format!(
            "its certificate's transparency {} made by no log of the trusted root",
            if scts.len() == 1 {
                "timestamp was"
            } else {
                "timestamps were"
            }
        ))
    }
}

/// What the log signed for `sct`: the precertificate `tbs` issued under the key of SHA-256
/// `issuer_hash` (RFC 6962, 3.2).
fn sct_signed(sct: &Sct<'_>, issuer_hash: &[u8; 32], tbs: &[u8]) -> Vec<u8> {
    let mut signed = Vec::with_capacity(tbs.len() + 64);
    signed.extend_from_slice(&[0, 0]); // version 1, certificate_timestamp
    signed.extend_from_slice(&sct.timestamp.to_be_bytes());
    signed.extend_from_slice(&[0, 1]); // precert_entry
    signed.extend_from_slice(issuer_hash);
    let length = u32::try_from(tbs.len()).unwrap_or(u32::MAX).to_be_bytes();
    signed.extend_from_slice(&length[1..]);
    signed.extend_from_slice(tbs);
    signed.extend_from_slice(&u16::try_from(sct.extensions.len()).unwrap_or(u16::MAX).to_be_bytes());
    signed.extend_from_slice(sct.extensions);
    signed
}

/// One signed certificate timestamp (RFC 6962, 3.2), as far as it is checked.
struct Sct<'a> {
    log_id: &'a [u8],
    timestamp: u64,
    extensions: &'a [u8],
    signature: &'a [u8],
}

/// The timestamps of a `SignedCertificateTimestampList` (TLS encoding); `None` when it is not
/// one. Versions other than 1 are passed over.
fn sct_list(list: &[u8]) -> Option<Vec<Sct<'_>>> {
    let mut reader = Reader(list);
    let mut all = Reader(reader.vector(2)?);
    let mut scts = Vec::new();
    while !all.0.is_empty() {
        let mut sct = Reader(all.vector(2)?);
        let version = sct.take(1)?[0];
        let log_id = sct.take(32)?;
        let timestamp = u64::from_be_bytes(sct.take(8)?.try_into().ok()?);
        let extensions = sct.vector(2)?;
        let _algorithms = sct.take(2)?;
        let signature = sct.vector(2)?;
        if version == 0 {
            scts.push(Sct {
                log_id,
                timestamp,
                extensions,
                signature,
            });
        }
    }
    Some(scts)
}

/// Reads TLS-encoded bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = (n <= self.0.len()).then(|| self.0.split_at(n))?;
        self.0 = rest;
        Some(taken)
    }

    /// A vector whose length is written in `width` bytes before it.
    fn vector(&mut self, width: usize) -> Option<&'a [u8]> {
        let length = self.take(width)?.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
        self.take(length)
    }
}

/// The OpenID Connect issuer Fulcio wrote into `certificate`.
fn issuer(certificate: &Certificate) -> Option<String> {
    let extensions = certificate.tbs_certificate.extensions.as_deref().unwrap_or_default();
    let value = |oid| {
        extensions
            .iter()
            .find(|e| e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes())
    };
    if let Some(der) = value(ISSUER) {
        return Utf8StringRef::from_der(der).ok().map(|s| s.as_str().to_owned());
    }
    value(ISSUER_V1)
        .and_then(|raw| std::str::from_utf8(raw).ok())
        .map(str::to_owned)
}

/// The email addresses and URIs `certificate` names as its subject's alternative names.
fn identities(certificate: &Certificate) -> Vec<String> {
    let extensions = certificate.tbs_certificate.extensions.as_deref().unwrap_or_default();
    let Some(names) = (extensions.iter().find(|e| e.extn_id == SAN))
        .and_then(|e| SubjectAltName::from_der(e.extn_value.as_bytes()).ok())
    else {
        return Vec::new();
    };
    (names.0.iter())
        .filter_map(|name| match name {
            GeneralName::Rfc822Name(email) => Some(email.to_string()),
            GeneralName::UniformResourceIdentifier(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect()
}

/// The certificate (DER) `rawBytes` holds.
pub fn raw(raw_bytes: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(raw_bytes)
        .map_err(|e| format!("its certificate is not base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::images::keyless::root::tests::PUBLIC_GOOD;
    use crate::gate::images::keyless::tlog::tests::PROVED;

    /// The certificate of sigstore-go's example bundle: issued by Fulcio (public-good) to a
    /// GitHub Actions workflow on 2023-07-12 from 15:56:35 for ten minutes, logged at
    /// 15:56:36 (1689177396).
    fn example() -> Vec<u8> {
        let bundle: serde_json::Value = serde_json::from_str(PROVED).unwrap();
        raw(
            bundle["verificationMaterial"]["x509CertificateChain"]["certificates"][0]["rawBytes"]
                .as_str()
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn a_fulcio_certificate_names_its_workflow_and_issuer() {
        let root = TrustedRoot::parse(PUBLIC_GOOD.as_bytes()).unwrap();
        let signer = verify(&example(), &root, 1_689_177_396).unwrap();
        assert_eq!(signer.issuer, "https://token.actions.githubusercontent.com");
        assert_eq!(
            signer.identities,
            [
                "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
            ]
        );
    }

    /// Outside its ten minutes it does not count; nor without the root that issued it, nor
    /// without its certificate transparency log, nor with a timestamp that is not over it.
    #[test]
    fn a_fulcio_certificate_counts_only_as_its_root_and_logs_say() {
        let root = TrustedRoot::parse(PUBLIC_GOOD.as_bytes()).unwrap();
        let later = verify(&example(), &root, 1_689_177_396 + 600).unwrap_err();
        assert!(
            later.ends_with("at 2023-07-12T16:06:36Z, when it was logged (https://fulcio.sigstore.dev: it had expired (2023-07-12T16:06:35Z))"),
            "{later}"
        );
        let mut no_authority = TrustedRoot::parse(PUBLIC_GOOD.as_bytes()).unwrap();
        no_authority.authorities.truncate(1);
        assert!(verify(&example(), &no_authority, 1_689_177_396).is_err());
        let mut other_ct = TrustedRoot::parse(PUBLIC_GOOD.as_bytes()).unwrap();
        other_ct.ct_logs.remove(1);
        assert_eq!(
            verify(&example(), &other_ct, 1_689_177_396).unwrap_err(),
            "its certificate's transparency timestamp was made by no log of the trusted root"
        );
        // The timestamp signs the precertificate: issued under another key, it does not verify.
        let certificate = Certificate::from_der(&example()).unwrap();
        assert!(timestamped(&certificate, b"another issuer", &root.ct_logs).is_err());
        let issuer = webpki::spki_for_anchor(
            &webpki::anchor_from_trusted_cert(&CertificateDer::from(root.authorities[1].certificates[1].as_slice()))
                .unwrap(),
        );
        assert_eq!(timestamped(&certificate, issuer.as_ref(), &root.ct_logs), Ok(()));
    }
}
