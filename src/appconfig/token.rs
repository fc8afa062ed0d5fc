//! The read tokens the agent hands each service it runs, so its replicas read their own
//! configuration — decrypted values in clear — from the API, and nothing else.
//!
//! A token names what it reads and proves the agent made it:
//! `plumbcfg.<environment>.<service>.<mac>`, each part base64url, the MAC an HMAC-SHA256 of the
//! two names under a key made once in the agent's state folder (`config-tokens.key`, readable by
//! the agent alone), or read from `readTokenKeyFile` when several replicas of the agent must make
//! the same tokens. Nothing is stored per token: a replica's token is checked by computing it
//! again, in constant time. A new key revokes every token: the services are deployed again with
//! new ones.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::secret::{Secret, constant_time_eq};
use crate::spec::Desired;
use crate::spec::model::Target as TargetSpec;
use crate::spec::model::service::ConfigApi;
use crate::spec::model::{Name, Service};

/// What every read token starts with.
const PREFIX: &str = "plumbcfg.";

/// The file holding the key, in the state folder.
pub const KEY_FILE: &str = "config-tokens.key";

/// Makes and checks the services' read tokens.
pub struct Tokens {
    key: [u8; 32],
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(***)")
    }
}

/// Whose configuration a token reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The environment.
    pub environment: String,
    /// The service.
    pub service: String,
}

impl Tokens {
    /// The tokens of the key in `state`, made there (owner-only) when there is none.
    pub fn open(state: &Path) -> std::io::Result<Tokens> {
        let file = state.join(KEY_FILE);
        match std::fs::read(&file) {
            Ok(bytes) => {
                let key = bytes.try_into().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} does not hold a 32-byte key: delete it to make a new one",
                            file.display()
                        ),
                    )
                })?;
                Ok(Tokens { key })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = crate::secret::random_bytes::<32>()?;
                std::fs::create_dir_all(state)?;
                crate::target::workload::write_with_mode(&file, &key, 0o600)?;
                Ok(Tokens { key })
            }
            Err(e) => Err(e),
        }
    }

    /// The tokens of the key in `file` (made elsewhere, shared by every replica of the agent:
    /// 32 bytes or more).
    pub fn from_file(file: &Path) -> std::io::Result<Tokens> {
        let bytes = std::fs::read(file)?;
        if bytes.len() < 32 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} holds {} bytes: a key needs 32 or more (`head -c 32 /dev/urandom`)",
                    file.display(),
                    bytes.len()
                ),
            ));
        }
        use sha2::Digest;
        Ok(Tokens {
            key: Sha256::digest(&bytes).into(),
        })
    }

    /// A key given whole, for tests.
    #[cfg(test)]
    pub fn with_key(key: [u8; 32]) -> Tokens {
        Tokens { key }
    }

    fn mac(&self, environment: &str, service: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(b"plumb configuration read\0");
        mac.update(environment.as_bytes());
        mac.update(b"\0");
        mac.update(service.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The read token of `service` in `environment`.
    pub fn issue(&self, environment: &str, service: &str) -> Secret {
        Secret::new(format!(
            "{PREFIX}{}.{}.{}",
            URL_SAFE_NO_PAD.encode(environment),
            URL_SAFE_NO_PAD.encode(service),
            URL_SAFE_NO_PAD.encode(self.mac(environment, service))
        ))
    }

    /// Whose configuration `bearer` reads, when it is a token this agent made; `None` for
    /// anything else (another key's token, a forged one, not a read token at all).
    pub fn holder(&self, bearer: &str) -> Option<Holder> {
        let mut parts = bearer.strip_prefix(PREFIX)?.split('.');
        let (Some(environment), Some(service), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
        };
        let (environment, service, mac) = (
            decode(environment)?,
            decode(service)?,
            URL_SAFE_NO_PAD.decode(mac).ok()?,
        );
        constant_time_eq(&mac, &self.mac(&environment, &service)).then_some(Holder { environment, service })
    }
}

/// What the agent hands each service with a configuration: where the API is, as the service
/// reaches it, and the service's read token.
#[derive(Debug)]
pub struct Handout {
    /// The tokens.
    pub tokens: Arc<Tokens>,
    /// The API as every service reaches it (`servicesUrl`), when set.
    pub everywhere: Option<String>,
    /// The API as a process on the agent's own host reaches it: the address it listens on.
    pub on_host: Option<String>,
    /// Per environment, per service: the service as rendered and as handed out. A memo's
    /// render gives an unchanged service again as the same `Arc`; it is then handed out as the
    /// same `Arc` too, so that its plan's fingerprint is not worked out again at every commit.
    given: Mutex<HashMap<String, Given>>,
}

/// The services of one environment as rendered and as handed out, by name.
type Given = HashMap<Name, (Arc<Service>, Arc<Service>)>;

/// Whose render the services handed out come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handed {
    /// The memo's, of the commit the agent applies next: unchanged services come again as the
    /// same `Arc`, and what is handed out is remembered for the next commit.
    Kept,
    /// A render of its own (an earlier commit, a rollback point): handed out from what is
    /// remembered where it can be, and remembered by no one.
    Once,
}

impl Handout {
    /// Hands out `tokens` and the API at `everywhere` (to every target) or `on_host` (to
    /// processes on the agent's host).
    pub fn new(tokens: Arc<Tokens>, everywhere: Option<String>, on_host: Option<String>) -> Handout {
        Handout {
            tokens,
            everywhere,
            on_host,
            given: Mutex::default(),
        }
    }

    /// Gives every service of `desired` (in `environment`) that has a configuration its URL and
    /// token. Other targets than the local one get them only where `servicesUrl` says how their
    /// services reach the API (on Kubernetes the token travels in a Secret, which the agent may
    /// not be granted in every namespace).
    pub fn give(&self, environment: &str, desired: &mut Desired, handed: Handed) {
        let on_host = matches!(desired.target, TargetSpec::Local(_)).then_some(self.on_host.as_ref());
        let Some(base) = self.everywhere.as_ref().or(on_host.flatten()) else {
            return;
        };
        let base = base.trim_end_matches('/');
        let mut given = self.given.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = given.get(environment);
        let mut now = Given::new();
        for (name, service) in desired.services.iter_mut().filter(|(_, s)| s.config.is_some()) {
            let rendered = service.clone();
            match before.and_then(|before| before.get(name)) {
                Some((was, handed)) if Arc::ptr_eq(was, &rendered) => *service = handed.clone(),
                _ => {
                    // A service shared with a memo is copied before it is changed.
                    Arc::make_mut(service).config_api = Some(ConfigApi {
                        url: format!("{base}/api/v1/environments/{environment}/services/{name}/config"),
                        token: self.tokens.issue(environment, name.as_str()),
                    });
                }
            }
            now.insert(name.clone(), (rendered, service.clone()));
        }
        if handed == Handed::Kept {
            given.insert(environment.to_owned(), now);
        }
    }

    /// Forgets what was handed out in environments other than `environments` (those the
    /// repository declares now).
    pub fn keep_only(&self, environments: &[String]) {
        let mut given = self.given.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        given.retain(|environment, _| environments.contains(environment));
    }
}

/// Whether `bearer` is written as a read token (made by this agent or not).
pub fn is_read_token(bearer: &str) -> bool {
    bearer.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service with a configuration, as a render gives it.
    fn service(name: &str, level: u32) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "plumb/v1", "kind": "Service", "name": name, "command": ["app"],
                "config": {"values": {"level": level}},
            }))
            .unwrap(),
        )
    }

    /// The desired state of `dev`, on the local target, with `services`.
    fn desired(services: &[&Arc<Service>]) -> Desired {
        Desired {
            environment: Name::parse("dev").unwrap(),
            commit: None,
            target: serde_json::from_value(serde_json::json!({"local": {}})).unwrap(),
            sync: Default::default(),
            gates: Default::default(),
            services: services.iter().map(|s| (s.name.clone(), Arc::clone(s))).collect(),
            manifests: Vec::new(),
        }
    }

    /// A service rendered again as the same `Arc` (a memo's render of a commit that left it
    /// unchanged) is handed out as the same `Arc`, so its fingerprint is remembered; a changed
    /// one is handed out anew. Both carry the API's address and their token.
    #[test]
    fn an_unchanged_service_is_handed_out_as_the_same_service() {
        let handout = Handout::new(
            Arc::new(Tokens::with_key([7; 32])),
            None,
            Some("http://127.0.0.1:7000".into()),
        );
        let (web, worker) = (service("web", 1), service("worker", 1));
        let mut first = desired(&[&web, &worker]);
        handout.give("dev", &mut first, Handed::Kept);
        let api = first.services["web"].config_api.as_ref().expect("handed out");
        assert_eq!(
            api.url,
            "http://127.0.0.1:7000/api/v1/environments/dev/services/web/config"
        );
        assert!(web.config_api.is_none(), "the render's service is left as it was");

        // A render of its own (a rollback point's) neither takes nor replaces what is kept.
        let mut elsewhere = desired(&[&service("web", 1)]);
        handout.give("dev", &mut elsewhere, Handed::Once);
        assert!(!Arc::ptr_eq(&first.services["web"], &elsewhere.services["web"]));
        assert_eq!(first.services["web"], elsewhere.services["web"]);

        let changed = service("worker", 2);
        let mut second = desired(&[&web, &changed]);
        handout.give("dev", &mut second, Handed::Kept);
        assert!(Arc::ptr_eq(&first.services["web"], &second.services["web"]));
        assert!(!Arc::ptr_eq(&first.services["worker"], &second.services["worker"]));
        let worker = &second.services["worker"];
        assert_eq!(worker.config.as_ref().unwrap().values["level"], 2);
        assert_eq!(
            worker.config_api.as_ref().unwrap().token.expose(),
            handout.tokens.issue("dev", "worker").expose()
        );
        handout.keep_only(&[]);
        let mut third = desired(&[&web]);
        handout.give("dev", &mut third, Handed::Kept);
        assert!(
            !Arc::ptr_eq(&first.services["web"], &third.services["web"]),
            "forgotten"
        );
    }

    #[test]
    fn a_token_reads_its_own_service_only() {
        let tokens = Tokens::with_key([7; 32]);
        let token = tokens.issue("production", "twikit-backend");
        let holder = tokens.holder(token.expose()).expect("a token of this key");
        assert_eq!(
            holder,
            Holder {
                environment: "production".to_owned(),
                service: "twikit-backend".to_owned()
            }
        );
        assert!(is_read_token(token.expose()));
        // Another key's token, a token whose names were swapped, and a truncated one hold nothing.
        assert_eq!(Tokens::with_key([8; 32]).holder(token.expose()), None);
        let parts: Vec<&str> = token.expose().split('.').collect();
        let swapped = format!("plumbcfg.{}.{}.{}", parts[2], parts[1], parts[3]);
        assert_eq!(tokens.holder(&swapped), None);
        assert_eq!(tokens.holder(&token.expose()[..token.expose().len() - 2]), None);
        assert_eq!(tokens.holder("plumbcfg.a.b"), None);
    }

    #[test]
    fn the_key_is_made_once_readable_by_the_agent_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = Tokens::open(dir.path()).unwrap().issue("e", "s");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Tokens::open(dir.path()).unwrap().issue("e", "s"), first);
        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        let refused = Tokens::open(dir.path()).unwrap_err().to_string();
        assert!(refused.contains("32-byte key"), "{refused}");
    }
}
