//! cosign 3's signatures of images, as Sigstore bundles: `cosign sign --key` stores, beside the
//! image, an OCI artifact (found through the registry's referrers API, or the `sha256-<hex>`
//! tag where the registry has none) whose one layer is a bundle (`application/vnd.dev.sigstore.
//! bundle.v0.3+json`). Its DSSE envelope wraps an in-toto statement of predicate type
//! `https://sigstore.dev/cosign/sign/v1` whose subject is the image's digest, signed (ECDSA
//! P-256, DER) over DSSE's pre-authentication encoding. Bundles of other statements (an SBOM, a
//! provenance) are attestations, not signatures, and do not count. A keyless bundle (a Fulcio
//! certificate in place of a key) counts when its signer is one of the environment's keyless
//! identities (`keyless`).

use base64::Engine;
use p256::ecdsa::Signature;
use p256::ecdsa::signature::Verifier;
use serde::Deserialize;

use super::Signers;
use super::keyless::{Material, Signed};

/// The media types of Sigstore bundles (an artifact's `artifactType`, a layer's `mediaType`).
pub const MEDIA_TYPE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
/// The predicate type of an image signature.
pub const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
/// The payload type of an in-toto statement in DSSE.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// The annotation a referrer may carry naming its statement's predicate type.
pub const PREDICATE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";

/// The in-toto statement types read.
const STATEMENTS: [&str; 2] = ["https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"];

/// A Sigstore bundle, as far as a signature by a key is read from it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    media_type: String,
    #[serde(default)]
    verification_material: Material,
    dsse_envelope: Option<Envelope>,
    message_signature: Option<serde_json::Value>,
}

/// A DSSE envelope: a payload of a type, and its signatures.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

/// One signature of an envelope (base64 of DER).
#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

/// An in-toto statement: what it says (its predicate's type) of which artifacts.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Statement {
    #[serde(rename = "_type")]
    kind: String,
    predicate_type: String,
    subject: Vec<Subject>,
}

/// An artifact a statement is about, by its digests.
#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
}

/// Whether `bundle` (its JSON) is a signature of the image `digest` by one of `signers`: who
/// signed (a key's file, a keyless identity); why not otherwise.
pub fn verify(bundle: &[u8], digest: &str, signers: &Signers) -> Result<String, String> {
    let bundle: Bundle = serde_json::from_slice(bundle).map_err(|e| format!("it is not a Sigstore bundle: {e}"))?;
    if !bundle.media_type.starts_with(MEDIA_TYPE_PREFIX) {
        return Err(format!("`{}` is not a Sigstore bundle's media type", bundle.media_type));
    }
    let material = bundle.verification_material;
    let Some(envelope) = bundle.dsse_envelope else {
        return Err(match bundle.message_signature {
            Some(_) => {
                "it is a message signature, which names no image: cosign signs images with a statement".to_owned()
            }
            None => "the bundle holds no signature".to_owned(),
        });
    };
    if envelope.payload_type != IN_TOTO {
        return Err(format!(
            "its envelope holds `{}`, not an in-toto statement",
            envelope.payload_type
        ));
    }
    // A bundle's envelope holds exactly one signature (as Sigstore's verifiers require).
    let [signature] = envelope.signatures.as_slice() else {
        return Err(format!(
            "its envelope holds {} signatures, not one",
            envelope.signatures.len()
        ));
    };
    let base64 = base64::engine::general_purpose::STANDARD;
    let payload = base64
        .decode(envelope.payload.trim())
        .map_err(|e| format!("its payload is not base64: {e}"))?;
    let statement: Statement =
        serde_json::from_slice(&payload).map_err(|e| format!("its payload is not an in-toto statement: {e}"))?;
    if !STATEMENTS.contains(&statement.kind.as_str()) {
        return Err(format!("its statement's type `{}` is not in-toto's", statement.kind));
    }
    if statement.predicate_type != SIGN_PREDICATE {
        return Err(format!(
            "it is an attestation (`{}`), not a signature",
            statement.predicate_type
        ));
    }
    let (algorithm, hex) = digest.split_once(':').unwrap_or(("", digest));
    if !statement
        .subject
        .iter()
        .any(|s| s.digest.get(algorithm).is_some_and(|d| d.eq_ignore_ascii_case(hex)))
    {
        let named: Vec<String> = statement
            .subject
            .iter()
            .flat_map(|s| s.digest.iter().map(|(a, d)| format!("{a}:{d}")))
            .collect();
        return Err(format!("it signs {}, not {digest}", or_nothing(&named)));
    }
    let der = base64
        .decode(signature.sig.trim())
        .map_err(|e| format!("its signature is not base64: {e}"))?;
    let signed = pae(&envelope.payload_type, &payload);
    if material.is_keyless() {
        let keyless = signers.keyless.as_ref().ok_or(
            "it is a keyless signature (a Fulcio certificate), and the environment names no keyless identity (`keyless`)",
        )?;
        let signed = Signed::Envelope {
            payload: &payload,
            encoded: &signed,
        };
        // Bundles from version 0.2 on carry their log entry's inclusion proof.
        let proof_required = !bundle.media_type.ends_with("version=0.1");
        return keyless.verify_bundle(&material, signed, &der, proof_required);
    }
    let signature = Signature::from_der(&der).map_err(|e| format!("its signature is not ECDSA: {e}"))?;
    (signers.keys.iter())
        .position(|key| key.verify(&signed, &signature).is_ok())
        .map(|key| signers.files[key].clone())
        .ok_or_else(|| super::cosign::none_of_the_keys(&signers.keys))
}

/// DSSE's pre-authentication encoding of `payload` of `payload_type`: what is signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut signed = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    signed.extend_from_slice(payload);
    signed
}

/// The digests `named`, or that there are none.
fn or_nothing(named: &[String]) -> String {
    if named.is_empty() {
        "nothing".to_owned()
    } else {
        named.join(", ")
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{SigningKey, VerifyingKey};

    /// The media type cosign 3 writes.
    const MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

    /// The statement cosign signs for the image `digest` of `repository` (`registry/repo`).
    pub(crate) fn statement(repository: &str, digest: &str) -> Vec<u8> {
        let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        serde_json::to_vec(&serde_json::json!({
            "_type": STATEMENTS[0],
            "subject": [{"name": repository, "digest": {algorithm: hex}}],
            "predicateType": SIGN_PREDICATE,
            "predicate": {},
        }))
        .expect("a statement serializes")
    }

    /// A signing key made from `seed`.
    pub(crate) fn signing(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    /// A bundle as cosign 3 writes one for `statement`, signed by `key`.
    pub(crate) fn bundle(statement: &[u8], key: &SigningKey, material: serde_json::Value) -> Vec<u8> {
        let base64 = base64::engine::general_purpose::STANDARD;
        let signature: Signature = key.sign(&pae(IN_TOTO, statement));
        serde_json::to_vec(&serde_json::json!({
            "mediaType": MEDIA_TYPE,
            "verificationMaterial": material,
            "dsseEnvelope": {
                "payload": base64.encode(statement),
                "payloadType": IN_TOTO,
                "signatures": [{"sig": base64.encode(signature.to_der().as_bytes()), "keyid": ""}],
            },
        }))
        .unwrap()
    }

    /// Signers of the one key `key` (its file `keys/cosign.pub`).
    pub(crate) fn signers(key: &SigningKey) -> Signers {
        Signers {
            keys: vec![*key.verifying_key()],
            files: vec!["keys/cosign.pub".to_owned()],
            keyless: None,
        }
    }

    #[test]
    fn a_bundle_counts_for_its_digest_and_its_key_only() {
        let (alice, bob) = (signing(7), signing(9));
        let keys = signers(&alice);
        let digest = format!("sha256:{}", "ab".repeat(32));
        let hint = serde_json::json!({"publicKey": {"hint": "abc"}});
        let signed = statement("localhost:5000/web", &digest);
        assert_eq!(
            verify(&bundle(&signed, &alice, hint.clone()), &digest, &keys),
            Ok("keys/cosign.pub".to_owned())
        );
        assert_eq!(
            verify(&bundle(&signed, &bob, hint.clone()), &digest, &keys).unwrap_err(),
            "it was made with none of the keys"
        );
        let other = format!("sha256:{}", "cd".repeat(32));
        let moved = verify(&bundle(&signed, &alice, hint.clone()), &other, &keys).unwrap_err();
        assert_eq!(moved, format!("it signs {digest}, not {other}"));

        // An attestation by the same key is not a signature of the image.
        let provenance = serde_json::to_vec(&serde_json::json!({
            "_type": STATEMENTS[0],
            "subject": [{"name": "web", "digest": {"sha256": "ab".repeat(32)}}],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {},
        }))
        .unwrap();
        let attested = verify(&bundle(&provenance, &alice, hint.clone()), &digest, &keys).unwrap_err();
        assert_eq!(
            attested,
            "it is an attestation (`https://slsa.dev/provenance/v1`), not a signature"
        );

        // A keyless bundle is not checked with keys, whoever signed it.
        let keyless = serde_json::json!({"certificate": {"rawBytes": "MIIB"}});
        assert_eq!(
            verify(&bundle(&signed, &alice, keyless), &digest, &keys).unwrap_err(),
            "it is a keyless signature (a Fulcio certificate), and the environment names no keyless identity (`keyless`)"
        );

        // The signature covers the payload's type and bytes.
        let mut tampered: serde_json::Value = serde_json::from_slice(&bundle(&signed, &alice, hint.clone())).unwrap();
        let mut moved_statement = signed.clone();
        moved_statement.extend_from_slice(b" ");
        tampered["dsseEnvelope"]["payload"] = base64::engine::general_purpose::STANDARD
            .encode(&moved_statement)
            .into();
        let tampered = serde_json::to_vec(&tampered).unwrap();
        assert_eq!(
            verify(&tampered, &digest, &keys).unwrap_err(),
            "it was made with none of the keys"
        );

        // Two signatures in one envelope are not a bundle's.
        let mut doubled: serde_json::Value = serde_json::from_slice(&bundle(&signed, &alice, hint)).unwrap();
        let first = doubled["dsseEnvelope"]["signatures"][0].clone();
        doubled["dsseEnvelope"]["signatures"] = serde_json::json!([first.clone(), first]);
        let doubled = serde_json::to_vec(&doubled).unwrap();
        assert_eq!(
            verify(&doubled, &digest, &keys).unwrap_err(),
            "its envelope holds 2 signatures, not one"
        );
        assert!(
            verify(b"{}", &digest, &keys)
                .unwrap_err()
                .starts_with("it is not a Sigstore bundle")
        );
    }

    /// A bundle made by Sigstore's own tools (sigstore-go's public-key example, a DSSE envelope
    /// of plain text): its signature verifies over the encoding as `pae` makes it, and the
    /// bundle, which signs no image, is refused for what it holds.
    #[test]
    fn a_bundle_made_by_sigstores_tools_verifies() {
        use p256::pkcs8::DecodePublicKey;
        let key = VerifyingKey::from_public_key_pem(
            "-----BEGIN PUBLIC KEY-----\n\
             MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEGg6Hjxt2UNiJ1kwwq5XQIIwMZnJf\n\
             VQ3bF01uZKteMdcV/3qhCmWOecoxRqwrbYTshGg9NyXcBbve6zKwZVTLeg==\n\
             -----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let bundle = br#"{
          "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1",
          "verificationMaterial": {
            "tlogEntries": [], "timestampVerificationData": {"rfc3161Timestamps": []},
            "publicKey": {"hint": "9a76331edc1cfd3933040996615b1c06adbe6f9b4f11df4106dcceb66e3bdb1b"}
          },
          "dsseEnvelope": {
            "payload": "aGVsbG8sIHdvcmxkIQ==", "payloadType": "text/plain",
            "signatures": [{"sig": "MEUCICUhAVewfwKlk5fVzpRDUPhEw9O8I2pxC5nTnPfYDBsOAiEA0ZFqs99QgR9mAtFMWtWrOjmUC47zgaoolKIoLH/OwdM=", "keyid": ""}]
          }
        }"#;
        let parsed: Bundle = serde_json::from_slice(bundle).unwrap();
        let envelope = parsed.dsse_envelope.unwrap();
        let base64 = base64::engine::general_purpose::STANDARD;
        let payload = base64.decode(&envelope.payload).unwrap();
        let signature = Signature::from_der(&base64.decode(&envelope.signatures[0].sig).unwrap()).unwrap();
        assert!(key.verify(&pae(&envelope.payload_type, &payload), &signature).is_ok());
        assert!(
            key.verify(&payload, &signature).is_err(),
            "the encoding, not the payload, is signed"
        );
        let signers = Signers {
            keys: vec![key],
            files: vec!["key.pem".to_owned()],
            keyless: None,
        };
        assert_eq!(
            verify(bundle, "sha256:00", &signers).unwrap_err(),
            "its envelope holds `text/plain`, not an in-toto statement"
        );
    }

    #[test]
    fn the_pre_authentication_encoding_is_dsses() {
        // The example of the DSSE specification's protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }
}
