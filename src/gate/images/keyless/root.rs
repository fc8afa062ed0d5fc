//! A Sigstore trusted root (`trusted_root.json`: what Sigstore's TUF repository serves, or
//! `cosign trusted-root create` writes for a private deployment): the certificate authorities
//! that issue signing certificates (Fulcio), the transparency logs that record signatures
//! (Rekor) and the certificate transparency logs that record certificates, each with the time
//! it was trusted for.

use base64::Engine;
use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey;
use serde::Deserialize;

/// The media types of trusted roots.
const MEDIA_TYPE_PREFIX: &str = "application/vnd.dev.sigstore.trustedroot";

/// What the trusted root holds.
pub struct TrustedRoot {
    /// The authorities that issue signing certificates.
    pub authorities: Vec<Authority>,
    /// The transparency logs signatures are recorded in.
    pub logs: Vec<Log>,
    /// The certificate transparency logs certificates are recorded in.
    pub ct_logs: Vec<Log>,
}

/// A certificate authority: its chain (DER), trusted for `valid`.
pub struct Authority {
    /// Where it is served (for messages).
    pub uri: String,
    /// Its certificates, DER: the self-signed ones are anchors, the others intermediates.
    pub certificates: Vec<Vec<u8>>,
    /// When certificates it issued count.
    pub valid: Validity,
}

/// A log: its id (the SHA-256 of its key), its key, trusted for `valid`.
pub struct Log {
    /// Where it is served (for messages).
    pub url: String,
    /// Its id, as entries name it.
    pub id: Vec<u8>,
    /// Its key, when it is one plumb checks (ECDSA P-256); what it is otherwise.
    pub key: Result<VerifyingKey, String>,
    /// When what it signed counts.
    pub valid: Validity,
}

impl Log {
    /// How messages name it: where it is served, else its id.
    pub fn name(&self) -> String {
        if self.url.is_empty() {
            hex::encode(&self.id)
        } else {
            self.url.clone()
        }
    }
}

/// A time range, in seconds since the epoch; either end may be open.
#[derive(Clone, Copy, Default)]
pub struct Validity {
    start: Option<i64>,
    end: Option<i64>,
}

impl Validity {
    /// Whether `at` falls in it.
    pub fn holds(&self, at: i64) -> bool {
        self.start.is_none_or(|start| start <= at) && self.end.is_none_or(|end| at <= end)
    }
}

/// A trusted root as written (Sigstore's protocol buffers, in their JSON form).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    media_type: String,
    #[serde(default)]
    tlogs: Vec<LogDocument>,
    #[serde(default)]
    certificate_authorities: Vec<AuthorityDocument>,
    #[serde(default)]
    ctlogs: Vec<LogDocument>,
}

/// A log as written: where it is served, its key, its id.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogDocument {
    #[serde(default)]
    base_url: String,
    public_key: KeyDocument,
    log_id: LogId,
}

/// A log's key as written: its DER (base64), its kind, when it is trusted.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyDocument {
    raw_bytes: String,
    #[serde(default)]
    key_details: String,
    #[serde(default)]
    valid_for: Option<ValidFor>,
}

/// A log's id as written (base64), in a trusted root and in a bundle's entries.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LogId {
    pub(super) key_id: String,
}

/// A certificate authority as written: where it is served, its chain, when it is trusted.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthorityDocument {
    #[serde(default)]
    uri: String,
    cert_chain: Chain,
    #[serde(default)]
    valid_for: Option<ValidFor>,
}

/// A chain of certificates as written.
#[derive(Deserialize)]
struct Chain {
    certificates: Vec<Raw>,
}

/// One certificate as written (DER, base64).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    raw_bytes: String,
}

/// When something is trusted, as written (RFC 3339 times).
#[derive(Deserialize)]
struct ValidFor {
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    end: Option<String>,
}

/// The key details of the log keys plumb checks.
const P256: &str = "PKIX_ECDSA_P256_SHA_256";

impl TrustedRoot {
    /// The trusted root `json` holds; why it is not one otherwise. It must name at least one
    /// certificate authority, one transparency log and one certificate transparency log whose
    /// key plumb checks (keyless certificates must carry a timestamp of one, as `cosign
    /// verify` requires).
    pub fn parse(json: &[u8]) -> Result<TrustedRoot, String> {
        let document: Document = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        if !document.media_type.starts_with(MEDIA_TYPE_PREFIX) {
            return Err(format!(
                "`{}` is not a trusted root's media type ({MEDIA_TYPE_PREFIX}+json;version=0.1)",
                document.media_type
            ));
        }
        let base64 = base64::engine::general_purpose::STANDARD;
        let mut authorities = Vec::new();
        for (i, authority) in document.certificate_authorities.into_iter().enumerate() {
            let certificates = (authority.cert_chain.certificates.iter())
                .map(|c| base64.decode(&c.raw_bytes))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("certificateAuthorities[{i}]: a certificate is not base64: {e}"))?;
            if certificates.is_empty() {
                return Err(format!("certificateAuthorities[{i}] holds no certificate"));
            }
            for (j, certificate) in certificates.iter().enumerate() {
                use x509_cert::der::Decode;
                x509_cert::Certificate::from_der(certificate).map_err(|e| {
                    format!("certificateAuthorities[{i}].certChain.certificates[{j}] is not an X.509 certificate: {e}")
                })?;
            }
            authorities.push(Authority {
                uri: authority.uri,
                certificates,
                valid: validity(authority.valid_for.as_ref())
                    .map_err(|e| format!("certificateAuthorities[{i}].validFor: {e}"))?,
            });
        }
        let tlogs = logs(document.tlogs, "tlogs")?;
        let ct_logs = logs(document.ctlogs, "ctlogs")?;
        if authorities.is_empty() {
            return Err("it names no certificate authority (certificateAuthorities)".to_owned());
        }
        if !tlogs.iter().any(|l| l.key.is_ok()) {
            return Err(format!("it names no transparency log (tlogs) with a {P256} key"));
        }
        if !ct_logs.iter().any(|l| l.key.is_ok()) {
            return Err(format!(
                "it names no certificate transparency log (ctlogs) with a {P256} key"
            ));
        }
        Ok(TrustedRoot {
            authorities,
            logs: tlogs,
            ct_logs,
        })
    }

    /// The transparency logs of id `id` (one log may be listed once per period of its key).
    pub fn logs_of(&self, id: &[u8]) -> impl Iterator<Item = &Log> + '_ {
        let id = id.to_vec();
        self.logs.iter().filter(move |l| l.id == id)
    }
}

/// The logs `documents` describe (`field` names them in messages). A key of a kind plumb does
/// not check (Ed25519, RSA) keeps its log, which then vouches for nothing.
fn logs(documents: Vec<LogDocument>, field: &str) -> Result<Vec<Log>, String> {
    let base64 = base64::engine::general_purpose::STANDARD;
    let mut logs = Vec::new();
    for (i, log) in documents.into_iter().enumerate() {
        let id = base64
            .decode(&log.log_id.key_id)
            .map_err(|e| format!("{field}[{i}].logId.keyId is not base64: {e}"))?;
        let der = base64
            .decode(&log.public_key.raw_bytes)
            .map_err(|e| format!("{field}[{i}].publicKey.rawBytes is not base64: {e}"))?;
        let key = if log.public_key.key_details == P256 {
            let key = VerifyingKey::from_public_key_der(&der)
                .map_err(|e| format!("{field}[{i}].publicKey is not an ECDSA P-256 key: {e}"))?;
            Ok(key)
        } else {
            Err(format!(
                "its key is `{}`, which plumb does not check (only {P256})",
                log.public_key.key_details
            ))
        };
        logs.push(Log {
            url: log.base_url,
            id,
            key,
            valid: validity(log.public_key.valid_for.as_ref()).map_err(|e| format!("{field}[{i}].validFor: {e}"))?,
        });
    }
    Ok(logs)
}

/// The range `valid_for` writes (RFC 3339 times); open when absent.
fn validity(valid_for: Option<&ValidFor>) -> Result<Validity, String> {
    let Some(valid_for) = valid_for else {
        return Ok(Validity::default());
    };
    let seconds = |time: &Option<String>| {
        time.as_deref()
            .map(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .map(|t| t.timestamp())
                    .map_err(|e| format!("`{t}` is not an RFC 3339 time: {e}"))
            })
            .transpose()
    };
    Ok(Validity {
        start: seconds(&valid_for.start)?,
        end: seconds(&valid_for.end)?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Sigstore's public-good trusted root as sigstore-go's tests hold it (its 2021 Fulcio
    /// roots and intermediate, its Rekor log, its two certificate transparency logs).
    pub(crate) const PUBLIC_GOOD: &str = include_str!("testdata/public-good.json");

    #[test]
    fn the_public_good_root_is_read() {
        let root = TrustedRoot::parse(PUBLIC_GOOD.as_bytes()).unwrap();
        assert_eq!(root.authorities.len(), 2);
        assert_eq!(root.authorities[1].certificates.len(), 2);
        assert_eq!(root.logs.len(), 1);
        assert_eq!(root.ct_logs.len(), 2);
        let rekor = base64::engine::general_purpose::STANDARD
            .decode("wNI9atQGlz+VWfO6LRygH4QUfY/8W4RFwiT5i5WRgB0=")
            .unwrap();
        assert!(root.logs_of(&rekor).all(|l| l.key.is_ok()));
        assert_eq!(root.logs_of(&rekor).count(), 1);
        // Fulcio's first root is trusted from 2021-03-07T03:20:29Z.
        assert!(!root.authorities[0].valid.holds(1_615_087_228));
        assert!(root.authorities[0].valid.holds(1_615_087_229));

        let wrong = br#"{"mediaType": "application/json", "tlogs": []}"#;
        assert!(
            TrustedRoot::parse(wrong)
                .err()
                .unwrap()
                .contains("is not a trusted root's media type")
        );
        let mut no_ct: serde_json::Value = serde_json::from_str(PUBLIC_GOOD).unwrap();
        no_ct["ctlogs"] = serde_json::json!([]);
        assert_eq!(
            TrustedRoot::parse(no_ct.to_string().as_bytes()).err().unwrap(),
            "it names no certificate transparency log (ctlogs) with a PKIX_ECDSA_P256_SHA_256 key"
        );
        let empty = br#"{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}"#;
        assert_eq!(
            TrustedRoot::parse(empty).err().unwrap(),
            "it names no certificate authority (certificateAuthorities)"
        );
    }
}
