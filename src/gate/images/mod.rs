//! Signed images: before an environment runs a commit, every image its services name must be
//! signed, in the image's own registry, with cosign by one of the keys the environment names
//! (`images.requireSignature.keys`, read from the rollback point). The reference is resolved to
//! its manifest's digest (computed from the bytes), the signature manifest stored beside it is
//! read, and each signature's payload must name that digest and verify with a key. An image
//! that is unsigned, signed by another key or for another digest refuses the commit, naming the
//! image; a registry that cannot be reached holds the commit back until it can. Signatures are
//! read where cosign 2 stores them (`cosign`) and as cosign 3's Sigstore bundles among the
//! image's referrers (`bundle`); a bundle may instead be signed keylessly, by an identity the
//! environment names (`images.requireSignature.keyless`, checked against its Sigstore trusted
//! root: `keyless`). Registries that ask for a login get the one `docker login` keeps
//! (`logins`).

pub mod bundle;
pub mod cosign;
pub mod keyless;
pub mod logins;
pub mod reference;
mod registry;
mod signatures;

use std::collections::BTreeSet;

use p256::ecdsa::VerifyingKey;

use self::keyless::Keyless;
use self::logins::Logins;
use self::reference::Reference;
use self::registry::{Registry, Unread};
use self::signatures::Verdict;
use crate::notify::http::Client;
use crate::spec::model::gates::SignedImages;

/// How many images are checked at once.
const AT_ONCE: usize = 8;

/// Why the images do not pass.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// One is unsigned, or signed otherwise: the commit is refused.
    #[error("{0}")]
    Refused(String),
    /// A registry could not be read: the commit waits.
    #[error("{0}")]
    Unavailable(String),
}

/// One image that passed: its reference, the digest verified and who signed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The image as written.
    pub image: String,
    /// Its manifest's digest.
    pub digest: String,
    /// Who signed: the file of the key its signature verified with, or the keyless identity.
    pub signer: String,
}

/// Who may sign an environment's images: its keys, and its keyless identities.
pub struct Signers {
    keys: Vec<VerifyingKey>,
    files: Vec<String>,
    keyless: Option<Keyless>,
}

impl Signers {
    /// The signers `policy` names; why they cannot be checked otherwise.
    pub fn new(policy: &SignedImages) -> Result<Signers, String> {
        let keys = (policy.keys.iter())
            .map(|k| cosign::key(&k.pem).map_err(|e| format!("the key `{}`: {e}", k.file)))
            .collect::<Result<_, _>>()?;
        Ok(Signers {
            keys,
            files: policy.keys.iter().map(|k| k.file.clone()).collect(),
            keyless: policy.keyless.as_ref().map(Keyless::new).transpose()?,
        })
    }

    /// Who they are, in words (for a refusal).
    fn described(&self, policy: &SignedImages) -> String {
        let mut named = self.files.clone();
        if let Some(keyless) = &policy.keyless {
            named.push(format!(
                "one of the keyless identities (checked against `{}`)",
                keyless.file
            ));
        }
        named.join(" or ")
    }
}

/// Every image a Kubernetes object runs: each container's, init container's and ephemeral
/// container's `image`, wherever in the object they are (a Pod's spec, a Deployment's template,
/// a CronJob's job template).
pub fn in_object(object: &serde_json::Value, images: &mut Vec<String>) {
    match object {
        serde_json::Value::Object(fields) => {
            for (key, value) in fields {
                if matches!(key.as_str(), "containers" | "initContainers" | "ephemeralContainers")
                    && let Some(containers) = value.as_array()
                {
                    images.extend(containers.iter().filter_map(|c| c["image"].as_str()).map(str::to_owned));
                }
                in_object(value, images);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| in_object(item, images)),
        _ => {}
    }
}

/// Checks each of `images` (each once) against the signers `policy` names, logged in with
/// `logins` where a registry asks.
pub async fn check(images: &[&str], policy: &SignedImages, logins: &Logins) -> Result<Vec<Verified>, Refusal> {
    let signers = Signers::new(policy).map_err(Refusal::Refused)?;
    let client = Client::new(None).map_err(Refusal::Unavailable)?;
    let images: Vec<&str> = images.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
    let mut verified = Vec::new();
    let mut unavailable = None;
    for batch in images.chunks(AT_ONCE) {
        let checked =
            futures_util::future::join_all(batch.iter().map(|image| one(&client, image, &signers, policy, logins)))
                .await;
        for checked in checked {
            match checked {
                Ok(v) => verified.push(v),
                // A refusal settles it; an unreachable registry only if nothing refuses.
                Err(Refusal::Refused(why)) => return Err(Refusal::Refused(why)),
                Err(Refusal::Unavailable(why)) => unavailable = Some(why),
            }
        }
    }
    match unavailable {
        Some(why) => Err(Refusal::Unavailable(why)),
        None => {
            verified.sort_by(|a, b| a.image.cmp(&b.image));
            Ok(verified)
        }
    }
}

async fn one(
    client: &Client,
    image: &str,
    signers: &Signers,
    policy: &SignedImages,
    logins: &Logins,
) -> Result<Verified, Refusal> {
    let refused = |why: String| Refusal::Refused(format!("image `{image}`: {why}"));
    let read = |unread: Unread| match unread {
        Unread::Unavailable(why) => Refusal::Unavailable(format!("image `{image}` cannot be checked now: {why}")),
        Unread::Refused(why) => refused(why),
    };
    let reference = Reference::parse(image).map_err(refused)?;
    let mut registry = Registry::new(client, &reference, logins);
    let (digest, _) = registry
        .manifest(reference.manifest_ref())
        .await
        .map_err(read)?
        .ok_or_else(|| refused(format!("{reference} is not in its registry")))?;
    let reasons = match signatures::search(&mut registry, &digest, signers)
        .await
        .map_err(read)?
    {
        Verdict::Signed(signer) => {
            return Ok(Verified {
                image: image.to_owned(),
                digest,
                signer,
            });
        }
        Verdict::Unsigned(reasons) => reasons,
    };
    if reasons.is_empty() {
        return Err(refused(format!(
            "{digest} is not signed: its registry holds no cosign signature ({}) and no Sigstore bundle refers to it",
            cosign::signature_tag(&digest)
        )));
    }
    Err(refused(format!(
        "{digest} is not signed by {}; what its registry holds: {reasons}",
        signers.described(policy)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// What a registry double answers for a path (with its query): status, content type, the
    /// `Link` header, body.
    type Answers = HashMap<String, (u16, &'static str, Option<String>, Vec<u8>)>;

    /// A registry that answers `answers` and 404 to anything else, on a loopback port.
    async fn registry(answers: Answers) -> std::net::SocketAddr {
        use axum::http::{StatusCode, Uri, header};
        use axum::response::IntoResponse;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answers = std::sync::Arc::new(answers);
        let app = axum::Router::new().fallback(move |uri: Uri| {
            let answers = answers.clone();
            async move {
                let asked = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
                let Some((status, kind, link, body)) = answers.get(asked).cloned() else {
                    return (StatusCode::NOT_FOUND, Vec::new()).into_response();
                };
                let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, kind.parse().unwrap());
                if let Some(link) = link {
                    response.headers_mut().insert(header::LINK, link.parse().unwrap());
                }
                response
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

    /// Adds to `answers` the artifact holding `bundle` (its manifest and blob); its manifest's
    /// digest.
    fn artifact(answers: &mut Answers, bundle: &[u8]) -> String {
        let blob = registry::sha256(bundle);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": MANIFEST, "artifactType": BUNDLE,
            "layers": [{"mediaType": BUNDLE, "digest": blob, "size": bundle.len()}],
        }))
        .unwrap();
        let digest = registry::sha256(&manifest);
        answers.insert(format!("/v2/web/blobs/{blob}"), (200, BUNDLE, None, bundle.to_vec()));
        answers.insert(format!("/v2/web/manifests/{digest}"), (200, MANIFEST, None, manifest));
        digest
    }

    /// An index listing `referrers` (digest, predicate annotated), as the referrers API answers.
    fn index(referrers: &[(&str, Option<&str>)]) -> Vec<u8> {
        let manifests: Vec<serde_json::Value> = referrers
            .iter()
            .map(|(digest, predicate)| {
                let mut entry =
                    serde_json::json!({"mediaType": MANIFEST, "digest": digest, "size": 1, "artifactType": BUNDLE});
                if let Some(predicate) = predicate {
                    entry["annotations"] = serde_json::json!({ (bundle::PREDICATE_ANNOTATION): predicate });
                }
                entry
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}))
            .unwrap()
    }

    /// The referrers API as registries of OCI distribution 1.1 serve it, which the registry
    /// packaged here (2.8) does not: an index over two pages (`Link`), the attestations it
    /// annotates passed over unread, the signatures it annotates read first; and a registry
    /// that answers the API with 400 read through the `sha256-<hex>` tag instead.
    #[tokio::test]
    async fn signatures_are_found_through_the_referrers_api() {
        use bundle::tests::{bundle, signing, statement};
        use p256::pkcs8::{EncodePublicKey, LineEnding};
        let (ours, theirs) = (signing(7), signing(9));
        let keys = SignedImages {
            keys: vec![crate::spec::model::gates::ImageKey {
                file: "keys/cosign.pub".to_owned(),
                pem: ours.verifying_key().to_public_key_pem(LineEnding::LF).unwrap(),
            }],
            keyless: None,
        };
        let image = br#"{"schemaVersion": 2, "layers": []}"#.to_vec();
        let digest = registry::sha256(&image);
        let hint = serde_json::json!({"publicKey": {"hint": ""}});
        let mut answers = Answers::new();
        answers.insert("/v2/web/manifests/1".to_owned(), (200, MANIFEST, None, image));
        let by_them = artifact(&mut answers, &bundle(&statement("web", &digest), &theirs, hint.clone()));
        let by_us = artifact(&mut answers, &bundle(&statement("web", &digest), &ours, hint));
        let provenance = "https://slsa.dev/provenance/v1";
        let attestation = format!("sha256:{}", "0".repeat(64));
        let api = format!("/v2/web/referrers/{digest}");
        let next = format!("{api}?n=2&last=x");
        let first_page = index(&[(&attestation, Some(provenance)), (&by_them, None)]);
        let second_page = index(&[(&by_us, Some(bundle::SIGN_PREDICATE))]);
        let mut paged = answers.clone();
        paged.insert(
            api.clone(),
            (200, INDEX, Some(format!("<{next}>; rel=\"next\"")), first_page.clone()),
        );
        paged.insert(next.clone(), (200, INDEX, None, second_page));
        // Read first, the other key's bundle would hold the image back: the one annotated as a
        // signature is read before it.
        let unavailable = (503, "text/plain", None, Vec::new());
        paged.insert(format!("/v2/web/manifests/{by_them}"), unavailable);
        let addr = registry(paged).await;
        let checked = check(&[format!("{addr}/web:1").as_str()], &keys, &Logins::default()).await;
        assert_eq!(checked.map(|v| v[0].digest.clone()), Ok(digest.clone()));

        // A later page that is not an index ends the listing with the pages before it.
        let mut cut_short = answers.clone();
        let signed_first = index(&[(&by_us, None)]);
        cut_short.insert(
            api.clone(),
            (200, INDEX, Some(format!("<{next}>; rel=\"next\"")), signed_first),
        );
        cut_short.insert(next.clone(), (200, "text/html", None, b"<html>".to_vec()));
        let addr = registry(cut_short).await;
        assert!(
            check(&[format!("{addr}/web:1").as_str()], &keys, &Logins::default())
                .await
                .is_ok()
        );

        // One page only: what each referrer is, in words; the attestation is not read.
        let mut one_page = answers.clone();
        one_page.insert(api.clone(), (200, INDEX, None, first_page.clone()));
        let addr = registry(one_page).await;
        let Err(Refusal::Refused(why)) = check(&[format!("{addr}/web:1").as_str()], &keys, &Logins::default()).await
        else {
            panic!("signed with another key, it passed");
        };
        assert_eq!(
            why,
            format!(
                "image `{addr}/web:1`: {digest} is not signed by keys/cosign.pub; what its registry holds: \
                 referrer {attestation}: an attestation (`{provenance}`), not a signature; not read; \
                 referrer {by_them}: it was made with none of the keys"
            )
        );

        // No referrers API (400): the tag the signer wrote lists them.
        let mut tagged = answers;
        tagged.insert(api, (400, "application/json", None, b"{}".to_vec()));
        let tag = format!("/v2/web/manifests/{}", digest.replacen(':', "-", 1));
        tagged.insert(tag, (200, INDEX, None, index(&[(&by_us, None)])));
        let addr = registry(tagged).await;
        assert!(
            check(&[format!("{addr}/web:1").as_str()], &keys, &Logins::default())
                .await
                .is_ok()
        );
    }

    #[test]
    fn every_container_of_an_object_is_found() {
        let cron_job = serde_json::json!({
            "kind": "CronJob",
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {
                "initContainers": [{"name": "wait", "image": "busybox:1.36"}],
                "containers": [{"name": "report", "image": "ghcr.io/acme/report:2"}, {"name": "no-image"}],
            }}}}},
        });
        let mut images = Vec::new();
        in_object(&cron_job, &mut images);
        assert_eq!(images, ["busybox:1.36", "ghcr.io/acme/report:2"]);
    }
}
