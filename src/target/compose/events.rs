//! The engine's events about an environment's containers: a replica that died, was killed for
//! memory, or turned unhealthy rings the environment's drift bell, so the worker looks for drift
//! now instead of at its next tick; a replica that flaps rings at most once per second
//! (`QuietBell`). The stream is opened again when the engine drops it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::container::ENVIRONMENT;
use crate::target::bell::QuietBell;

/// Whether an event's action means a replica stopped serving.
fn stopped_serving(action: &str) -> bool {
    action == "die" || action == "oom" || action == "health_status: unhealthy"
}

/// Follows the engine's container events of `environment` until `cancel`, ringing `bell`.
pub async fn follow(docker: Docker, environment: String, bell: Arc<Notify>, cancel: CancellationToken) {
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        ("label".to_owned(), vec![format!("{ENVIRONMENT}={environment}")]),
    ]);
    let mut retry = Duration::from_secs(1);
    let mut bell = QuietBell::new(bell);
    loop {
        let options = EventsOptionsBuilder::new().filters(&filters).build();
        let mut events = docker.events(Some(options));
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = bell.held() => continue,
                event = events.next() => event,
            };
            match event {
                Some(Ok(event)) => {
                    retry = Duration::from_secs(1);
                    let action = event.action.unwrap_or_default();
                    if !stopped_serving(&action) {
                        continue;
                    }
                    let name = event
                        .actor
                        .and_then(|a| a.attributes)
                        .and_then(|a| a.get("name").cloned())
                        .unwrap_or_default();
                    tracing::info!(environment = %environment, container = %name, %action, "A replica stopped serving.");
                    bell.ring();
                }
                Some(Err(e)) => {
                    tracing::warn!(environment = %environment, error = %e, "The engine's event stream failed; opening it again.");
                    break;
                }
                None => break,
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::stopped_serving;

    #[test]
    fn only_replicas_that_stop_serving_ring() {
        assert!(stopped_serving("die") && stopped_serving("oom"));
        assert!(stopped_serving("health_status: unhealthy"));
        assert!(!stopped_serving("health_status: healthy") && !stopped_serving("start"));
    }
}
