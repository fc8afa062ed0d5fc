//! The strategies against a target that fails on demand, with paused time: what a real target
//! cannot be made to do at will (a route that fails, a canary that sees no traffic).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use super::{Rollout, RolloutError};
use crate::health::Check;
use crate::ledger::{Attempt, Ledger, Recorder};
use crate::router::SlotStats;
use crate::spec::model::Service;
use crate::target::{Capabilities, Observed, Pending, Slot, Target, TargetError};

/// A target whose primitives succeed, but for the faults it is told to inject; it records the
/// calls it received.
#[derive(Default)]
struct Faulty {
    /// `route` fails with this message.
    route_fails: Option<&'static str>,
    /// The answers the new slot has seen, whatever the time.
    answers: u64,
    /// The calls, in order: `deploy blue`, `route blue=100`, `retire green`…
    calls: Mutex<Vec<String>>,
    /// The call (counted from 0) that never ends, to stop the agent in the middle of it.
    hang_at: Option<usize>,
    /// Told when the hanging call is reached.
    hung: tokio::sync::Notify,
    /// What it says runs.
    live: Observed,
    /// How long a deploy takes, and how many services may roll out at once.
    deploy_takes: Duration,
    at_once: usize,
    /// Deploys as they start and end: `deploy a`, `deployed a`.
    deploys: Mutex<Vec<String>>,
}

impl Faulty {
    /// Records `call`; `Some` of a call that never ends when it is the one to hang.
    fn record<'a, T: 'a>(&'a self, call: String) -> Option<Pending<'a, T>> {
        let mut calls = self.calls.lock().unwrap();
        calls.push(call);
        (self.hang_at == Some(calls.len() - 1)).then(|| -> Pending<'a, T> {
            Box::pin(async move {
                self.hung.notify_one();
                std::future::pending().await
            })
        })
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

fn fault(message: &'static str) -> TargetError {
    TargetError {
        backend: "faulty",
        source: message.into(),
    }
}

impl Target for Faulty {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            slots: true,
            weighted_traffic: true,
            jobs: true,
            counts_answers: true,
            in_place: false,
        }
    }

    fn deploy<'a>(
        &'a self,
        service: &'a Service,
        slot: Slot,
        _: &'a str,
        _: &'a str,
    ) -> Pending<'a, Result<(), TargetError>> {
        if let Some(hang) = self.record(format!("deploy {}", slot.name())) {
            return hang;
        }
        let name = service.name.as_str();
        self.deploys.lock().unwrap().push(format!("deploy {name}"));
        Box::pin(async move {
            tokio::time::sleep(self.deploy_takes).await;
            self.deploys.lock().unwrap().push(format!("deployed {name}"));
            Ok(())
        })
    }

    fn rollouts_at_once(&self) -> usize {
        self.at_once.max(1)
    }

    fn scale<'a>(&'a self, _: &'a Service, slot: Slot, replicas: u32) -> Pending<'a, Result<(), TargetError>> {
        if let Some(hang) = self.record(format!("scale {} {replicas}", slot.name())) {
            return hang;
        }
        Box::pin(async { Ok(()) })
    }

    fn reload<'a>(&'a self, _: &'a Service, _: Slot) -> Pending<'a, Result<bool, TargetError>> {
        Box::pin(async { Ok(false) })
    }

    fn route<'a>(&'a self, _: &'a str, weights: &'a [(Slot, u32)]) -> Pending<'a, Result<(), TargetError>> {
        let weights: Vec<String> = weights.iter().map(|(s, w)| format!("{}={w}", s.name())).collect();
        if let Some(hang) = self.record(format!("route {}", weights.join(","))) {
            return hang;
        }
        let failed = self.route_fails;
        Box::pin(async move { failed.map_or(Ok(()), |m| Err(fault(m))) })
    }

    fn retire<'a>(&'a self, _: &'a str, slot: Slot) -> Pending<'a, Result<(), TargetError>> {
        if let Some(hang) = self.record(format!("retire {}", slot.name())) {
            return hang;
        }
        Box::pin(async { Ok(()) })
    }

    fn checks<'a>(&'a self, _: &'a str, _: Slot) -> Pending<'a, Result<Vec<Check>, TargetError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn traffic<'a>(&'a self, _: &'a str) -> Pending<'a, BTreeMap<String, SlotStats>> {
        let stats = SlotStats {
            requests: self.answers,
            ok: self.answers,
            ..SlotStats::default()
        };
        Box::pin(async move { BTreeMap::from([("green".to_owned(), stats)]) })
    }

    fn reset_traffic<'a>(&'a self, _: &'a str) -> Pending<'a, ()> {
        Box::pin(async {})
    }

    fn run_job<'a>(
        &'a self,
        _: &'a Service,
        _: &'a str,
        _: &'a [String],
        _: Duration,
    ) -> Pending<'a, Result<String, TargetError>> {
        Box::pin(async { Ok(String::new()) })
    }

    fn observe(&self) -> Pending<'_, Result<Observed, TargetError>> {
        let live = self.live.clone();
        Box::pin(async move { Ok(live) })
    }

    fn shutdown(&self) -> Pending<'_, ()> {
        Box::pin(async {})
    }
}

/// Service `web` with `strategy` (inline JSON) and a progress deadline of a minute.
fn web(strategy: serde_json::Value) -> Service {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "plumb/v1",
        "kind": "Service",
        "name": "web",
        "command": ["web"],
        "progressDeadline": "1m",
        "strategy": strategy,
    }))
    .unwrap()
}

/// Rolls `service` out on `target` from blue; the outcome and the steps the ledger recorded.
async fn roll(target: &Faulty, service: &Service) -> (Result<Slot, RolloutError>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(&dir.path().join("ledger.sqlite")).unwrap();
    let attempt = ledger
        .begin(&Attempt {
            environment: "dev".to_owned(),
            commit: "c1".to_owned(),
            signer: None,
            strategy: service.strategy.name().to_owned(),
            plan: serde_json::json!({}),
            trigger: Default::default(),
            by: None,
        })
        .unwrap();
    let recorder = Recorder::new(ledger);
    let outcome = Rollout::new(target, &recorder, attempt)
        .run(service, "v2", Some(Slot::Blue))
        .await;
    let history = recorder.call(|l| l.history("dev", 1)).await.unwrap();
    let steps = history[0]
        .steps
        .iter()
        .map(|s| format!("{}{}", s.name, if matches!(s.error, Some(Some(_))) { " ✗" } else { "" }))
        .collect();
    (outcome, steps)
}

#[tokio::test(start_paused = true)]
async fn a_switch_that_fails_fails_its_step_and_the_old_color_is_not_retired() {
    let target = Faulty {
        route_fails: Some("the selector could not be written"),
        ..Faulty::default()
    };
    let (outcome, steps) = roll(
        &target,
        &web(serde_json::json!({"blueGreen": {"keepOldVersion": "0s"}})),
    )
    .await;
    let error = outcome.unwrap_err();
    assert!(
        error.to_string().contains("the selector could not be written"),
        "{error}"
    );
    assert_eq!(steps.last().unwrap(), "web: switch traffic to green ✗");
    assert!(
        !target.calls().contains(&"retire blue".to_owned()),
        "{:?}",
        target.calls()
    );
}

#[tokio::test(start_paused = true)]
async fn a_canary_whose_shift_fails_aborts_unmeasured() {
    let target = Faulty {
        route_fails: Some("the route could not be weighed"),
        ..Faulty::default()
    };
    let canary = serde_json::json!({"canary": {"steps": [{"weight": 10, "pause": "1m"}]}});
    let (outcome, steps) = roll(&target, &web(canary)).await;
    assert!(outcome.is_err());
    assert_eq!(steps[2], "web: shift 10% to green ✗");
    assert!(!steps.iter().any(|s| s.contains("analyse")), "{steps:?}");
}

#[tokio::test(start_paused = true)]
async fn a_canary_step_short_of_min_requests_waits_then_fails_never_passes() {
    // 5 answers of the 20 needed: the step is held past its pause, then fails at the deadline.
    let target = Faulty {
        answers: 5,
        ..Faulty::default()
    };
    let canary = serde_json::json!({"canary": {"steps": [{"weight": 10, "pause": "10s"}], "minRequests": 20}});
    let started = tokio::time::Instant::now();
    let (outcome, _) = roll(&target, &web(canary)).await;
    let Err(RolloutError::Analysis { reason, .. }) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        reason.contains("answered 5 requests") && reason.contains("`minRequests`"),
        "{reason}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(60),
        "held until the progress deadline"
    );
    assert!(target.calls().contains(&"retire green".to_owned()));

    // With enough answers it passes at the end of its pause; with `successThreshold: 0` it is
    // judged by health alone.
    let measured = Faulty {
        answers: 20,
        ..Faulty::default()
    };
    let canary = serde_json::json!({"canary": {"steps": [{"weight": 10, "pause": "10s"}], "minRequests": 20}});
    assert_eq!(roll(&measured, &web(canary)).await.0.unwrap(), Slot::Green);
    let unjudged = Faulty::default();
    let canary = serde_json::json!({"canary": {"steps": [{"weight": 10, "pause": "10s"}], "successThreshold": 0}});
    assert_eq!(roll(&unjudged, &web(canary)).await.0.unwrap(), Slot::Green);
}

/// The desired state of environment `dev`: service `web` alone, on the local target.
fn desired(service: Service) -> crate::spec::Desired {
    crate::spec::Desired {
        environment: crate::spec::model::Name::parse("dev").unwrap(),
        commit: Some("c1".to_owned()),
        target: serde_json::from_value(serde_json::json!({"local": {}})).unwrap(),
        sync: crate::spec::model::environment::SyncPolicy::default(),
        gates: Default::default(),
        services: BTreeMap::from([(service.name.clone(), std::sync::Arc::new(service))]),
        manifests: Vec::new(),
    }
}

/// Runs an agent's worker for `dev` over `target` with `service`'s commit as its head; stops it
/// as SIGTERM does once the target's hanging call is reached, or `after` a while. Returns how
/// long the stop took and how the ledger closed the attempt.
async fn stopped_mid_way(
    target: std::sync::Arc<Faulty>,
    service: &Service,
    after: Option<Duration>,
) -> (Duration, Option<crate::ledger::Outcome>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let ledger = Recorder::new(Ledger::open(&path).unwrap());
    let worker = crate::agent::Worker::new(
        "dev",
        target.clone(),
        ledger,
        Duration::from_secs(3600),
        Default::default(),
    )
    .await
    .unwrap();
    let head = crate::agent::Head {
        commit: git2::Oid::from_str("c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1").unwrap(),
        subject: None,
        signer: None,
        desired: Ok(desired(service.clone())),
        repository: dir.path().join("no-repository"),
        folder: String::new(),
        keys: Default::default(),
        allow: Default::default(),
        handout: None,
    };
    let (heads, watched) = tokio::sync::watch::channel(None);
    heads.send_replace(Some(head));
    let (_commands, input) = tokio::sync::mpsc::channel(1);
    let cancel = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(worker.run(watched, input, cancel.clone()));
    match after {
        Some(after) => tokio::time::sleep(after).await,
        None => target.hung.notified().await,
    }
    let asked = tokio::time::Instant::now();
    cancel.cancel();
    running.await.unwrap();
    let took = asked.elapsed();
    drop(heads);
    let outcome = Ledger::open_read_only(&path).unwrap().history("dev", 1).unwrap()[0]
        .outcome
        .clone();
    (took, outcome)
}

#[tokio::test(start_paused = true)]
async fn a_stop_at_any_step_of_any_strategy_parks_the_attempt_within_ten_seconds() {
    let strategies = [
        serde_json::json!({"recreate": {}}),
        serde_json::json!({"rolling": {"batchSize": 1}}),
        serde_json::json!({"blueGreen": {"keepOldVersion": "30s"}}),
        serde_json::json!({"canary": {"steps": [{"weight": 10, "pause": "10s"}, {"weight": 50, "pause": "10s"}], "successThreshold": 0}}),
    ];
    // An earlier version of `web` serves from blue: each strategy's whole way is taken.
    let live = Observed::from([(
        "web".to_owned(),
        crate::target::Slots::from([(
            Slot::Blue,
            crate::target::LiveSlot {
                version: "an-earlier-version".to_owned(),
                replicas: vec!["running".to_owned()],
                weight: 100,
                config: None,
                failed: 0,
                taken: Vec::new(),
                restarts: 0,
            },
        )]),
    )]);
    for strategy in strategies {
        let service = web(strategy.clone());
        // A first run without a stop counts the strategy's calls to the target.
        let complete = std::sync::Arc::new(Faulty {
            live: live.clone(),
            ..Faulty::default()
        });
        let started = tokio::time::Instant::now();
        let calls = {
            let dir = tempfile::tempdir().unwrap();
            let ledger = Recorder::new(Ledger::open(&dir.path().join("ledger.sqlite")).unwrap());
            let applied = crate::reconcile::apply(
                complete.as_ref(),
                &ledger,
                &desired(service.clone()),
                crate::reconcile::Intent {
                    commit: "c1",
                    signer: None,
                    trigger: crate::ledger::Trigger::Commit,
                    undo: &[],
                    kept: &[],
                    by: None,
                },
                None,
            )
            .await
            .unwrap();
            assert_eq!(applied.outcome, crate::ledger::Outcome::Succeeded, "{strategy}");
            complete.calls()
        };
        let whole = started.elapsed();
        assert!(!calls.is_empty(), "{strategy}");
        // In the middle of each call to the target…
        for (at, call) in calls.iter().enumerate() {
            let target = std::sync::Arc::new(Faulty {
                hang_at: Some(at),
                live: live.clone(),
                ..Faulty::default()
            });
            let (took, outcome) = stopped_mid_way(target, &service, None).await;
            assert!(
                took <= Duration::from_secs(10),
                "{strategy}, stopped at `{call}`: took {took:?}"
            );
            assert_eq!(
                outcome,
                Some(crate::ledger::Outcome::Interrupted),
                "{strategy}, stopped at `{call}`"
            );
        }
        // …and in the middle of each wait (keeping the old version for switch-back, a canary
        // step's pause).
        // (This target does not show what was applied, so the next drift check would roll
        // the service out again: only stops before the attempt ends are tried.)
        for after in [1, 5, 12, 15, 25]
            .map(Duration::from_secs)
            .into_iter()
            .filter(|a| *a < whole)
        {
            let target = std::sync::Arc::new(Faulty {
                live: live.clone(),
                ..Faulty::default()
            });
            let (took, outcome) = stopped_mid_way(target, &service, Some(after)).await;
            assert!(
                took <= Duration::from_secs(10),
                "{strategy}, stopped after {after:?} of {whole:?}: took {took:?} ({outcome:?})"
            );
            // A step in progress has 10 s to end: an attempt that ends by then is not cut.
            let expected = if after + Duration::from_secs(10) < whole {
                crate::ledger::Outcome::Interrupted
            } else {
                crate::ledger::Outcome::Succeeded
            };
            assert_eq!(
                outcome,
                Some(expected),
                "{strategy}, stopped after {after:?} of {whole:?}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn services_roll_out_at_once_as_the_target_allows_after_what_they_depend_on() {
    let target = Faulty {
        deploy_takes: Duration::from_secs(1),
        at_once: 2,
        ..Faulty::default()
    };
    let service = |name: &str, depends_on: &[&str]| -> Service {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "plumb/v1",
            "kind": "Service",
            "name": name,
            "command": ["web"],
            "dependsOn": depends_on,
            "strategy": {"recreate": {}},
        }))
        .unwrap()
    };
    let mut desired = desired(service("api", &[]));
    for (name, depends_on) in [("db", &[][..]), ("web", &["api"][..]), ("worker", &["db"][..])] {
        let declared = service(name, depends_on);
        desired
            .services
            .insert(declared.name.clone(), std::sync::Arc::new(declared));
    }
    let dir = tempfile::tempdir().unwrap();
    let ledger = Recorder::new(Ledger::open(&dir.path().join("ledger.sqlite")).unwrap());
    let started = tokio::time::Instant::now();
    let intent = crate::reconcile::Intent {
        commit: "c1",
        signer: None,
        trigger: crate::ledger::Trigger::Commit,
        undo: &[],
        kept: &[],
        by: None,
    };
    let applied = crate::reconcile::apply(&target, &ledger, &desired, intent, None)
        .await
        .unwrap();
    assert_eq!(applied.outcome, crate::ledger::Outcome::Succeeded);
    let deploys = target.deploys.lock().unwrap().clone();
    let at = |event: &str| {
        deploys
            .iter()
            .position(|d| d == event)
            .unwrap_or_else(|| panic!("{event}: {deploys:?}"))
    };
    // Two at a time: api and db together; each dependant after what it depends on.
    assert!(at("deploy db") < at("deployed api"), "{deploys:?}");
    assert!(at("deploy web") > at("deployed api"), "{deploys:?}");
    assert!(at("deploy worker") > at("deployed db"), "{deploys:?}");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "two waves of one second: {deploys:?}"
    );
}
