//! Health checks: whether a deployed slot is ready, by HTTP (path and expected status), TCP
//! (a connection is accepted) or exec (a command exits 0), each bounded by its timeout, judged
//! over consecutive results (success and failure thresholds), with a deadline after which the
//! deployment is declared failed. Targets resolve where to probe; this module only probes.

mod probe;

use std::time::Duration;

use tokio::time::Instant;

pub use probe::{Probe, ProbeError};

/// One named check with its thresholds.
#[derive(Clone, Debug)]
pub struct Check {
    /// The check's name, for messages.
    pub name: String,
    /// What to probe.
    pub probe: Probe,
    /// The longest one probe may take.
    pub timeout: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Wait before the first probe.
    pub initial_delay: Duration,
    /// Consecutive successes needed to call the check passing.
    pub success_threshold: u32,
    /// Consecutive failures after which the check is failing for good.
    pub failure_threshold: u32,
}

impl Check {
    /// The check a service declares, probing the slot whose ports `resolve` maps from a port
    /// name or number (`None`: the service's first port) to an address. `None` when the port
    /// cannot be resolved.
    pub fn from_spec(
        spec: &crate::spec::model::service::HealthCheck,
        resolve: impl Fn(Option<&str>) -> Option<std::net::SocketAddr>,
        env: &[(String, String)],
    ) -> Option<Check> {
        let probe = if let Some(http) = &spec.http {
            Probe::Http {
                addr: resolve(http.port.as_ref().map(|p| p.0.as_str()))?,
                path: http.path.clone(),
                status: http.status,
            }
        } else if let Some(tcp) = &spec.tcp {
            Probe::Tcp {
                addr: resolve(tcp.port.as_ref().map(|p| p.0.as_str()))?,
            }
        } else {
            Probe::Exec {
                command: spec.exec.as_ref()?.command.clone(),
                env: env.to_vec(),
            }
        };
        Some(Check {
            name: spec.name.as_str().to_owned(),
            probe,
            timeout: spec.timeout.0,
            interval: spec.interval.0,
            initial_delay: spec.initial_delay.0,
            success_threshold: spec.success_threshold,
            failure_threshold: spec.failure_threshold,
        })
    }
}

/// Why a slot is not healthy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unhealthy {
    /// A check failed `failure_threshold` times in a row.
    #[error("health check `{check}` failed {failures} times in a row; last: {last}")]
    Failing {
        /// The check.
        check: String,
        /// How many failures.
        failures: u32,
        /// The last failure.
        last: ProbeError,
    },
    /// The deadline passed before every check passed.
    #[error("health check `{check}` did not pass within {deadline:?}; last: {last}")]
    Deadline {
        /// The first check still not passing.
        check: String,
        /// The deadline.
        deadline: Duration,
        /// Its last failure.
        last: ProbeError,
    },
}

/// Runs every check until each has passed its success threshold; fails as soon as one reaches
/// its failure threshold, or when `deadline` passes. Checks run concurrently.
pub async fn wait_healthy(checks: &[Check], deadline: Duration) -> Result<(), Unhealthy> {
    let until = Instant::now() + deadline;
    let mut runs: Vec<_> = checks
        .iter()
        .map(|check| Box::pin(run(check, until, deadline)))
        .collect();
    let mut passed = vec![false; runs.len()];
    // The first failure ends the wait at once: the rollout need not sit out the deadline.
    std::future::poll_fn(|cx| {
        for (i, run) in runs.iter_mut().enumerate() {
            if passed[i] {
                continue;
            }
            match run.as_mut().poll(cx) {
                std::task::Poll::Ready(Ok(())) => passed[i] = true,
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => {}
            }
        }
        if passed.iter().all(|p| *p) {
            std::task::Poll::Ready(Ok(()))
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// Probes once per check; the result of a single health round (for drift and status).
pub async fn probe_all(checks: &[Check]) -> Vec<(String, Result<(), ProbeError>)> {
    let rounds = checks.iter().map(|check| async move {
        let result = check.probe.run(check.timeout).await;
        (check.name.clone(), result)
    });
    join_all(rounds).await
}

async fn run(check: &Check, until: Instant, deadline: Duration) -> Result<(), Unhealthy> {
    tokio::time::sleep_until((Instant::now() + check.initial_delay).min(until)).await;
    let (mut successes, mut failures) = (0u32, 0u32);
    let mut last = ProbeError::NotRun;
    loop {
        if Instant::now() >= until {
            return Err(Unhealthy::Deadline {
                check: check.name.clone(),
                deadline,
                last,
            });
        }
        match check.probe.run(check.timeout).await {
            Ok(()) => {
                successes += 1;
                failures = 0;
                if successes >= check.success_threshold.max(1) {
                    return Ok(());
                }
            }
            Err(e) => {
                failures += 1;
                successes = 0;
                last = e;
                if failures >= check.failure_threshold.max(1) {
                    return Err(Unhealthy::Failing {
                        check: check.name.clone(),
                        failures,
                        last,
                    });
                }
            }
        }
        tokio::time::sleep_until((Instant::now() + check.interval).min(until)).await;
    }
}

/// Awaits every future, concurrently, keeping their order.
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, future) in set.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(output) => outputs[i] = Some(output),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("every future finished")).collect()
}
