//! Environments that require signed images, against a real OCI registry (Debian's
//! `docker-registry`, started on a loopback port) holding images a real Docker Engine pushed,
//! signed in the test as `cosign sign --key` stores signatures. cosign 2: beside the image, a
//! manifest tagged `sha256-<hex>.sig` whose layer is the "simple signing" payload naming the
//! image's digest, with its ECDSA P-256 signature (base64 DER) in the layer's annotation.
//! cosign 3: a Sigstore bundle (a DSSE envelope of an in-toto statement naming the digest) in
//! an artifact that refers to the image, listed in the index tagged `sha256-<hex>`. A commit whose
//! image is signed with the key the environment names is applied; one whose image is unsigned,
//! or signed with another key, is refused, naming the image, and the last good release keeps
//! serving; an unreachable registry holds a commit back rather than refusing it. A registry that
//! asks for a login (an htpasswd file, as operators set one up) is read with the login a Docker
//! `config.json` holds.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use plumb::agent::Settings;
use plumb::gate::images::logins::Logins;
use plumb::gate::images::{Refusal, bundle, check, cosign};
use plumb::ledger::Outcome;
use plumb::spec::model::gates::{ImageKey, SignedImages};
use sha2::Digest;

use crate::agent::{Running, eventually, outcome, release};
use crate::docker::{docker, example_image};
use crate::harness::{Web, agent_settings, trusted};
use crate::keys::TestKey;

/// The environment's rule: signed by the key `pem` (its file `keys/cosign.pub`).
fn one_key(pem: String) -> SignedImages {
    SignedImages {
        keys: vec![ImageKey {
            file: "keys/cosign.pub".to_owned(),
            pem,
        }],
        keyless: None,
    }
}

/// A registry of its own, stopped when dropped.
pub(crate) struct Registry {
    child: Child,
    addr: SocketAddr,
    /// The `Authorization` its login takes, when it asks for one.
    authorization: Option<String>,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub(crate) fn start() -> Registry {
        Registry::start_with(None)
    }

    /// A registry that asks for `login` (user, password), kept in an htpasswd file as the
    /// registry reads it (bcrypt, made by Apache's `htpasswd`).
    fn start_with(login: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::reconcile::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config = dir.path().join("config.yml");
        let mut settings = format!(
            "version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = login {
            let made = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd runs (package apache2-utils, installed by .ci/run)");
            assert!(made.status.success());
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &made.stdout).unwrap();
            settings.push_str(&format!(
                "auth:\n  htpasswd: {{realm: plumb-test, path: {}}}\n",
                file.display()
            ));
        }
        std::fs::write(&config, settings).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry runs (package docker-registry, installed by .ci/run)");
        let authorization = login.map(|(user, password)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )
        });
        let registry = Registry {
            child,
            addr,
            authorization,
            _dir: dir,
        };
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the registry does not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// `localhost:<port>/<name>`.
    pub(crate) fn image(&self, name: &str) -> String {
        format!("localhost:{}/{name}", self.addr.port())
    }

    /// The headers of a request: `extra`, and the registry's login when it asks for one.
    fn headers(&self, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
        let mut headers = extra.to_vec();
        headers.extend(self.authorization.iter().map(|a| ("Authorization", a.clone())));
        headers
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cosign key pair made from `seed`: the signing half, and the public key as `cosign.pub`.
fn key_pair(seed: u8) -> (SigningKey, String) {
    let signing = SigningKey::from_slice(&[seed; 32]).unwrap();
    let public = signing.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
    (signing, public)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Uploads `blob` into `repository` (a monolithic upload, as the distribution API allows).
async fn upload(registry: &Registry, repository: &str, blob: &[u8]) -> String {
    let started = crate::http::post(
        registry.addr,
        &format!("/v2/{repository}/blobs/uploads/"),
        &registry.headers(&[]),
        b"",
    )
    .await;
    assert_eq!(started.status, 202, "{}", started.head);
    let location = started.header("location").unwrap();
    let path = location.find("/v2/").map_or(location, |i| &location[i..]);
    let digest = sha256(blob);
    let separator = if path.contains('?') { '&' } else { '?' };
    let done = crate::http::put(
        registry.addr,
        &format!("{path}{separator}digest={digest}"),
        &registry.headers(&[("Content-Type", "application/octet-stream".to_owned())]),
        blob,
    )
    .await;
    assert_eq!(done.status, 201, "{}{}", done.head, done.body);
    digest
}

/// The manifest `repository:tag` (or `repository@digest`) names.
async fn manifest_of(registry: &Registry, repository: &str, tag: &str) -> String {
    let accept = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
    let manifest = crate::http::get_with(
        registry.addr,
        &format!("/v2/{repository}/manifests/{tag}"),
        &registry.headers(&[("Accept", accept.to_owned())]),
    )
    .await;
    assert_eq!(manifest.status, 200, "{}", manifest.body);
    manifest.body
}

/// The digest of the manifest `repository:tag` (or `repository@digest`) names.
pub(crate) async fn digest_of(registry: &Registry, repository: &str, tag: &str) -> String {
    sha256(manifest_of(registry, repository, tag).await.as_bytes())
}

/// Signs `repository:tag` of `registry` with `key` as `cosign sign --key` (cosign 2) does; the
/// digest signed.
async fn sign(registry: &Registry, repository: &str, tag: &str, key: &SigningKey) -> String {
    let digest = digest_of(registry, repository, tag).await;
    let payload = cosign::payload(&registry.image(repository), &digest);
    let signature: Signature = key.sign(&payload);
    let signature = base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes());
    let annotations = serde_json::json!({ (cosign::SIGNATURE): signature });
    let layer = (payload.as_slice(), cosign::PAYLOAD, Some(annotations));
    store(registry, repository, &cosign::signature_tag(&digest), layer).await;
    digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_images_signed_with_the_environments_key_run() {
    let registry = Registry::start();
    let (ours, ours_pem) = key_pair(7);
    let (theirs, _) = key_pair(9);
    // Three images made of the example image (each its own digest: a label apart), pushed by
    // the engine: one signed with our key, one with another, one not at all.
    let image = example_image();
    for tag in ["signed", "theirs", "unsigned"] {
        let name = registry.image(&format!("web:{tag}"));
        let container = docker(&["create", image, "/plumb", "example-app"]);
        let label = format!("LABEL plumb.test.signature={tag}");
        docker(&["commit", "--change", &label, container.trim(), &name]);
        docker(&["rm", container.trim()]);
        docker(&["push", "--quiet", &name]);
    }
    let signed = sign(&registry, "web", "signed", &ours).await;
    sign(&registry, "web", "theirs", &theirs).await;

    // The gate alone: what passes, what is refused and why, what only waits.
    let keys = one_key(ours_pem.clone());
    let signed_image = registry.image("web:signed");
    let anonymous = Logins::default();
    let verified = check(&[signed_image.as_str()], &keys, &anonymous).await.unwrap();
    assert_eq!(
        (verified[0].digest.as_str(), verified[0].signer.as_str()),
        (signed.as_str(), "keys/cosign.pub")
    );
    let by_digest = registry.image(&format!("web@{signed}"));
    assert!(check(&[by_digest.as_str()], &keys, &anonymous).await.is_ok());
    let Err(Refusal::Refused(why)) = check(&[registry.image("web:unsigned").as_str()], &keys, &anonymous).await else {
        panic!("an unsigned image passed");
    };
    assert!(
        why.starts_with(&format!("image `{}`: sha256:", registry.image("web:unsigned")))
            && why.contains("is not signed: its registry holds no cosign signature"),
        "{why}"
    );
    let Err(Refusal::Refused(why)) = check(&[registry.image("web:theirs").as_str()], &keys, &anonymous).await else {
        panic!("an image signed with another key passed");
    };
    assert!(
        why.contains("is not signed by keys/cosign.pub; what its registry holds: signature sha256-")
            && why.ends_with(".sig: it was made with none of the keys"),
        "{why}"
    );
    let Err(Refusal::Refused(why)) = check(&[registry.image("web:absent").as_str()], &keys, &anonymous).await else {
        panic!("an absent image passed");
    };
    assert!(why.ends_with("is not in its registry"), "{why}");
    let nowhere = format!("localhost:{}/web:signed", crate::reconcile::free_port());
    assert!(matches!(
        check(&[nowhere.as_str()], &keys, &anonymous).await,
        Err(Refusal::Unavailable(_))
    ));

    // The agent: the signed image runs; the unsigned one and the one signed with another key
    // are refused, naming the image, and r1 keeps serving.
    let project = "plumb-signed-images";
    crate::compose::clean(project);
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    let port = crate::reconcile::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let write = |upstream: &crate::harness::TestRepo, tag: &str, release: &str| {
        Web {
            image: Some((&registry.image(&format!("web:{tag}")), crate::docker::host())),
            environment: project,
            ..Web::new(port, release, "recreate: {}")
        }
        .write(upstream);
        upstream.write(
            &format!("environments/{project}.yaml"),
            &format!(
                "apiVersion: plumb/v1\nkind: Environment\nname: {project}\ntarget:\n  compose: {{dockerHost: {:?}}}\nsync: {{prune: true}}\n\
                 images:\n  requireSignature:\n    keys: [keys/cosign.pub]\n",
                crate::docker::host()
            ),
        );
        upstream.write("keys/cosign.pub", &ours_pem);
    };
    write(&upstream, "signed", "r1");
    let first = upstream.commit_signed("web r1, signed", &alice);
    let state = tempfile::tempdir().unwrap();
    let agent = Running::start(Settings {
        heal_every: Duration::from_secs(3600),
        ..agent_settings(&upstream, &root, state.path())
    })
    .await;
    assert_eq!(outcome(state.path(), project, &first).await, Some(Outcome::Succeeded));
    let serving = eventually(Duration::from_secs(60), || async {
        release(addr).await.filter(|r| r == "r1")
    })
    .await;
    assert_eq!(serving.as_deref(), Some("r1"));

    for (tag, said) in [
        ("unsigned", "is not signed: its registry holds no cosign signature"),
        ("theirs", "is not signed by keys/cosign.pub"),
    ] {
        write(&upstream, tag, "r2");
        let commit = upstream.commit_signed(&format!("web r2, {tag}"), &alice);
        agent.push();
        let Some(Outcome::Refused(why)) = outcome(state.path(), project, &commit).await else {
            panic!("{tag}: not refused");
        };
        assert!(
            why.starts_with(&format!("image `{}`", registry.image(&format!("web:{tag}")))) && why.contains(said),
            "{tag}: {why}"
        );
        assert_eq!(release(addr).await.as_deref(), Some("r1"), "{tag}: r1 keeps serving");
    }
    agent.stop().await;
    crate::compose::clean(project);
}

/// `images.requireSignature` is checked at validation: a key file missing or not a cosign key is
/// named at its line, and the local target, which runs commands, refuses the field.
#[test]
fn the_keys_are_checked_where_they_are_written() {
    let alice = TestKey::new("alice");
    let (upstream, _) = trusted(&alice);
    Web::new(crate::reconcile::free_port(), "r1", "recreate: {}").write(&upstream);
    let environment = |target: &str| {
        format!(
            "apiVersion: plumb/v1\nkind: Environment\nname: dev\ntarget:\n  {target}\n\
             images:\n  requireSignature:\n    keys: [keys/cosign.pub, keys/missing.pub]\n"
        )
    };
    upstream.write(
        "keys/cosign.pub",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    );
    upstream.write("environments/dev.yaml", &environment("compose: {}"));
    let run = crate::harness::plumb(&["validate", "--repo", upstream.path().to_str().unwrap()]);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 1, "{said}");
    assert!(
        said.contains("environments/dev.yaml:8:12: $.images.requireSignature.keys[0]: `keys/cosign.pub` is not a cosign public key"),
        "{said}"
    );
    assert!(
        said.contains("environments/dev.yaml:8:29: $.images.requireSignature.keys[1]: key file `keys/missing.pub` is not in the repository"),
        "{said}"
    );
    upstream.write("keys/cosign.pub", &key_pair(3).1);
    upstream.write("keys/missing.pub", &key_pair(4).1);
    upstream.write("environments/dev.yaml", &environment("local: {}"));
    let run = crate::harness::plumb(&["validate", "--repo", upstream.path().to_str().unwrap()]);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains("environments/dev.yaml:7:3: $.images: `images`: the local target runs commands, not images"),
        "{said}"
    );
}

/// Pushes a small image (a config and one layer, the tag's own) as `repository:tag`, as a
/// client logged in pushes one.
pub(crate) async fn push(registry: &Registry, repository: &str, tag: &str) {
    let layer = format!("a layer of the test's own, for {tag}");
    let layer = layer.as_bytes();
    store(
        registry,
        repository,
        tag,
        (layer, "application/vnd.oci.image.layer.v1.tar+gzip", None),
    )
    .await;
}

/// Stores an image manifest as `repository:tag`: its one layer (bytes, media type, annotations)
/// and a config naming it, uploaded first.
pub(crate) async fn store(
    registry: &Registry,
    repository: &str,
    tag: &str,
    layer: (&[u8], &str, Option<serde_json::Value>),
) {
    let (bytes, media_type, annotations) = layer;
    let layer_digest = upload(registry, repository, bytes).await;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "", "os": "", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .unwrap();
    let config_digest = upload(registry, repository, &config).await;
    let mut descriptor = serde_json::json!({"mediaType": media_type, "size": bytes.len(), "digest": layer_digest});
    if let Some(annotations) = annotations {
        descriptor["annotations"] = annotations;
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": config_digest},
        "layers": [descriptor],
    }))
    .unwrap();
    let stored = crate::http::put(
        registry.addr,
        &format!("/v2/{repository}/manifests/{tag}"),
        &registry.headers(&[("Content-Type", "application/vnd.oci.image.manifest.v1+json".to_owned())]),
        &manifest,
    )
    .await;
    assert_eq!(stored.status, 201, "{}{}", stored.head, stored.body);
}

/// A registry that asks for a login is read with the one a Docker `config.json` keeps for it;
/// without it, or with a wrong one, the image is refused, saying which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_asks_for_a_login_is_read_with_the_one_docker_keeps() {
    let registry = Registry::start_with(Some(("alice", "s3cret-pass")));
    let (ours, ours_pem) = key_pair(7);
    push(&registry, "private", "v1").await;
    let signed = sign(&registry, "private", "v1", &ours).await;
    let keys = one_key(ours_pem);
    let image = registry.image("private:v1");
    let host = format!("localhost:{}", registry.addr.port());
    let dir = tempfile::tempdir().unwrap();
    let logins = |entries: serde_json::Value| {
        let file = dir.path().join("config.json");
        std::fs::write(&file, serde_json::json!({ "auths": entries }).to_string()).unwrap();
        Logins::read(&file).unwrap()
    };
    let auth = |pair: &str| base64::engine::general_purpose::STANDARD.encode(pair);

    // Logged in, as `docker login` writes it (the key may be a URL).
    let alice = logins(serde_json::json!({ format!("http://{host}"): {"auth": auth("alice:s3cret-pass")} }));
    let verified = check(&[image.as_str()], &keys, &alice).await.unwrap();
    assert_eq!(verified[0].digest, signed);

    // No login at all, or none for this registry: the image is refused (it may be absent, or
    // private). A wrong login is the agent's to mend: the commit waits. Each says why.
    let checked = |logins: Logins| {
        let image = image.clone();
        let keys = keys.clone();
        async move { check(&[image.as_str()], &keys, &logins).await }
    };
    let Err(Refusal::Refused(why)) = checked(Logins::default()).await else {
        panic!("read without a login");
    };
    assert!(
        why.contains("answered HTTP 401: the image does not exist, or cannot be pulled without a login, and the agent has no registry logins"),
        "{why}"
    );
    let other = logins(serde_json::json!({"ghcr.io": {"auth": auth("alice:s3cret-pass")}}));
    let Err(Refusal::Refused(why)) = checked(other).await else {
        panic!("read without its login");
    };
    assert!(why.contains(&format!("holds no login for {host}")), "{why}");
    let wrong = logins(serde_json::json!({ host.clone(): {"username": "alice", "password": "wrong"} }));
    let Err(Refusal::Unavailable(why)) = checked(wrong).await else {
        panic!("a wrong login did not hold the image back");
    };
    assert!(
        why.contains(&format!("image `{image}`"))
            && why.contains(&format!("answered HTTP 401: it refused the login for {host}")),
        "{why}"
    );
    assert!(!why.contains("wrong") && !why.contains("s3cret"), "{why}");
}

/// The agent itself reads the logins where `DOCKER_CONFIG` says: an unsigned image in a registry
/// that asks for a login is refused for being unsigned, which it can only know once logged in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_logs_in_with_the_docker_config_it_is_given() {
    let registry = Registry::start_with(Some(("alice", "s3cret-pass")));
    push(&registry, "private", "unsigned").await;
    let (_, ours_pem) = key_pair(7);
    let project = "plumb-registry-login";
    let alice = TestKey::new("alice");
    let (mut upstream, root) = trusted(&alice);
    Web {
        image: Some((&registry.image("private:unsigned"), crate::docker::host())),
        environment: project,
        ..Web::new(crate::reconcile::free_port(), "r1", "recreate: {}")
    }
    .write(&upstream);
    upstream.write(
        &format!("environments/{project}.yaml"),
        &format!(
            "apiVersion: plumb/v1\nkind: Environment\nname: {project}\ntarget:\n  compose: {{dockerHost: {:?}}}\n\
             images:\n  requireSignature:\n    keys: [keys/cosign.pub]\n",
            crate::docker::host()
        ),
    );
    upstream.write("keys/cosign.pub", &ours_pem);
    let commit = upstream.commit_signed("web r1, unsigned, in a private registry", &alice);

    let dir = tempfile::tempdir().unwrap();
    let docker_config = dir.path().join("docker");
    std::fs::create_dir(&docker_config).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret-pass");
    let host = format!("localhost:{}", registry.addr.port());
    std::fs::write(
        docker_config.join("config.json"),
        serde_json::json!({"auths": {host: {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let state = dir.path().join("state");
    let log = dir.path().join("agent.log");
    let mut agent = crate::compose::agent_process(
        &upstream,
        &root,
        &state,
        &[("DOCKER_CONFIG", docker_config.as_path())],
        &log,
    );
    let found = outcome(&state, project, &commit).await;
    let _ = agent.kill();
    let _ = agent.wait();
    let Some(Outcome::Refused(why)) = found else {
        panic!(
            "not refused: {found:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    assert!(
        why.contains("is not signed: its registry holds no cosign signature"),
        "{why}"
    );
    crate::compose::clean(project);
}

/// A Sigstore bundle as cosign 3's `cosign sign --key` makes one for the image `digest` of
/// `repository`: a DSSE envelope of the in-toto statement of predicate type `predicate` naming
/// the digest, signed with `key`, and the key's hint (`certificate` makes it a keyless bundle's
/// material instead).
fn bundle(repository: &str, digest: &str, predicate: &str, key: &SigningKey, keyless: bool) -> Vec<u8> {
    let base64 = base64::engine::general_purpose::STANDARD;
    let statement = serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": repository, "digest": {"sha256": digest.trim_start_matches("sha256:")}}],
        "predicateType": predicate,
        "predicate": {},
    }))
    .unwrap();
    let payload_type = bundle::IN_TOTO;
    let signature: Signature = key.sign(&bundle::pae(payload_type, &statement));
    let material = if keyless {
        serde_json::json!({"certificate": {"rawBytes": base64.encode(b"a certificate")}})
    } else {
        serde_json::json!({"publicKey": {"hint": base64.encode(sha2::Sha256::digest(key.verifying_key().to_sec1_bytes()))}})
    };
    serde_json::to_vec(&serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": material,
        "dsseEnvelope": {
            "payload": base64.encode(&statement),
            "payloadType": payload_type,
            "signatures": [{"sig": base64.encode(signature.to_der().as_bytes()), "keyid": ""}],
        },
    }))
    .unwrap()
}

/// Attaches `bundle` to the image `digest` of `repository` as cosign 3 does on a registry with no
/// referrers API (the distribution registry 2.8): the bundle as a blob, an artifact manifest
/// whose subject is the image, and that manifest added to the index tagged `sha256-<hex>`;
/// `predicate` is the annotation cosign puts on the index's entry.
pub(crate) async fn attach(
    registry: &Registry,
    repository: &str,
    digest: &str,
    bundle: &[u8],
    predicate: Option<&str>,
) {
    let media_type = "application/vnd.dev.sigstore.bundle.v0.3+json";
    let subject = manifest_of(registry, repository, digest).await;
    let layer = upload(registry, repository, bundle).await;
    let empty = upload(registry, repository, b"{}").await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": media_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{
            "mediaType": media_type, "digest": layer, "size": bundle.len(),
            "annotations": {"org.opencontainers.image.title": format!("{}.sigstore.json", layer.replacen(':', "-", 1))},
        }],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": subject.len()},
    }))
    .unwrap();
    let manifest_digest = sha256(&manifest);
    put_manifest(
        registry,
        repository,
        &manifest_digest,
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
    )
    .await;
    let tag = digest.replacen(':', "-", 1);
    let listed = crate::http::get_with(
        registry.addr,
        &format!("/v2/{repository}/manifests/{tag}"),
        &registry.headers(&[("Accept", "application/vnd.oci.image.index.v1+json".to_owned())]),
    )
    .await;
    let mut index = match listed.status {
        200 => serde_json::from_str(&listed.body).unwrap(),
        _ => {
            serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []})
        }
    };
    let mut entry = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": manifest.len(), "artifactType": media_type,
        "annotations": {"dev.sigstore.bundle.content": "dsse-envelope"},
    });
    if let Some(predicate) = predicate {
        entry["annotations"]["dev.sigstore.bundle.predicateType"] = predicate.into();
    }
    index["manifests"].as_array_mut().unwrap().push(entry);
    let index = serde_json::to_vec(&index).unwrap();
    put_manifest(
        registry,
        repository,
        &tag,
        "application/vnd.oci.image.index.v1+json",
        &index,
    )
    .await;
}

/// Stores `manifest` (of `media_type`) in `repository` as `reference` (a tag or its digest).
async fn put_manifest(registry: &Registry, repository: &str, reference: &str, media_type: &str, manifest: &[u8]) {
    let stored = crate::http::put(
        registry.addr,
        &format!("/v2/{repository}/manifests/{reference}"),
        &registry.headers(&[("Content-Type", media_type.to_owned())]),
        manifest,
    )
    .await;
    assert_eq!(stored.status, 201, "{}{}", stored.head, stored.body);
}

/// cosign 3 stores signatures as Sigstore bundles that refer to the image. On a registry with no
/// referrers API (as here) they are listed in the index tagged `sha256-<hex>`. A bundle with the
/// environment's key passes; one with another key, a provenance attestation, a keyless bundle or
/// one signing another image does not, and each is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_3_bundles_among_the_referrers_are_signatures() {
    let registry = Registry::start();
    let (ours, ours_pem) = key_pair(7);
    let (theirs, _) = key_pair(9);
    let keys = one_key(ours_pem);
    let anonymous = Logins::default();
    let sign_predicate = "https://sigstore.dev/cosign/sign/v1";
    let provenance = "https://slsa.dev/provenance/v1";
    for tag in ["signed", "others"] {
        push(&registry, "web", tag).await;
    }
    let repository = registry.image("web");
    let signed = digest_of(&registry, "web", "signed").await;
    let others = digest_of(&registry, "web", "others").await;

    // Signed with our key, beside a provenance the index says is an attestation.
    attach(
        &registry,
        "web",
        &signed,
        &bundle(&repository, &signed, provenance, &ours, false),
        Some(provenance),
    )
    .await;
    attach(
        &registry,
        "web",
        &signed,
        &bundle(&repository, &signed, sign_predicate, &ours, false),
        Some(sign_predicate),
    )
    .await;
    let verified = check(&[registry.image("web:signed").as_str()], &keys, &anonymous)
        .await
        .unwrap();
    assert_eq!(
        (verified[0].digest.as_str(), verified[0].signer.as_str()),
        (signed.as_str(), "keys/cosign.pub")
    );

    // Everything but a signature of this image by our key: each bundle is read and named.
    let others_image = registry.image("web:others");
    let refused = || async { check(&[others_image.as_str()], &keys, &anonymous).await };
    let Err(Refusal::Refused(why)) = refused().await else {
        panic!("an image with no signature at all passed");
    };
    assert!(
        why.contains("is not signed: its registry holds no cosign signature (sha256-")
            && why.ends_with("and no Sigstore bundle refers to it"),
        "{why}"
    );
    // Another key's signature; an attestation the index does not say is one (read, and refused
    // for what it is); a keyless bundle; our key's signature of the other image, listed here.
    for (signs, predicate, key, keyless, annotated) in [
        (&others, sign_predicate, &theirs, false, None),
        (&others, provenance, &ours, false, None),
        (&others, sign_predicate, &ours, true, None),
        (&signed, sign_predicate, &ours, false, Some(sign_predicate)),
    ] {
        let made = bundle(&repository, signs, predicate, key, keyless);
        attach(&registry, "web", &others, &made, annotated).await;
    }
    let Err(Refusal::Refused(why)) = refused().await else {
        panic!("an image signed otherwise passed");
    };
    assert!(
        why.starts_with(&format!(
            "image `{others_image}`: {others} is not signed by keys/cosign.pub; what its registry holds: referrer sha256:"
        )),
        "{why}"
    );
    for said in [
        ": it was made with none of the keys",
        ": it is an attestation (`https://slsa.dev/provenance/v1`), not a signature",
        ": it is a keyless signature (a Fulcio certificate), and the environment names no keyless identity (`keyless`)",
        &format!(": it signs {signed}, not {others}"),
    ] {
        assert!(why.contains(said), "{said}: {why}");
    }
}
