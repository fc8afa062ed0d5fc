//! The gates a worker holds a commit at: the sync windows, the promotion and the approvals in
//! force (the rollback point's, or a first deployment's own). Automatic syncs wait for all
//! three, self-heal for the windows; `plumb sync` waits for the promotion and the approvals, and
//! for the windows unless each one holding changes back says `manualSync`; `plumb rollback` is
//! never held.

use chrono::{DateTime, Utc};

use super::command::CommandError;
use super::environment::{Head, Worker};
use crate::gate::approval::{self, Approved};
use crate::gate::window::{self, Closed};
use crate::ledger::LedgerError;
use crate::spec::Desired;
use crate::spec::model::gates::Gates;

/// What the gates say of a head.
pub struct Held {
    /// What it waits for, in words; `None` when it may be applied.
    pub waiting: Option<String>,
    /// What it waits for, by gate: `window`, `promotion`, `approval`.
    pub causes: Vec<&'static str>,
    /// The approvals that count for it.
    pub approvals: Vec<Approved>,
}

impl Worker {
    /// The gates in force for `desired`: the rollback point's; `desired`'s own when nothing
    /// was applied here yet.
    fn gates<'a>(&'a self, desired: &'a Desired) -> &'a Gates {
        self.applied.as_ref().map_or(&desired.gates, |(_, point)| &point.gates)
    }

    /// Whether the images `desired` runs are signed as the rules in force ask (the rollback
    /// point's `images`; the head's own before anything was applied here).
    pub(super) async fn images_signed(&self, desired: &Desired) -> Result<(), crate::gate::images::Refusal> {
        let Some(rule) = self.gates(desired).images.clone() else {
            return Ok(());
        };
        // The services' images, the plain manifests' containers' and the nginx proxy's.
        let mut images: Vec<String> = desired.services.values().filter_map(|s| s.image.clone()).collect();
        for manifest in &desired.manifests {
            crate::gate::images::in_object(&manifest.document, &mut images);
        }
        if let crate::spec::model::Target::Compose(compose) = &desired.target
            && compose.proxy == crate::spec::model::environment::Proxy::Nginx
        {
            images.push(compose.nginx_image.clone());
        }
        let images: Vec<&str> = images.iter().map(String::as_str).collect();
        // Read at each check, so that a login changed (a Secret updated) is the one sent.
        let logins = crate::gate::images::logins::Logins::from_environment().map_err(|why| {
            crate::gate::images::Refusal::Unavailable(format!("the images cannot be checked now: {why}"))
        })?;
        let verified = crate::gate::images::check(&images, &rule, &logins).await?;
        tracing::debug!(environment = %self.name, images = verified.len(), "Image signatures verified.");
        for verified in verified {
            tracing::debug!(environment = %self.name, image = %verified.image, digest = %verified.digest, signer = %verified.signer, "Image signature verified.");
        }
        Ok(())
    }

    /// What holds `head` (rendered as `desired`) back now — a sync window, a promotion,
    /// approvals — in words, published as the status's `waiting`; and the approvals that let
    /// it through, to record with the attempt.
    pub(super) async fn held(&mut self, head: &Head, desired: &Desired) -> Result<Held, LedgerError> {
        let mut reasons = Vec::new();
        let mut causes = Vec::new();
        if let Some(closed) = self.window_closed(desired) {
            reasons.push(format!("sync window: {}", closed.reason));
            causes.push("window");
        }
        if let Some(waiting) = self.promotion(head, desired).await? {
            reasons.push(format!("promotion: {waiting}"));
            causes.push("promotion");
        }
        let (approvals, waiting) = self.approvals(head, desired).await;
        if let Some(waiting) = waiting {
            reasons.push(format!("approval: {waiting}"));
            causes.push("approval");
        }
        let waiting = (!reasons.is_empty()).then(|| reasons.join("; "));
        self.publish(|s| {
            s.waiting.clone_from(&waiting);
            s.awaiting.clone_from(&causes);
        });
        Ok(Held {
            waiting,
            causes,
            approvals,
        })
    }

    /// The approvals of `head` for this environment that count, and what is still awaited
    /// (`1 of 2 approvals (alice); waiting`). Approvals that do not count are logged and counted
    /// once each.
    async fn approvals(&mut self, head: &Head, desired: &Desired) -> (Vec<Approved>, Option<String>) {
        let Some(rule) = self.gates(desired).approval.clone() else {
            return (Vec::new(), None);
        };
        let required = rule.required as usize;
        let (repository, environment, commit) = (head.repository.clone(), self.name.clone(), head.commit);
        let counted = crate::blocking::run(move || {
            let repo = git2::Repository::open_bare(&repository).map_err(|e| e.message().to_owned())?;
            approval::tally(&repo, &environment, commit, &rule)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|t| t);
        let tally = match counted {
            Ok(tally) => tally,
            Err(reason) => return (Vec::new(), Some(format!("the approvals cannot be read: {reason}"))),
        };
        for (reference, refused) in &tally.refused {
            if self.refused_approvals.insert(reference.clone()) {
                tracing::warn!(environment = %self.name, reference, reason = %refused, "An approval does not count.");
                self.publish.metrics.approval_refused(refused.kind());
            }
        }
        if tally.counted.len() >= required {
            return (tally.counted, None);
        }
        let names: Vec<&str> = tally.counted.iter().map(|a| a.user.as_str()).collect();
        let who = if names.is_empty() {
            String::new()
        } else {
            format!(" ({})", names.join(", "))
        };
        let waiting = format!("{} of {required} approvals{who}; waiting", tally.counted.len());
        (tally.counted, Some(waiting))
    }

    /// Whether the sync windows in force hold changes back now; the `plumb_sync_window_open`
    /// gauge follows.
    pub(super) fn window_closed(&self, desired: &Desired) -> Option<Closed> {
        let closed = window::closed(&self.gates(desired).sync_windows, Utc::now());
        self.publish.metrics.window(&self.name, closed.is_none());
        closed
    }

    /// Refuses a manual sync of `head` that the gates hold back: a promotion not done,
    /// approvals missing, or a window that does not allow manual syncs. The approvals that let
    /// it through, to record with the attempt.
    pub(super) async fn manual_sync_allowed(
        &mut self,
        head: &Head,
        desired: &Desired,
    ) -> Result<Vec<Approved>, CommandError> {
        if let Some(closed) = self.window_closed(desired).filter(|c| !c.manual) {
            return Err(CommandError::Conflict(format!(
                "{}; manual syncs wait too (the window does not say `manualSync: true`); `plumb rollback` is never held",
                closed.reason
            )));
        }
        if let Some(waiting) = self.promotion(head, desired).await? {
            return Err(CommandError::Conflict(format!(
                "the commit is not promoted here yet: {waiting}"
            )));
        }
        match self.approvals(head, desired).await {
            (_, Some(waiting)) => Err(CommandError::Conflict(format!(
                "the commit is not approved here yet: {waiting}"
            ))),
            (approvals, None) => Ok(approvals),
        }
    }

    /// Records with `attempt` the approvals that allowed it.
    pub(super) async fn record_approvals(
        &self,
        attempt: Option<i64>,
        approvals: &[Approved],
    ) -> Result<(), LedgerError> {
        let Some(attempt) = attempt.filter(|_| !approvals.is_empty()) else {
            return Ok(());
        };
        let approvals: Vec<serde_json::Value> = approvals.iter().map(|a| serde_json::json!(a)).collect();
        self.ledger.call(move |l| l.approvals(attempt, &approvals)).await
    }

    /// What the promotion in force still waits for before `head` may be applied here: each
    /// environment it follows must have applied the commit (or run what it declares for them)
    /// healthy, for the soak time, without rolling it back.
    async fn promotion(&self, head: &Head, desired: &Desired) -> Result<Option<String>, LedgerError> {
        let Some(promotion) = self.gates(desired).promotion.clone() else {
            return Ok(None);
        };
        let commit = head.commit.to_string();
        let short = &commit[..12];
        let soak = chrono::Duration::from_std(promotion.soak.0).unwrap_or_default();
        let now = Utc::now();
        let mut waiting = Vec::new();
        for before in &promotion.after {
            let before = before.as_str();
            let (name, at) = (before.to_owned(), commit.clone());
            let (own, point) = self
                .ledger
                .call(move |l| Ok((l.applied_at(&name, &at)?, l.rollback_point(&name)?)))
                .await?;
            // Applied there as this commit, or running there what this commit declares for it.
            let since = match (own, point) {
                (Some((attempt, at)), _) => Some((attempt, at)),
                (None, Some(point)) if same_state(head, &commit, &point, before) => {
                    let (name, point) = (before.to_owned(), point.clone());
                    self.ledger.call(move |l| l.applied_at(&name, &point)).await?
                }
                _ => None,
            };
            let Some((attempt, at)) = since else {
                let (name, at) = (before.to_owned(), commit.clone());
                if self.ledger.call(move |l| l.is_failed(&name, &at)).await? {
                    waiting.push(format!("stopped: {short} failed in {before}; it is not promoted"));
                } else {
                    waiting.push(format!("waiting for {before} to apply {short}"));
                }
                continue;
            };
            let name = before.to_owned();
            if let Some(when) = self.ledger.call(move |l| l.rolled_back_after(&name, attempt)).await? {
                waiting.push(format!(
                    "stopped: {before} was rolled back at {when}; {short} is not promoted"
                ));
                continue;
            }
            let until = DateTime::parse_from_rfc3339(&at).map(|t| t.with_timezone(&Utc) + soak);
            if let Some(until) = until.ok().filter(|until| *until > now) {
                waiting.push(format!(
                    "waiting for {before}: soaking until {}",
                    until.format("%Y-%m-%d %H:%M:%S UTC")
                ));
            }
        }
        Ok((!waiting.is_empty()).then(|| waiting.join("; ")))
    }
}

/// Whether `commit` declares for `environment` exactly what `point` (applied there) does.
fn same_state(head: &Head, commit: &str, point: &str, environment: &str) -> bool {
    match (head.render(commit, environment), head.render(point, environment)) {
        (Ok(wanted), Ok(running)) => fingerprint(&wanted) == fingerprint(&running),
        _ => false,
    }
}

/// What a desired state runs, without the commit it was read at: each service's version, the
/// target, the plain manifests.
fn fingerprint(desired: &Desired) -> String {
    let services: Vec<(&str, String)> = desired
        .services
        .values()
        .map(|s| (s.name.as_str(), crate::reconcile::version(s)))
        .collect();
    serde_json::json!({ "services": services, "target": desired.target, "manifests": desired.manifests }).to_string()
}

/// An approval handed to the API, stored.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Received {
    /// The commit it approves.
    pub commit: String,
    /// Where it is stored in the repository's cache.
    pub reference: String,
    /// Who approved, with which key and when.
    pub approval: Approved,
}

impl Worker {
    /// Takes an approval handed to the API (`raw`, a signed tag object as `plumb approve` makes
    /// it) where the agent cannot fetch `refs/plumb/approvals/`: verified as an approval of its
    /// commit for this environment under the policy in force at the commit, stored in the
    /// repository's cache beside the fetched ones, and recorded with who handed it over. A
    /// forged, malformed or other environment's approval is refused and changes nothing.
    pub async fn receive_approval(&mut self, raw: String, by: &str) -> Result<Received, CommandError> {
        let head = self
            .last
            .clone()
            .ok_or_else(|| CommandError::Conflict("no head has been fetched yet".to_owned()))?;
        let environment = self.name.clone();
        let repository = head.repository.clone();
        let judged = crate::blocking::run(move || -> Result<Received, CommandError> {
            let commit = raw
                .lines()
                .take_while(|l| !l.is_empty())
                .find_map(|l| l.strip_prefix("object "))
                .map(str::to_owned)
                .ok_or_else(|| CommandError::Conflict("the approval is refused: malformed: no object".to_owned()))?;
            let repo = git2::Repository::open_bare(&repository)
                .map_err(|e| CommandError::Unavailable(e.message().to_owned()))?;
            let oid = git2::Oid::from_str(&commit)
                .ok()
                .filter(|oid| repo.find_commit(*oid).is_ok())
                .ok_or_else(|| CommandError::NotFound(format!("{commit} is not a commit the agent has fetched")))?;
            let policy = approval::policy_at(&repo, oid).map_err(CommandError::Conflict)?;
            let approved = approval::verify(raw.as_bytes(), &environment, &commit, &policy)
                .map_err(|refused| CommandError::Conflict(format!("the approval is refused: {refused}")))?;
            let reference = approval::store(&repo, &environment, &commit, &approved.fingerprint, raw.as_bytes())
                .map_err(CommandError::Unavailable)?;
            Ok(Received {
                commit,
                reference,
                approval: approved,
            })
        })
        .await
        .map_err(|e| CommandError::Unavailable(e.to_string()))
        .and_then(|r| r);
        let received = match judged {
            Ok(received) => received,
            Err(refused) => {
                if let CommandError::Conflict(reason) = &refused {
                    tracing::warn!(environment = %self.name, by, %reason, "An approval handed to the API is refused.");
                    self.publish.metrics.approval_refused("refused_by_api");
                }
                return Err(refused);
            }
        };
        let (name, commit, who) = (self.name.clone(), received.commit.clone(), by.to_owned());
        let approval = serde_json::json!(received.approval);
        self.ledger
            .call(move |l| l.approval_received(&name, &commit, &approval, &who))
            .await?;
        tracing::info!(environment = %self.name, commit = %received.commit, approver = %received.approval.user, by, "Approval received.");
        Ok(received)
    }
}
