//! Signed images: before an environment runs a commit, every image its services name must be
//! signed, in the image's own registry, with cosign by one of the keys the environment names
//! (`images.requireSignature.keys`, read from the rollback point). The reference is resolved to
//! its manifest's digest (computed from the bytes), the signature manifest stored beside it is
//! read, and each signature's payload must name that digest and verify with a key. An image
//! that is unsigned, signed by another key or for another digest refuses the commit, naming the
//! image; a registry that cannot be reached holds the commit back until it can. Signatures are
//! read where cosign 2 stores them (`cosign`) and as cosign 3's Sigstore bundles among the
//! image's referrers (`bundle`). Registries that ask for a login get the one `docker login`
//! keeps (`logins`).

pub mod bundle;
pub mod cosign;
pub mod logins;
pub mod reference;
mod registry;

use std::collections::BTreeSet;

use p256::ecdsa::VerifyingKey;

use self::logins::Logins;
use self::reference::Reference;
use self::registry::{Registry, Unread};
use crate::notify::http::Client;
use crate::spec::model::gates::ImageKey;

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

/// One image that passed: its reference, the digest verified and the key file that signed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The image as written.
    pub image: String,
    /// Its manifest's digest.
    pub digest: String,
    /// The file of the key its signature verified with.
    pub key: String,
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

/// Checks each of `images` (each once) against `keys`, logged in with `logins` where a
/// registry asks.
pub async fn check(images: &[&str], keys: &[ImageKey], logins: &Logins) -> Result<Vec<Verified>, Refusal> {
    let verifying: Vec<VerifyingKey> = keys
        .iter()
        .map(|k| cosign::key(&k.pem).map_err(|e| Refusal::Refused(format!("the key `{}`: {e}", k.file))))
        .collect::<Result<_, _>>()?;
    let client = Client::new(None).map_err(Refusal::Unavailable)?;
    let images: Vec<&str> = images.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
    let mut verified = Vec::new();
    let mut unavailable = None;
    for batch in images.chunks(AT_ONCE) {
        let checked =
            futures_util::future::join_all(batch.iter().map(|image| one(&client, image, &verifying, keys, logins)))
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
    verifying: &[VerifyingKey],
    keys: &[ImageKey],
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
    let mut found = Found::default();
    signed_by_tag(&mut registry, &digest, verifying, &mut found)
        .await
        .map_err(read)?;
    if found.key.is_none() {
        signed_by_bundle(&mut registry, &digest, verifying, &mut found)
            .await
            .map_err(read)?;
    }
    if let Some(i) = found.key {
        return Ok(Verified {
            image: image.to_owned(),
            digest,
            key: keys[i].file.clone(),
        });
    }
    if found.why_not.is_empty() {
        return Err(refused(format!(
            "{digest} is not signed: its registry holds no cosign signature ({}) and no Sigstore bundle refers to it",
            cosign::signature_tag(&digest)
        )));
    }
    let files: Vec<&str> = keys.iter().map(|k| k.file.as_str()).collect();
    Err(refused(format!(
        "{digest} is not signed with {}: each signature found: {}",
        files.join(" or "),
        found.why_not.join("; ")
    )))
}

/// The most Sigstore bundles read for one image.
const BUNDLES: usize = 16;

/// What the signatures of one image came to.
#[derive(Default)]
struct Found {
    /// The key one of them verified with.
    key: Option<usize>,
    /// Why each one read did not verify: none when there was none.
    why_not: Vec<String>,
}

/// cosign 2's signatures of `digest`: the layers of the manifest tagged `sha256-<hex>.sig`.
async fn signed_by_tag(
    registry: &mut Registry<'_>,
    digest: &str,
    verifying: &[VerifyingKey],
    found: &mut Found,
) -> Result<(), Unread> {
    let tag = cosign::signature_tag(digest);
    let Some((_, manifest)) = registry.manifest(&tag).await? else {
        return Ok(());
    };
    let manifest: serde_json::Value = serde_json::from_slice(&manifest)
        .map_err(|e| Unread::Refused(format!("its signature manifest {tag} is not JSON: {e}")))?;
    for layer in manifest["layers"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let (Some(blob), Some(signature)) = (
            layer["digest"].as_str(),
            layer["annotations"][cosign::SIGNATURE].as_str(),
        ) else {
            continue;
        };
        let payload = registry.blob(blob).await?;
        match cosign::verify(&payload, signature, digest, verifying) {
            Ok(i) => {
                found.key = Some(i);
                return Ok(());
            }
            Err(why) => found.why_not.push(why),
        }
    }
    if found.why_not.is_empty() {
        found
            .why_not
            .push(format!("its signature manifest {tag} holds no signature"));
    }
    Ok(())
}

/// cosign 3's signatures of `digest`: Sigstore bundles among the artifacts that refer to it.
/// A referrer that says it holds another kind of statement (an SBOM, a provenance) is passed
/// over unread; what the others hold is checked in full.
async fn signed_by_bundle(
    registry: &mut Registry<'_>,
    digest: &str,
    verifying: &[VerifyingKey],
    found: &mut Found,
) -> Result<(), Unread> {
    let referrers = registry.referrers(digest).await?;
    let (mut seen, mut read) = (std::collections::HashSet::new(), 0);
    for referrer in &referrers {
        let (Some(kind), Some(manifest_digest)) = (referrer["artifactType"].as_str(), referrer["digest"].as_str())
        else {
            continue;
        };
        if !kind.starts_with(bundle::MEDIA_TYPE_PREFIX) || !seen.insert(manifest_digest) {
            continue;
        }
        if let Some(predicate) = referrer["annotations"][bundle::PREDICATE_ANNOTATION].as_str()
            && predicate != bundle::SIGN_PREDICATE
        {
            found.why_not.push(format!(
                "bundle {manifest_digest} is an attestation (`{predicate}`), not a signature"
            ));
            continue;
        }
        read += 1;
        if read > BUNDLES {
            found.why_not.push(format!(
                "more than {BUNDLES} bundles refer to it: the rest were not read"
            ));
            break;
        }
        let Some((_, manifest)) = registry.manifest(manifest_digest).await? else {
            found.why_not.push(format!(
                "the bundle's manifest {manifest_digest} is not in the registry"
            ));
            continue;
        };
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap_or_default();
        let layer = manifest["layers"]
            .as_array()
            .and_then(|layers| layers.first())
            .filter(|l| {
                l["mediaType"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(bundle::MEDIA_TYPE_PREFIX))
            });
        let Some(blob) = layer.and_then(|l| l["digest"].as_str()) else {
            found
                .why_not
                .push(format!("the manifest {manifest_digest} holds no Sigstore bundle"));
            continue;
        };
        let bundle = registry.blob(blob).await?;
        match bundle::verify(&bundle, digest, verifying) {
            Ok(i) => {
                found.key = Some(i);
                return Ok(());
            }
            Err(why) => found.why_not.push(format!("bundle {manifest_digest}: {why}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
