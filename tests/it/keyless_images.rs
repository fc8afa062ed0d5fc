//! Keyless image signatures, end to end against a real OCI registry (Debian's distribution
//! registry, as in `image_signatures`): a private Sigstore made in the test — a certificate
//! authority (a P-384 root and intermediate, as Fulcio's, made by OpenSSL) that certifies a
//! short-lived P-256 key to a CI workflow's identity, and a transparency log that signs its
//! entries' timestamps and checkpoints — and its trusted root as `cosign trusted-root create`
//! writes one. The bundle is what cosign 3 attaches after `cosign sign` keylessly: the DSSE
//! envelope of the image's statement, the certificate, the log entry with its promise and its
//! inclusion proof. It counts for the identity the environment names and for nothing else.

use std::process::Command;

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
use plumb::gate::images::logins::Logins;
use plumb::gate::images::{Refusal, bundle, check, cosign};
use plumb::spec::model::gates::{KeylessSigners, SignedImages, SignerIdentity};
use sha2::{Digest, Sha256};

use crate::image_signatures::{Registry, attach, digest_of, push, store};

/// The issuer GitHub Actions' tokens name.
const ACTIONS: &str = "https://token.actions.githubusercontent.com";
/// The identity of the release workflow, at a tag.
const RELEASE: &str = "https://github.com/acme/web/.github/workflows/release.yml@refs/tags/v1.4.0";

/// A certificate authority and the certificate it issued to a workflow, with its key.
struct Authority {
    _dir: tempfile::TempDir,
    /// The root's and the intermediate's certificates (DER).
    chain: Vec<Vec<u8>>,
    /// The workflow's certificate (DER) and PEM.
    leaf: Vec<u8>,
    leaf_pem: String,
    /// The same certificate as issued before it was logged (DER and PEM), with no timestamp.
    unlogged: (Vec<u8>, String),
    /// The key it certifies.
    key: SigningKey,
}

/// Makes, with OpenSSL, a root and an intermediate (P-384, the intermediate for code signing
/// only) and a leaf for code signing naming `subject` (a URI) and Fulcio's issuer extension
/// `issuer`, logged in the certificate transparency log [`CT`] (its signed timestamp embedded,
/// as Fulcio embeds it).
fn authority(subject: &str, issuer: &str) -> Authority {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        r#"set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -keyout root.key -out root.pem -days 2 \
  -subj /O=plumb-test/CN=sigstore 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -keyout inter.key -out inter.csr \
  -subj /O=plumb-test/CN=sigstore-intermediate 2>/dev/null
printf '%s\n' basicConstraints=critical,CA:TRUE,pathlen:0 keyUsage=critical,keyCertSign,cRLSign \
  extendedKeyUsage=codeSigning > inter.ext
openssl x509 -req -in inter.csr -CA root.pem -CAkey root.key -CAcreateserial -days 2 -extfile inter.ext \
  -out inter.pem 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out leaf.key 2>/dev/null
openssl req -new -key leaf.key -out leaf.csr -subj /O=plumb-test 2>/dev/null
printf '%s\n' keyUsage=critical,digitalSignature extendedKeyUsage=codeSigning \
  'subjectAltName=critical,URI:{subject}' '1.3.6.1.4.1.57264.1.8=ASN1:UTF8String:{issuer}' > leaf.ext
openssl x509 -req -sha384 -in leaf.csr -CA inter.pem -CAkey inter.key -CAcreateserial -days 1 -extfile leaf.ext \
  -out leaf.pem 2>/dev/null
for c in root inter leaf; do openssl x509 -in $c.pem -outform der -out $c.der; done
"#
    );
    let made = Command::new("sh")
        .args(["-c", &script])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    let key = SigningKey::from_pkcs8_pem(&String::from_utf8(read("leaf.key")).unwrap()).unwrap();
    let unlogged = read("leaf.der");
    let intermediate = String::from_utf8(read("inter.key")).unwrap();
    let leaf = with_timestamp(&unlogged, &read("inter.der"), &intermediate, &Log::new(CT));
    let pem = |der: &[u8]| {
        use x509_cert::der::{Decode, EncodePem};
        let certificate = x509_cert::Certificate::from_der(der).unwrap();
        certificate.to_pem(x509_cert::der::pem::LineEnding::LF).unwrap()
    };
    Authority {
        chain: vec![read("root.der"), read("inter.der")],
        leaf_pem: pem(&leaf),
        leaf,
        unlogged: (unlogged.clone(), pem(&unlogged)),
        key,
        _dir: dir,
    }
}

/// The seed of the certificate transparency log's key.
const CT: u8 = 8;

/// `leaf` (DER) issued again by the intermediate (`intermediate`, DER, whose key is
/// `intermediate_key`, PKCS #8 PEM) with the signed timestamp `ct` made of it embedded: what
/// the log signs is the certificate before the timestamp is added, issued under the
/// intermediate's key (RFC 6962's precertificate).
fn with_timestamp(leaf: &[u8], intermediate: &[u8], intermediate_key: &str, ct: &Log) -> Vec<u8> {
    use p384::ecdsa::signature::Signer as _;
    use x509_cert::der::asn1::{BitString, OctetString};
    use x509_cert::der::{Decode, Encode};
    let mut certificate = x509_cert::Certificate::from_der(leaf).unwrap();
    let tbs = certificate.tbs_certificate.to_der().unwrap();
    let issuer = x509_cert::Certificate::from_der(intermediate).unwrap();
    let issuer_key = issuer.tbs_certificate.subject_public_key_info.to_der().unwrap();
    let timestamp = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
    let mut signed = vec![0, 0];
    signed.extend_from_slice(&timestamp.to_be_bytes());
    signed.extend_from_slice(&[0, 1]);
    signed.extend_from_slice(&Sha256::digest(&issuer_key));
    signed.extend_from_slice(&u32::try_from(tbs.len()).unwrap().to_be_bytes()[1..]);
    signed.extend_from_slice(&tbs);
    signed.extend_from_slice(&[0, 0]);
    let signature: Signature = ct.key.sign(&signed);
    let signature = signature.to_der();
    let mut sct = vec![0];
    sct.extend_from_slice(&ct.id);
    sct.extend_from_slice(&timestamp.to_be_bytes());
    sct.extend_from_slice(&[0, 0, 4, 3]);
    sct.extend_from_slice(&u16::try_from(signature.as_bytes().len()).unwrap().to_be_bytes());
    sct.extend_from_slice(signature.as_bytes());
    let mut list = (u16::try_from(sct.len() + 2).unwrap()).to_be_bytes().to_vec();
    list.extend_from_slice(&u16::try_from(sct.len()).unwrap().to_be_bytes());
    list.extend_from_slice(&sct);
    let value = OctetString::new(list).unwrap().to_der().unwrap();
    let extensions = certificate.tbs_certificate.extensions.get_or_insert_with(Vec::new);
    extensions.push(x509_cert::ext::Extension {
        extn_id: x509_cert::der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.11129.2.4.2"),
        critical: false,
        extn_value: OctetString::new(value).unwrap(),
    });
    let key = p384::ecdsa::SigningKey::from_pkcs8_pem(intermediate_key).unwrap();
    let issued: p384::ecdsa::Signature = key.sign(&certificate.tbs_certificate.to_der().unwrap());
    certificate.signature = BitString::from_bytes(issued.to_der().as_bytes()).unwrap();
    certificate.to_der().unwrap()
}

/// A transparency log: its key, and its id (the SHA-256 of the key's DER).
struct Log {
    key: SigningKey,
    id: Vec<u8>,
}

impl Log {
    fn new(seed: u8) -> Log {
        let key = SigningKey::from_slice(&[seed; 32]).unwrap();
        let id = Sha256::digest(key.verifying_key().to_public_key_der().unwrap().as_bytes()).to_vec();
        Log { key, id }
    }

    /// The log as a trusted root describes it, served at `url`.
    fn described(&self, url: &str) -> serde_json::Value {
        let base64 = base64::engine::general_purpose::STANDARD;
        let key = self.key.verifying_key().to_public_key_der().unwrap();
        serde_json::json!({
            "baseUrl": url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": base64.encode(key.as_bytes()),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": "2020-01-01T00:00:00Z"},
            },
            "logId": {"keyId": base64.encode(&self.id)},
        })
    }

    /// The log's signature of `message`, base64 of DER.
    fn sign(&self, message: &[u8]) -> String {
        let signature: Signature = self.key.sign(message);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }
}

/// How a bundle's log entry is made.
#[derive(Clone, Copy, PartialEq)]
enum Entry {
    /// As the log makes it: its promise, and its inclusion proof in a tree of three.
    Whole,
    /// With no promise (no signed entry timestamp).
    Unpromised,
    /// Recording another signature than the envelope's.
    OfAnotherSignature,
    /// A `hashedrekord` of the envelope's encoding, as some signers log an envelope.
    Hashed,
    /// With no inclusion proof (which a bundle of version 0.3 carries).
    Unproved,
    /// Signed with the certificate as issued before it was logged in the certificate
    /// transparency log (no timestamp).
    Unlogged,
}

/// The bundle cosign 3 makes when `authority`'s leaf signs the image `digest` keylessly and
/// `log` records it.
fn keyless_bundle(authority: &Authority, log: &Log, digest: &str, entry: Entry) -> Vec<u8> {
    let base64 = base64::engine::general_purpose::STANDARD;
    let statement = serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "web", "digest": {"sha256": digest.trim_start_matches("sha256:")}}],
        "predicateType": bundle::SIGN_PREDICATE,
        "predicate": {},
    }))
    .unwrap();
    let signature: Signature = authority.key.sign(&bundle::pae(bundle::IN_TOTO, &statement));
    let signature = signature.to_der().as_bytes().to_vec();
    let recorded = if entry == Entry::OfAnotherSignature {
        let other: Signature = authority.key.sign(b"something else");
        other.to_der().as_bytes().to_vec()
    } else {
        signature.clone()
    };
    let (certificate, certificate_pem) = match entry {
        Entry::Unlogged => (&authority.unlogged.0, &authority.unlogged.1),
        _ => (&authority.leaf, &authority.leaf_pem),
    };
    // The entry's body, as Rekor's `dsse` type records an envelope (or its `hashedrekord` type
    // what was signed).
    let body = if entry == Entry::Hashed {
        let encoded = bundle::pae(bundle::IN_TOTO, &statement);
        serde_json::json!({
            "apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(&encoded))}},
                "signature": {"content": base64.encode(&recorded), "publicKey": {"content": base64.encode(certificate_pem)}},
            },
        })
    } else {
        serde_json::json!({
            "apiVersion": "0.0.1", "kind": "dsse",
            "spec": {
                "envelopeHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(&statement))},
                "payloadHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(&statement))},
                "signatures": [{"signature": base64.encode(&recorded), "verifier": base64.encode(certificate_pem)}],
            },
        })
    };
    let body = serde_json::to_vec(&body).unwrap();
    let (logged, promised) = promise(log, &body);
    // A tree of three leaves, this entry the last: its path is the hash of the first two.
    let leaf = |bytes: &[u8]| Sha256::new().chain_update([0]).chain_update(bytes).finalize();
    let node = |l: &[u8], r: &[u8]| {
        Sha256::new()
            .chain_update([1])
            .chain_update(l)
            .chain_update(r)
            .finalize()
    };
    let first_two = node(&leaf(b"entry 0"), &leaf(b"entry 1"));
    let root = node(&first_two, &leaf(&body));
    let note = format!("rekor.plumb.test - 1\n3\n{}\n", base64.encode(root));
    let mut note_signature = log.id[..4].to_vec();
    note_signature.extend(base64.decode(log.sign(note.as_bytes())).unwrap());
    let mut tlog_entry = serde_json::json!({
        "logIndex": "2",
        "logId": {"keyId": base64.encode(&log.id)},
        "kindVersion": {"kind": "dsse", "version": "0.0.1"},
        "integratedTime": logged.to_string(),
        "inclusionPromise": {"signedEntryTimestamp": promised},
        "inclusionProof": {
            "logIndex": "2", "rootHash": base64.encode(root), "treeSize": "3",
            "hashes": [base64.encode(first_two)],
            "checkpoint": {"envelope": format!("{note}\n\u{2014} rekor.plumb.test {}\n", base64.encode(note_signature))},
        },
        "canonicalizedBody": base64.encode(&body),
    });
    match entry {
        Entry::Unpromised => tlog_entry.as_object_mut().unwrap().remove("inclusionPromise"),
        Entry::Unproved => tlog_entry.as_object_mut().unwrap().remove("inclusionProof"),
        _ => None,
    };
    serde_json::to_vec(&serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {
            "certificate": {"rawBytes": base64.encode(certificate)},
            "tlogEntries": [tlog_entry],
        },
        "dsseEnvelope": {
            "payload": base64.encode(&statement),
            "payloadType": bundle::IN_TOTO,
            "signatures": [{"sig": base64.encode(&signature), "keyid": ""}],
        },
    }))
    .unwrap()
}

/// The log's promise to include the entry `body` at index 2, now: the time, and its signed
/// entry timestamp.
fn promise(log: &Log, body: &[u8]) -> (i64, String) {
    let logged = chrono::Utc::now().timestamp();
    let promised = format!(
        r#"{{"body":"{}","integratedTime":{logged},"logID":"{}","logIndex":2}}"#,
        base64::engine::general_purpose::STANDARD.encode(body),
        hex::encode(&log.id)
    );
    (logged, log.sign(promised.as_bytes()))
}

/// The trusted root of `authority`, `log` and the certificate transparency log [`CT`], as
/// `cosign trusted-root create` writes it.
fn trusted_root(authority: &Authority, log: &Log) -> String {
    let base64 = base64::engine::general_purpose::STANDARD;
    serde_json::to_string_pretty(&serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [log.described("https://rekor.plumb.test")],
        "certificateAuthorities": [{
            "subject": {"organization": "plumb-test", "commonName": "sigstore"},
            "uri": "https://fulcio.plumb.test",
            "certChain": {"certificates": authority.chain.iter().map(|c| serde_json::json!({"rawBytes": base64.encode(c)})).collect::<Vec<_>>()},
            "validFor": {"start": "2020-01-01T00:00:00Z"},
        }],
        "ctlogs": [Log::new(CT).described("https://ctfe.plumb.test")],
        "timestampAuthorities": [],
    }))
    .unwrap()
}

/// The environment's rule: signed keylessly by `identities`, under the trusted root `root`.
fn keyless(root: String, identities: Vec<SignerIdentity>) -> SignedImages {
    SignedImages {
        keys: Vec::new(),
        keyless: Some(KeylessSigners {
            file: "sigstore/trusted_root.json".to_owned(),
            root,
            identities,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_signature_counts_for_the_identities_the_environment_names() {
    let registry = Registry::start();
    let fulcio = authority(RELEASE, ACTIONS);
    let rekor = Log::new(5);
    let root = trusted_root(&fulcio, &rekor);
    for tag in ["signed", "hashed", "others"] {
        push(&registry, "web", tag).await;
    }
    let signed = digest_of(&registry, "web", "signed").await;
    let hashed = digest_of(&registry, "web", "hashed").await;
    let others = digest_of(&registry, "web", "others").await;
    let predicate = Some(bundle::SIGN_PREDICATE);
    let made = keyless_bundle(&fulcio, &rekor, &signed, Entry::Whole);
    attach(&registry, "web", &signed, &made, predicate).await;
    let anonymous = Logins::default();
    let image = registry.image("web:signed");

    // Any release tag of the workflow: a pattern over the whole subject.
    let releases = SignerIdentity {
        issuer: ACTIONS.to_owned(),
        subject: None,
        subject_pattern: Some(r"https://github\.com/acme/web/\.github/workflows/release\.yml@refs/tags/v.+".to_owned()),
    };
    let verified = check(
        &[image.as_str()],
        &keyless(root.clone(), vec![releases.clone()]),
        &anonymous,
    )
    .await
    .unwrap();
    assert_eq!(verified[0].digest, signed);
    assert_eq!(verified[0].signer, format!("{RELEASE} (issued by {ACTIONS})"));
    let made = keyless_bundle(&fulcio, &rekor, &hashed, Entry::Hashed);
    attach(&registry, "web", &hashed, &made, predicate).await;
    let hashed_image = registry.image("web:hashed");
    let rule = keyless(root.clone(), vec![releases.clone()]);
    assert!(check(&[hashed_image.as_str()], &rule, &anonymous).await.is_ok());

    // The same workflow from another issuer, or another workflow, is not who signed.
    for (issuer, subject) in [
        ("https://gitlab.com", RELEASE),
        (
            ACTIONS,
            "https://github.com/acme/web/.github/workflows/release.yml@refs/heads/main",
        ),
    ] {
        let other = SignerIdentity {
            issuer: issuer.to_owned(),
            subject: Some(subject.to_owned()),
            subject_pattern: None,
        };
        let Err(Refusal::Refused(why)) =
            check(&[image.as_str()], &keyless(root.clone(), vec![other]), &anonymous).await
        else {
            panic!("a signature by another identity passed");
        };
        assert!(
            why.contains(&format!(
                ": it was signed by {RELEASE} (issued by {ACTIONS}), none of the identities"
            )),
            "{why}"
        );
    }

    // What does not count, each named: an entry with no promise; an entry of another
    // signature; a log the root does not hold; a certificate another authority issued.
    let elsewhere = authority(RELEASE, ACTIONS);
    for made in [
        keyless_bundle(&fulcio, &rekor, &others, Entry::Unpromised),
        keyless_bundle(&fulcio, &rekor, &others, Entry::OfAnotherSignature),
        keyless_bundle(&fulcio, &Log::new(6), &others, Entry::Whole),
        keyless_bundle(&elsewhere, &rekor, &others, Entry::Whole),
        keyless_bundle(&fulcio, &rekor, &others, Entry::Unlogged),
        keyless_bundle(&fulcio, &rekor, &others, Entry::Unproved),
    ] {
        attach(&registry, "web", &others, &made, predicate).await;
    }
    let others_image = registry.image("web:others");
    let Err(Refusal::Refused(why)) = check(
        &[others_image.as_str()],
        &keyless(root.clone(), vec![releases]),
        &anonymous,
    )
    .await
    else {
        panic!("an image signed otherwise passed");
    };
    assert!(
        why.starts_with(&format!(
            "image `{others_image}`: {others} is not signed by one of the keyless identities (checked against `sigstore/trusted_root.json`); what its registry holds: "
        )),
        "{why}"
    );
    for said in [
        ": its log entry carries no signed entry timestamp (an inclusion promise)",
        ": its log entry records another signature or certificate",
        ", a log the trusted root does not hold",
        ": its certificate was not issued by the trusted root's authorities at ",
        ": its certificate carries no certificate transparency timestamp",
        ": its log entry carries no inclusion proof, which a bundle of its version must",
    ] {
        assert!(why.contains(said), "{said}: {why}");
    }
}

/// cosign 2 signs keylessly into the `sha256-<hex>.sig` manifest: the simple-signing payload,
/// its signature, and in the layer's annotations the certificate and the log's promise for a
/// `hashedrekord` entry of the payload's hash. It counts for the identity, as a bundle does; a
/// promise of another log, or none, does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_signature_stored_the_cosign_2_way_counts_too() {
    let base64 = base64::engine::general_purpose::STANDARD;
    let registry = Registry::start();
    let fulcio = authority(RELEASE, ACTIONS);
    let rekor = Log::new(5);
    let anonymous = Logins::default();
    let identity = SignerIdentity {
        issuer: ACTIONS.to_owned(),
        subject: Some(RELEASE.to_owned()),
        subject_pattern: None,
    };
    let rule = keyless(trusted_root(&fulcio, &rekor), vec![identity]);
    for (tag, log, promised) in [
        ("signed", &rekor, true),
        ("elsewhere", &Log::new(6), true),
        ("unlogged", &rekor, false),
    ] {
        push(&registry, "web", tag).await;
        let digest = digest_of(&registry, "web", tag).await;
        let payload = cosign::payload(&registry.image("web"), &digest);
        let signature: Signature = fulcio.key.sign(&payload);
        let signature = base64.encode(signature.to_der().as_bytes());
        let body = serde_json::to_vec(&serde_json::json!({
            "apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(&payload))}},
                "signature": {"content": signature, "publicKey": {"content": base64.encode(&fulcio.leaf_pem)}},
            },
        }))
        .unwrap();
        let (logged, set) = promise(log, &body);
        let entry = serde_json::json!({
            "SignedEntryTimestamp": set,
            "Payload": {"body": base64.encode(&body), "integratedTime": logged, "logIndex": 2, "logID": hex::encode(&log.id)},
        });
        let mut annotations = serde_json::json!({
            (cosign::SIGNATURE): signature,
            (cosign::CERTIFICATE): fulcio.leaf_pem,
        });
        if promised {
            annotations[cosign::LOG_ENTRY] = entry.to_string().into();
        }
        let layer = (payload.as_slice(), cosign::PAYLOAD, Some(annotations));
        store(&registry, "web", &cosign::signature_tag(&digest), layer).await;
    }
    let verified = check(&[registry.image("web:signed").as_str()], &rule, &anonymous)
        .await
        .unwrap();
    assert_eq!(verified[0].signer, format!("{RELEASE} (issued by {ACTIONS})"));
    for (tag, said) in [
        ("elsewhere", ", a log the trusted root does not hold"),
        ("unlogged", ": it carries no transparency-log entry"),
    ] {
        let Err(Refusal::Refused(why)) =
            check(&[registry.image(&format!("web:{tag}")).as_str()], &rule, &anonymous).await
        else {
            panic!("{tag}: passed");
        };
        assert!(why.contains(said), "{tag}: {why}");
    }
    // An environment that names keys only says what the signature is.
    let keys_only = SignedImages {
        keys: Vec::new(),
        keyless: None,
    };
    let Err(Refusal::Refused(why)) = check(&[registry.image("web:signed").as_str()], &keys_only, &anonymous).await
    else {
        panic!("a keyless signature passed with no identity named");
    };
    assert!(
        why.contains("it is a keyless signature (a Fulcio certificate), and the environment names no keyless identity"),
        "{why}"
    );

    // A signature by a key that comes with a certificate (`cosign sign --key --cert`) counts for
    // the key.
    let (key, pem) = (
        Log::new(9).key,
        Log::new(9)
            .key
            .verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap(),
    );
    push(&registry, "web", "keyed").await;
    let digest = digest_of(&registry, "web", "keyed").await;
    let payload = cosign::payload(&registry.image("web"), &digest);
    let signature: Signature = key.sign(&payload);
    let annotations = serde_json::json!({
        (cosign::SIGNATURE): base64.encode(signature.to_der().as_bytes()),
        (cosign::CERTIFICATE): fulcio.leaf_pem,
    });
    let layer = (payload.as_slice(), cosign::PAYLOAD, Some(annotations));
    store(&registry, "web", &cosign::signature_tag(&digest), layer).await;
    let keyed = SignedImages {
        keys: vec![plumb::spec::model::gates::ImageKey {
            file: "keys/cosign.pub".to_owned(),
            pem,
        }],
        keyless: None,
    };
    let verified = check(&[registry.image("web:keyed").as_str()], &keyed, &anonymous)
        .await
        .unwrap();
    assert_eq!(verified[0].signer, "keys/cosign.pub");
}

/// `images.requireSignature.keyless` is checked at validation, each problem at its line: a
/// trusted root missing or not one, an identity naming neither `subject` nor `subjectPattern`
/// or both, a pattern that is not a regular expression, and a rule naming no signer at all.
#[test]
fn keyless_signers_are_checked_where_they_are_written() {
    use crate::harness::{Web, trusted};
    let alice = crate::keys::TestKey::new("alice");
    let (upstream, _) = trusted(&alice);
    Web::new(crate::reconcile::free_port(), "r1", "recreate: {}").write(&upstream);
    let validate = |environment: &str| {
        upstream.write("environments/dev.yaml", environment);
        let run = crate::harness::plumb(&["validate", "--repo", upstream.path().to_str().unwrap()]);
        (run.code, format!("{}{}", run.stdout, run.stderr))
    };
    let head =
        "apiVersion: plumb/v1\nkind: Environment\nname: dev\ntarget:\n  compose: {}\nimages:\n  requireSignature:\n";
    let identities = "      identities:\n        - issuer: https://token.actions.githubusercontent.com\n          subjectPattern: 'https://github\\.com/acme/(web'\n        - issuer: https://accounts.google.com\n";
    let (code, said) = validate(&format!(
        "{head}    keyless:\n      trustedRoot: sigstore/trusted_root.json\n{identities}"
    ));
    assert_eq!(code, 1, "{said}");
    for expected in [
        "environments/dev.yaml:9:20: $.images.requireSignature.keyless.trustedRoot: trusted root `sigstore/trusted_root.json` is not in the repository",
        "environments/dev.yaml:12:27: $.images.requireSignature.keyless.identities[0].subjectPattern: `https://github\\.com/acme/(web` is not a regular expression",
        "environments/dev.yaml:13:11: $.images.requireSignature.keyless.identities[1]: names neither `subject` nor `subjectPattern`: name one",
    ] {
        assert!(said.contains(expected), "{expected}\n{said}");
    }
    upstream.write(
        "sigstore/trusted_root.json",
        r#"{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}"#,
    );
    let (_, said) = validate(&format!(
        "{head}    keyless:\n      trustedRoot: sigstore/trusted_root.json\n{identities}"
    ));
    assert!(
        said.contains("$.images.requireSignature.keyless.trustedRoot: `sigstore/trusted_root.json` is not a Sigstore trusted root: it names no certificate authority (certificateAuthorities)"),
        "{said}"
    );
    let (_, said) = validate(&format!(
        "{head}    keyless:\n      trustedRoot: sigstore/trusted_root.json\n      identities: []\n"
    ));
    assert!(
        said.contains("$.images.requireSignature.keyless.identities: [] has less than 1 item"),
        "{said}"
    );
    let (code, said) = validate(&head.replace("requireSignature:\n", "requireSignature: {}\n"));
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains(
            "$.images.requireSignature: names no key (`keys`) and no keyless identity (`keyless`): no image could run"
        ),
        "{said}"
    );

    // A real root and identities as written: nothing to say of them (the service, written for
    // the local target, names no image: that alone is said).
    let fulcio = authority(RELEASE, ACTIONS);
    upstream.write("sigstore/trusted_root.json", &trusted_root(&fulcio, &Log::new(5)));
    let (_, said) = validate(&format!(
        "{head}    keyless:\n      trustedRoot: sigstore/trusted_root.json\n      identities:\n        - issuer: {ACTIONS}\n          subject: {RELEASE}\n"
    ));
    assert!(
        said.contains("invalid: 1 problem") && !said.contains("$.images"),
        "{said}"
    );
}
