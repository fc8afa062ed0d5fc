//! Who may call what on the agent's API: named identities, each known by a bearer token or by
//! the subject of a client certificate (the API over TLS, see [`crate::tls`]), with a role and
//! the environments it acts on. Every token is compared on every call, in constant time, so the
//! time taken does not tell which one matched, or how much of one; none is ever logged. The
//! name of the identity that called is what the ledger records beside a sync or a rollback.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::secret::{Secret, constant_time_eq};

/// What an identity may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read (status, history, migrations, diff) where reads need an identity.
    Viewer,
    /// Read; sync, roll back, resolve an interrupted migration.
    Deployer,
    /// Read; approve a commit for an environment.
    Approver,
    /// Everything.
    Admin,
}

/// A call that needs a role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A read.
    Read,
    /// `POST …/sync`.
    Sync,
    /// `POST …/rollback`.
    Rollback,
    /// `POST …/migrations/resolve`.
    Resolve,
    /// `POST …/approvals`.
    Approve,
}

impl Action {
    /// The call, in words.
    fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Sync => "sync",
            Action::Rollback => "roll back",
            Action::Resolve => "resolve migrations",
            Action::Approve => "approve",
        }
    }
}

impl Role {
    /// Whether the role may take `action`.
    pub fn allows(self, action: Action) -> bool {
        matches!(
            (self, action),
            (_, Action::Read)
                | (Role::Admin, _)
                | (Role::Deployer, Action::Sync | Action::Rollback | Action::Resolve)
                | (Role::Approver, Action::Approve)
        )
    }
}

/// One caller the agent knows.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// Its name, as the ledger records it.
    pub name: String,
    /// Its bearer token, when it is known by one.
    pub token: Option<Secret>,
    /// The subject of its client certificate (`CN=alice,O=ops`), when it is known by one.
    pub subject: Option<String>,
    /// What it may do.
    pub role: Role,
    /// The environments it acts on; every one when `None`.
    pub environments: Option<Vec<String>>,
}

impl Identity {
    /// The name the single `apiTokenFile` token is recorded under: an admin.
    pub const API_TOKEN: &'static str = "api-token";

    /// Whether it acts on `environment`.
    fn covers(&self, environment: &str) -> bool {
        self.environments
            .as_ref()
            .is_none_or(|e| e.iter().any(|e| e == environment))
    }
}

/// Every identity, and whether reads need one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Access {
    /// The identities.
    pub identities: Vec<Identity>,
    /// Whether reads need an identity (any role).
    pub protect_reads: bool,
}

/// Why a call was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No identity, or an unknown token: 401.
    Unauthenticated(String),
    /// An identity without the role or the environment for it, or no identities at all: 403.
    Forbidden(String),
}

impl Access {
    /// `identities`, with the single `token` (the `apiTokenFile`) as an admin named
    /// [`Identity::API_TOKEN`].
    pub fn new(token: Option<Secret>, identities: Vec<Identity>, protect_reads: bool) -> Access {
        let mut all: Vec<Identity> = token
            .map(|token| Identity {
                name: Identity::API_TOKEN.to_owned(),
                token: Some(token),
                subject: None,
                role: Role::Admin,
                environments: None,
            })
            .into_iter()
            .collect();
        all.extend(identities);
        Access {
            identities: all,
            protect_reads,
        }
    }

    /// The identity whose token `bearer` is. Every token is compared, whatever matched.
    pub fn caller(&self, bearer: &str) -> Option<&Identity> {
        let mut found = None;
        for identity in &self.identities {
            let Some(token) = &identity.token else { continue };
            if constant_time_eq(bearer.as_bytes(), token.expose().as_bytes()) && found.is_none() {
                found = Some(identity);
            }
        }
        found
    }

    /// Who may take `action` (on `environment`, when it names one) with `bearer`, or the
    /// client certificate `subject` the TLS layer verified: the identity, `None` for an open
    /// read. A token, when given, decides.
    pub fn authorize(
        &self,
        bearer: Option<&str>,
        subject: Option<&str>,
        action: Action,
        environment: Option<&str>,
    ) -> Result<Option<&Identity>, Refused> {
        if action == Action::Read && !self.protect_reads {
            return Ok(None);
        }
        if self.identities.is_empty() {
            return Err(Refused::Forbidden(
                "mutating calls are disabled: start the agent with an API token or access identities".to_owned(),
            ));
        }
        let identity = match bearer {
            Some(bearer) => self.caller(bearer),
            None => subject.and_then(|s| self.identities.iter().find(|i| i.subject.as_deref() == Some(s))),
        };
        let Some(identity) = identity else {
            return Err(Refused::Unauthenticated(
                "a valid bearer token (or a client certificate of a known subject) is required".to_owned(),
            ));
        };
        if !identity.role.allows(action) {
            return Err(Refused::Forbidden(format!(
                "`{}` ({:?}) may not {}",
                identity.name,
                identity.role,
                action.name()
            )));
        }
        if let Some(environment) = environment.filter(|e| !identity.covers(e)) {
            return Err(Refused::Forbidden(format!(
                "`{}` may not {} in `{environment}`",
                identity.name,
                action.name()
            )));
        }
        Ok(Some(identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        let person = |name: &str, role, environments: Option<&[&str]>| Identity {
            name: name.to_owned(),
            token: Some(Secret::new(format!("{name}-token-of-sixteen"))),
            subject: Some(format!("CN={name}")),
            role,
            environments: environments.map(|e| e.iter().map(|s| (*s).to_owned()).collect()),
        };
        Access::new(
            Some(Secret::new("the-old-single-token")),
            vec![
                person("ann", Role::Deployer, Some(&["staging"])),
                person("bob", Role::Viewer, None),
                person("cat", Role::Approver, None),
            ],
            true,
        )
    }

    #[test]
    fn roles_and_environments_decide() {
        let access = access();
        let name = |r: Result<Option<&Identity>, Refused>| r.map(|i| i.map(|i| i.name.clone()));
        let ann = Some("ann-token-of-sixteen");
        assert_eq!(
            name(access.authorize(ann, None, Action::Sync, Some("staging"))),
            Ok(Some("ann".into()))
        );
        assert!(matches!(
            access.authorize(ann, None, Action::Sync, Some("production")),
            Err(Refused::Forbidden(_))
        ));
        assert!(matches!(
            access.authorize(ann, None, Action::Approve, Some("staging")),
            Err(Refused::Forbidden(_))
        ));
        let bob = Some("bob-token-of-sixteen");
        assert_eq!(
            name(access.authorize(bob, None, Action::Read, None)),
            Ok(Some("bob".into()))
        );
        assert!(matches!(
            access.authorize(bob, None, Action::Rollback, Some("staging")),
            Err(Refused::Forbidden(_))
        ));
        let cat = Some("cat-token-of-sixteen");
        assert_eq!(
            name(access.authorize(cat, None, Action::Approve, Some("production"))),
            Ok(Some("cat".into()))
        );
        let old = Some("the-old-single-token");
        assert_eq!(
            name(access.authorize(old, None, Action::Resolve, Some("x"))),
            Ok(Some("api-token".into()))
        );
        assert!(matches!(
            access.authorize(Some("nope"), None, Action::Read, None),
            Err(Refused::Unauthenticated(_))
        ));
        assert!(matches!(
            access.authorize(None, None, Action::Sync, Some("staging")),
            Err(Refused::Unauthenticated(_))
        ));
    }

    #[test]
    fn open_reads_and_no_identities() {
        let open = Access {
            protect_reads: false,
            ..access()
        };
        assert_eq!(open.authorize(None, None, Action::Read, Some("staging")), Ok(None));
        let none = Access::default();
        assert!(matches!(
            none.authorize(Some("x"), None, Action::Sync, None),
            Err(Refused::Forbidden(_))
        ));
    }
}
