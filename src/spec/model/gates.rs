//! What a commit must pass before an environment applies it, beside its signature: the sync
//! windows in which changes may land, and the environments it must have run in first. Their rules are read from the environment's rollback
//! point, so a commit cannot loosen the rules it is judged by.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::scalar::Duration;

/// The gates of an environment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Gates {
    /// When automatic syncs and self-heal may change the environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_windows: Vec<SyncWindow>,
    /// The environments a commit must have run in, healthy, first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<Promotion>,
    /// The approvals a commit needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRule>,
    /// Who the images a commit runs must be signed by: keys, keyless identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<SignedImages>,
}

impl Gates {
    /// Whether there is no gate at all.
    pub fn is_empty(&self) -> bool {
        self.sync_windows.is_empty() && self.promotion.is_none() && self.approval.is_none() && self.images.is_none()
    }
}

/// What an environment asks of the images it runs, as written in its document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImagePolicy {
    /// Run an image only when its registry holds a cosign signature of its digest made with
    /// one of these keys or by one of these keyless identities.
    pub require_signature: RequireSignature,
}

/// Who an image must be signed by: one of the keys, or one of the keyless identities (at least
/// one of the two is named).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequireSignature {
    /// Files of the repository holding cosign public keys (`cosign generate-key-pair` writes
    /// `cosign.pub`: an ECDSA P-256 key, PEM); a signature by any one of them counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1))]
    pub keys: Vec<String>,
    /// Keyless signatures (`cosign sign` with an OpenID Connect identity, as in CI): a
    /// signature by one of these identities counts, its certificate and log entry checked
    /// against the trusted root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyless: Option<KeylessPolicy>,
}

/// The identities whose keyless signatures count, and the Sigstore trusted root that vouches
/// for their certificates and log entries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeylessPolicy {
    /// A file of the repository holding the Sigstore trusted root (`trusted_root.json`: the
    /// public-good one Sigstore's TUF repository serves, or a private deployment's).
    pub trusted_root: String,
    /// The identities that count; one is enough.
    #[schemars(length(min = 1))]
    pub identities: Vec<SignerIdentity>,
}

/// One signer: the OpenID Connect issuer that vouched for it, and its subject (an email, or a
/// URI such as a CI workflow's), exactly or as a regular expression matching all of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignerIdentity {
    /// The issuer, exactly (`https://token.actions.githubusercontent.com`,
    /// `https://accounts.google.com`).
    pub issuer: String,
    /// The subject, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// A regular expression the whole subject matches (instead of `subject`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_pattern: Option<String>,
}

/// The images a commit runs must be signed by one of `keys` or of the `keyless` identities (read
/// from the rollback point, so a commit cannot bring the key or the trusted root its own images
/// are checked with).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignedImages {
    /// Each key: the file it was read from and its PEM text.
    pub keys: Vec<ImageKey>,
    /// The keyless signers, with their trusted root's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyless: Option<KeylessSigners>,
}

/// The keyless signers an environment names, with the trusted root read from the repository.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeylessSigners {
    /// The trusted root's file.
    pub file: String,
    /// Its text (JSON).
    pub root: String,
    /// The identities that count.
    pub identities: Vec<SignerIdentity>,
}

/// One cosign public key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageKey {
    /// The repository's file.
    pub file: String,
    /// The key, PEM (`-----BEGIN PUBLIC KEY-----`).
    pub pem: String,
}

/// A commit is applied here only once `required` people approved exactly it for this
/// environment: users of the signing policy in force at the commit who hold `sign_tag`, among
/// `approvers` when listed, and (unless `allowSelfApproval`) not its signer. Each approval is an
/// OpenPGP-signed tag under `refs/plumb/approvals/` (`plumb approve`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalRule {
    /// How many different people must approve.
    #[schemars(range(min = 1))]
    pub required: u32,
    /// Who may approve: names of the signing policy's users; any holder of `sign_tag` when
    /// absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// Whether the commit's own signer counts.
    #[serde(default)]
    pub allow_self_approval: bool,
}

/// A commit is applied here only once it was applied healthy in every environment of `after`
/// and ran there for `soak` without being rolled back. A commit that changes nothing for one
/// of them counts as applied there when what runs there is what it declares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Promotion {
    /// The environments (of the same repository) a commit runs in first.
    #[schemars(length(min = 1))]
    pub after: Vec<super::scalar::Name>,
    /// How long it must have run in each of them.
    #[serde(default)]
    pub soak: Duration,
}

/// A recurring span of time in which changes may (`allow`) or may not (`deny`) be applied, as
/// Argo CD's sync windows: it opens at each time `schedule` names, in `timeZone`, and lasts
/// `duration`. With allow windows, automatic syncs happen only inside one; a deny window in
/// force stops them whatever the allow windows say. `plumb rollback` is never held.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncWindow {
    /// `allow` or `deny`.
    pub kind: WindowKind,
    /// When it opens: five-field cron (`0 22 * * *`, `0 0 * * SAT`) or `@daily`-style.
    pub schedule: String,
    /// How long it stays open.
    pub duration: Duration,
    /// The IANA time zone the schedule is read in (`Europe/Berlin`); daylight-saving changes
    /// follow the zone's rules. UTC by default.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// Whether `plumb sync` may still apply while this window holds changes back.
    #[serde(default)]
    pub manual_sync: bool,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// Whether a window lets changes through or holds them back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    /// Changes may be applied while it is open.
    Allow,
    /// Changes are held back while it is open.
    Deny,
}
