//! Canary: the new version takes a growing share of traffic, step by step; each step is held for
//! its pause while the router counts the new slot's answers. The rollout aborts — all traffic
//! back to the running version, the new slot retired — as soon as the new slot has answered
//! `minRequests` requests with a success rate under the threshold, or fails a health check.
//! A step never passes unmeasured: one that saw fewer than `minRequests` answers by the end of
//! its pause is held longer, until it has them, and fails once the service's
//! `progressDeadline` (counted from the step's start) passes without them. `successThreshold:
//! 0` judges by health alone. With a Prometheus gate, each step ends by asking Prometheus for
//! the new slot's success rate too; on a target that does not count answers (kubernetes) that
//! is the only judge of the rate.

use std::time::Duration;

use super::prometheus::{self, Subject, success_rate};
use super::{Rollout, RolloutError};
use crate::health::probe_all;
use crate::spec::model::Service;
use crate::spec::model::service::Canary;
use crate::target::{Slot, Target};

/// How often a step's counters and health are looked at during its pause.
const ANALYSIS_INTERVAL: Duration = Duration::from_millis(100);

impl Rollout<'_> {
    pub(super) async fn canary(
        &mut self,
        service: &Service,
        version: &str,
        live: Option<Slot>,
        settings: &Canary,
    ) -> Result<Slot, RolloutError> {
        let Some(live) = live else {
            // Nothing serves yet: there is no old version to compare with or fall back to.
            return self.in_place(service, version, None).await;
        };
        let name = service.name.as_str();
        let next = live.other();
        self.deploy(&format!("start {version} in {}", next.name()), service, next, version)
            .await?;
        if let Err(e) = self.health(service, next).await {
            self.abort(name, live, next).await?;
            return Err(e);
        }
        for step in &settings.steps {
            let weight = u32::from(step.weight.min(100));
            self.step(&format!("shift {weight}% to {}", next.name()), async {
                // A shift that failed sends the new version no traffic: the canary aborts.
                self.runtime
                    .route(name, &[(next, weight), (live, 100 - weight)])
                    .await?;
                self.runtime.reset_traffic(name).await;
                Ok(())
            })
            .await?;
            let runtime = self.runtime;
            let attempt = self.attempt;
            let (environment, _) = self.ledger.call(move |l| l.attempt_key(attempt)).await?;
            let verdict = self
                .step(&format!("analyse {weight}% for {:?}", step.pause.0), async {
                    analyse(runtime, service, next, step.pause.0, settings).await?;
                    judge_by_prometheus(service, next, &environment, settings).await
                })
                .await;
            if let Err(e) = verdict {
                self.abort(name, live, next).await?;
                return Err(e);
            }
        }
        self.route(&format!("promote {}", next.name()), name, &[(next, 100), (live, 0)])
            .await?;
        self.retire(name, live).await?;
        Ok(next)
    }

    /// All traffic back to `live`, `next` retired.
    async fn abort(&mut self, name: &str, live: Slot, next: Slot) -> Result<(), RolloutError> {
        self.route(
            &format!("abort: all traffic back to {}", live.name()),
            name,
            &[(live, 100), (next, 0)],
        )
        .await?;
        self.retire(name, next).await
    }
}

/// Asks the canary's Prometheus gate, when it has one, for the new slot's success rate.
async fn judge_by_prometheus(
    service: &Service,
    slot: Slot,
    environment: &str,
    settings: &Canary,
) -> Result<(), RolloutError> {
    let Some(gate) = &settings.prometheus else {
        return Ok(());
    };
    let name = service.name.as_str();
    let subject = Subject {
        service: name,
        slot: slot.name(),
        environment,
    };
    let failed = |reason: String| RolloutError::Analysis {
        service: name.to_owned(),
        reason,
    };
    match success_rate(gate, &subject).await.map_err(failed)? {
        Some(rate) if rate < settings.success_threshold => Err(failed(format!(
            "Prometheus reports a success rate of {rate:.1}%, under {}% (`{}`)",
            settings.success_threshold,
            prometheus::query(gate, &subject)
        ))),
        Some(_) => Ok(()),
        None if settings.min_requests == 0 => Ok(()),
        None => Err(failed(format!(
            "Prometheus has no data for `{}`",
            prometheus::query(gate, &subject)
        ))),
    }
}

/// Watches the new slot for `pause`: its success rate on every port, and its health.
async fn analyse(
    runtime: &dyn Target,
    service: &Service,
    slot: Slot,
    pause: Duration,
    settings: &Canary,
) -> Result<(), RolloutError> {
    let name = service.name.as_str();
    let started = tokio::time::Instant::now();
    let until = started + pause;
    // Past the pause, a step still short of `minRequests` answers waits for them this long.
    let deadline = started + pause.max(service.progress_deadline.0);
    let judged = settings.success_threshold > 0.0 && runtime.capabilities().counts_answers;
    let checks = runtime.checks(name, slot).await?;
    loop {
        let stats = runtime.traffic(name).await.get(slot.name()).cloned();
        let answered = stats.as_ref().map_or(0, |s| s.requests);
        if let Some(stats) = stats.filter(|_| judged) {
            let rate = stats.success_rate().unwrap_or(1.0) * 100.0;
            if stats.requests >= u64::from(settings.min_requests) && rate < settings.success_threshold {
                return Err(RolloutError::Analysis {
                    service: name.to_owned(),
                    reason: format!(
                        "success rate {rate:.1}% over {} requests is under {}%",
                        stats.requests, settings.success_threshold
                    ),
                });
            }
        }
        for (check, result) in probe_all(&checks).await {
            if let Err(e) = result {
                return Err(RolloutError::Analysis {
                    service: name.to_owned(),
                    reason: format!("health check `{check}` failed: {e}"),
                });
            }
        }
        let now = tokio::time::Instant::now();
        let measured = !judged || answered >= u64::from(settings.min_requests);
        if now >= until && measured {
            return Ok(());
        }
        if now >= deadline {
            return Err(RolloutError::Analysis {
                service: name.to_owned(),
                reason: format!(
                    "the canary answered {answered} requests within {:?}, fewer than the {} needed to judge it (`minRequests`); send it traffic, lower `minRequests`, or set `successThreshold: 0` to judge it by health alone",
                    deadline - started,
                    settings.min_requests
                ),
            });
        }
        let next = if now < until { until } else { deadline };
        tokio::time::sleep(ANALYSIS_INTERVAL.min(next - now)).await;
    }
}
