//! cosign's signatures of images, as `cosign sign --key` stores them: beside the image, in the
//! same repository, a manifest tagged `sha256-<hex of the image's digest>.sig` whose layers are
//! each a "simple signing" payload (JSON naming the image's digest) with the ECDSA P-256
//! signature of that payload, base64, in the layer's annotation
//! `dev.cosignproject.cosign/signature`. Keys are cosign's public keys (PEM, `cosign.pub`). A
//! keyless signature (`cosign sign` with an identity) puts its certificate and its log entry in
//! the layer's annotations too.

use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;

/// The annotation holding a layer's signature.
pub const SIGNATURE: &str = "dev.cosignproject.cosign/signature";
/// The annotation holding a keyless signature's certificate (PEM).
pub const CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
/// The annotation holding a keyless signature's log entry: the log's signed entry timestamp and
/// what it signs (`{"SignedEntryTimestamp", "Payload": {"body", "integratedTime", "logIndex",
/// "logID"}}`).
pub const LOG_ENTRY: &str = "dev.sigstore.cosign/bundle";
/// The media type of a signature's payload.
pub const PAYLOAD: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The payload's `critical.type`.
const KIND: &str = "cosign container image signature";

/// A cosign public key; why `pem` is not one otherwise.
pub fn key(pem: &str) -> Result<VerifyingKey, String> {
    VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| format!("not an ECDSA P-256 public key in PEM: {e}"))
}

/// The tag the signatures of the image `digest` are stored under.
pub fn signature_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1) + ".sig"
}

/// Whether `payload`, signed `signature` (base64 of DER), is a signature of the image `digest`
/// by one of `keys`: the index of the key; why not otherwise.
pub fn verify(payload: &[u8], signature: &str, digest: &str, keys: &[VerifyingKey]) -> Result<usize, String> {
    claims(payload, digest)?;
    let der = der(signature)?;
    let signature = Signature::from_der(&der).map_err(|e| format!("its signature is not ECDSA: {e}"))?;
    keys.iter()
        .position(|key| key.verify(payload, &signature).is_ok())
        .ok_or_else(|| none_of_the_keys(keys))
}

/// Why a signature made with a key does not count, when none of `keys` made it.
pub fn none_of_the_keys(keys: &[VerifyingKey]) -> String {
    if keys.is_empty() {
        "it was made with a key, and the environment names none (`keys`)".to_owned()
    } else {
        "it was made with none of the keys".to_owned()
    }
}

/// Checks that `payload` claims to be a signature of the image `digest`.
pub fn claims(payload: &[u8], digest: &str) -> Result<(), String> {
    let claimed: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("its payload is not JSON: {e}"))?;
    let critical = &claimed["critical"];
    if critical["type"] != KIND {
        return Err(format!("its payload's type is not `{KIND}`"));
    }
    let signed = critical["image"]["docker-manifest-digest"].as_str().unwrap_or_default();
    if signed != digest {
        return Err(format!("it signs {signed}, not {digest}"));
    }
    Ok(())
}

/// The DER of a signature written in base64.
pub fn der(signature: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|e| format!("its signature is not base64: {e}"))
}

/// The payload cosign signs for the image `digest` of `repository` (`registry/repo`).
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": KIND,
        },
        "optional": null,
    }))
    .expect("a payload serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer;
    use p256::pkcs8::{EncodePublicKey, LineEnding};

    fn pair(seed: u8) -> (SigningKey, String) {
        let signing = SigningKey::from_slice(&[seed; 32]).unwrap();
        let pem = signing.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
        (signing, pem)
    }

    fn signed(signing: &SigningKey, payload: &[u8]) -> String {
        use base64::Engine;
        let signature: Signature = signing.sign(payload);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }

    #[test]
    fn a_signature_counts_for_its_digest_and_its_key_only() {
        let (alice, alice_pem) = pair(7);
        let (bob, bob_pem) = pair(9);
        let keys = [key(&alice_pem).unwrap()];
        let digest = format!("sha256:{}", "ab".repeat(32));
        let payload = payload("localhost:5000/web", &digest);
        assert_eq!(verify(&payload, &signed(&alice, &payload), &digest, &keys), Ok(0));
        let by_bob = verify(&payload, &signed(&bob, &payload), &digest, &keys).unwrap_err();
        assert_eq!(by_bob, "it was made with none of the keys");
        assert_eq!(
            verify(&payload, &signed(&alice, &payload), &digest, &[]).unwrap_err(),
            "it was made with a key, and the environment names none (`keys`)"
        );
        let other = format!("sha256:{}", "cd".repeat(32));
        let moved = verify(&payload, &signed(&alice, &payload), &other, &keys).unwrap_err();
        assert!(moved.starts_with("it signs sha256:abab"), "{moved}");
        let mut tampered = payload.clone();
        tampered.extend_from_slice(b" ");
        assert!(verify(&tampered, &signed(&alice, &payload), &digest, &keys).is_err());
        assert!(key(&bob_pem).is_ok());
        assert!(key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err());
        assert_eq!(signature_tag(&digest), format!("sha256-{}.sig", "ab".repeat(32)));
    }
}
