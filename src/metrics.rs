//! The agent's Prometheus metrics, in the OpenMetrics text format at `GET /metrics`. Every label
//! set is bounded: environments and services come from the repository, results and reasons from
//! closed lists, and a commit appears only in the one info series per environment.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ledger::{Outcome, Trigger};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Attempt {
    environment: String,
    trigger: String,
    strategy: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Stage {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Environment {
    environment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Commit {
    environment: String,
    commit: String,
    signer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Service {
    environment: String,
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Weight {
    environment: String,
    service: String,
    slot: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rollback {
    environment: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Blocked {
    environment: String,
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Notification {
    channel: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Channel {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Delivery {
    provider: String,
    result: String,
}

type Durations<L> = Family<L, Histogram, fn() -> Histogram>;

/// Gauges whose series for one environment are replaced as a whole (the commit it runs, its
/// services' drift, their weights): series of the previous state are removed, not left stale.
struct PerEnvironment<L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static> {
    family: Family<L, Gauge>,
    current: std::sync::Mutex<std::collections::BTreeMap<String, Vec<L>>>,
}

impl<L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static> PerEnvironment<L> {
    fn new() -> Self {
        PerEnvironment {
            family: Family::default(),
            current: Default::default(),
        }
    }

    fn replace(&self, environment: &str, series: Vec<(L, i64)>) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        for old in current.remove(environment).unwrap_or_default() {
            self.family.remove(&old);
        }
        for (labels, value) in &series {
            self.family.get_or_create(labels).set(*value);
        }
        current.insert(environment.to_owned(), series.into_iter().map(|(l, _)| l).collect());
    }
}

fn durations() -> Histogram {
    // 5 ms … about 11 minutes.
    Histogram::new(exponential_buckets(0.005, 2.0, 18))
}

fn stage_durations() -> Histogram {
    // 0.5 ms … about 17 minutes: most stages take milliseconds.
    Histogram::new(exponential_buckets(0.0005, 2.0, 22))
}

/// The agent's metrics.
pub struct Metrics {
    registry: Registry,
    attempts: Family<Attempt, Counter>,
    reconcile: Durations<Environment>,
    stages: Durations<Stage>,
    commit: PerEnvironment<Commit>,
    drift: PerEnvironment<Service>,
    weight: PerEnvironment<Weight>,
    restarts: PerEnvironment<Weight>,
    steps: Family<Environment, Gauge>,
    refused: Family<Reason, Counter>,
    rollbacks: Family<Rollback, Counter>,
    fetches: Family<Reason, Counter>,
    webhooks: Family<Delivery, Counter>,
    blocked: Family<Blocked, Gauge>,
    window: Family<Environment, Gauge>,
    approvals_refused: Family<Reason, Counter>,
    notifications: Family<Notification, Counter>,
    notification_queue: Family<Channel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("plumb"),
            attempts: Family::default(),
            reconcile: Family::new_with_constructor(durations),
            stages: Family::new_with_constructor(stage_durations),
            commit: PerEnvironment::new(),
            drift: PerEnvironment::new(),
            weight: PerEnvironment::new(),
            restarts: PerEnvironment::new(),
            steps: Family::default(),
            refused: Family::default(),
            rollbacks: Family::default(),
            fetches: Family::default(),
            webhooks: Family::default(),
            blocked: Family::default(),
            window: Family::default(),
            approvals_refused: Family::default(),
            notifications: Family::default(),
            notification_queue: Family::default(),
        };
        let r = &mut metrics.registry;
        r.register(
            "attempts",
            "Apply attempts by environment, trigger, strategy and result",
            metrics.attempts.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time to apply an attempt, from plan to outcome",
            metrics.reconcile.clone(),
        );
        r.register(
            "stage_duration_seconds",
            "Time from a push to what runs, by stage: fetch (every fetch), authenticate (a new head), render (every environment of a new head), plan (observe the target and plan) and rollout (the plan's steps, health checks included) of every attempt",
            metrics.stages.clone(),
        );
        r.register(
            "commit_info",
            "The commit each environment runs (its rollback point) and who signed it",
            metrics.commit.family.clone(),
        );
        r.register(
            "drift",
            "Whether a service differs from the rollback point at the last check (1) or not (0)",
            metrics.drift.family.clone(),
        );
        r.register(
            "traffic_weight",
            "The share of a service's traffic each slot takes, in percent",
            metrics.weight.family.clone(),
        );
        r.register(
            "container_restarts",
            "How many times the target restarted a slot's containers (the kubelet after a failed liveness probe or an exit), as it counts them now",
            metrics.restarts.family.clone(),
        );
        r.register(
            "attempt_steps",
            "Steps the running attempt of each environment has taken (0 when none runs)",
            metrics.steps.clone(),
        );
        r.register(
            "refused_commits",
            "Heads refused by the signing policy, by reason",
            metrics.refused.clone(),
        );
        r.register(
            "rollbacks",
            "Rollbacks by environment, automatic or manual",
            metrics.rollbacks.clone(),
        );
        r.register(
            "fetches",
            "Fetches of the repository by result",
            metrics.fetches.clone(),
        );
        r.register(
            "webhook_deliveries",
            "Webhook deliveries by provider and result",
            metrics.webhooks.clone(),
        );
        r.register(
            "blocked",
            "Whether the agent cannot act on an environment now (1), by cause: fetch, ledger, migration",
            metrics.blocked.clone(),
        );
        r.register(
            "sync_window_open",
            "Whether an environment's sync windows let changes land now (1) or hold them back (0)",
            metrics.window.clone(),
        );
        r.register(
            "refused_approvals",
            "Approvals that do not count (forged, malformed, for another commit or environment, by someone who may not approve), by reason",
            metrics.approvals_refused.clone(),
        );
        r.register(
            "notifications",
            "Notification tries by channel and result: delivered, retried, rejected (refused for good by the receiver), given_up (out of time)",
            metrics.notifications.clone(),
        );
        r.register(
            "notification_queue",
            "Notifications waiting to go, by channel",
            metrics.notification_queue.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// Records an attempt's end, and how long it took when it applied anything.
    pub fn attempt(
        &self,
        environment: &str,
        trigger: Trigger,
        strategy: &str,
        outcome: &Outcome,
        seconds: Option<f64>,
    ) {
        let result = match outcome {
            Outcome::Succeeded => "succeeded",
            Outcome::RolledBack(_) => "rolled_back",
            Outcome::Failed(_) => "failed",
            Outcome::Refused(_) => "refused",
            Outcome::Interrupted => "interrupted",
        };
        let trigger = serde_json::to_value(trigger).ok();
        let trigger = trigger.as_ref().and_then(|t| t.as_str()).unwrap_or("commit");
        self.attempts
            .get_or_create(&Attempt {
                environment: environment.to_owned(),
                trigger: trigger.to_owned(),
                strategy: strategy.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        if let Some(seconds) = seconds {
            self.reconcile
                .get_or_create(&Environment {
                    environment: environment.to_owned(),
                })
                .observe(seconds);
        }
        if matches!(outcome, Outcome::RolledBack(_)) {
            self.rollback(environment, "automatic");
        }
    }

    /// Sets whether `environment` is blocked by `cause`.
    pub fn blocked(&self, environment: &str, cause: &str, blocked: bool) {
        self.blocked
            .get_or_create(&Blocked {
                environment: environment.to_owned(),
                cause: cause.to_owned(),
            })
            .set(i64::from(blocked));
    }

    /// Counts an approval that does not count, by `reason`.
    pub fn approval_refused(&self, reason: &str) {
        self.approvals_refused
            .get_or_create(&Reason {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a try of a notification on `channel`, by `result`.
    pub fn notification(&self, channel: &str, result: &str) {
        self.notifications
            .get_or_create(&Notification {
                channel: channel.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Sets how many notifications wait on `channel`.
    pub fn notification_queue(&self, channel: &str, queued: i64) {
        self.notification_queue
            .get_or_create(&Channel {
                channel: channel.to_owned(),
            })
            .set(queued);
    }

    /// Sets whether `environment`'s sync windows let changes land now.
    pub fn window(&self, environment: &str, open: bool) {
        self.window
            .get_or_create(&Environment {
                environment: environment.to_owned(),
            })
            .set(i64::from(open));
    }

    /// Counts a rollback (`automatic` or `manual`).
    pub fn rollback(&self, environment: &str, kind: &'static str) {
        self.rollbacks
            .get_or_create(&Rollback {
                environment: environment.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Sets the commit an environment runs, replacing the previous one's series.
    pub fn commit(&self, environment: &str, commit: &str, signer: Option<&str>) {
        let labels = Commit {
            environment: environment.to_owned(),
            commit: commit.to_owned(),
            signer: signer.unwrap_or("").to_owned(),
        };
        self.commit.replace(environment, vec![(labels, 1)]);
    }

    /// Sets which services of an environment drift among `services`.
    pub fn drift<'a>(&self, environment: &str, services: impl IntoIterator<Item = (&'a str, bool)>) {
        let series = services
            .into_iter()
            .map(|(service, drifting)| {
                let labels = Service {
                    environment: environment.to_owned(),
                    service: service.to_owned(),
                };
                (labels, i64::from(drifting))
            })
            .collect();
        self.drift.replace(environment, series);
    }

    /// Sets the traffic weights of an environment's services, per slot.
    pub fn weights<'a>(&self, environment: &str, weights: impl IntoIterator<Item = (&'a str, &'a str, u32)>) {
        let series = weights
            .into_iter()
            .map(|(service, slot, weight)| {
                let labels = Weight {
                    environment: environment.to_owned(),
                    service: service.to_owned(),
                    slot: slot.to_owned(),
                };
                (labels, i64::from(weight))
            })
            .collect();
        self.weight.replace(environment, series);
    }

    /// Sets how many times the target restarted each slot's containers.
    pub fn restarts<'a>(&self, environment: &str, restarts: impl IntoIterator<Item = (&'a str, &'a str, u32)>) {
        let series = restarts
            .into_iter()
            .map(|(service, slot, count)| {
                let labels = Weight {
                    environment: environment.to_owned(),
                    service: service.to_owned(),
                    slot: slot.to_owned(),
                };
                (labels, i64::from(count))
            })
            .collect();
        self.restarts.replace(environment, series);
    }

    /// Sets how many steps the running attempt of `environment` has taken (0: none runs).
    pub fn steps(&self, environment: &str, steps: usize) {
        let labels = Environment {
            environment: environment.to_owned(),
        };
        self.steps.get_or_create(&labels).set(steps as i64);
    }

    /// Counts a head refused by the signing policy, by [`crate::trust::Refusal::kind`].
    pub fn refused(&self, kind: &str) {
        self.refused
            .get_or_create(&Reason {
                reason: kind.to_owned(),
            })
            .inc();
    }

    /// Counts a fetch by result (`ok`, `failed`).
    pub fn fetch(&self, result: &'static str) {
        self.fetches
            .get_or_create(&Reason {
                reason: result.to_owned(),
            })
            .inc();
    }

    /// Records how long one `stage` of bringing a commit live took (`fetch`, `authenticate`,
    /// `render`, `plan`, `rollout`).
    pub fn stage(&self, stage: &'static str, took: std::time::Duration) {
        self.stages
            .get_or_create(&Stage {
                stage: stage.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a webhook delivery by provider and result (`accepted`, `rejected`, `ignored`).
    pub fn webhook(&self, provider: &str, result: &'static str) {
        self.webhooks
            .get_or_create(&Delivery {
                provider: provider.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Everything, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
