//! A channel's sender: takes the channel's next message from the outbox (each environment's in
//! order), sends it, and records how it went — delivered, refused for good, or tried again
//! after an exponential backoff with jitter (1 s doubling to 5 minutes) or the receiver's
//! `Retry-After`. A message is given up 24 hours after it was queued. The sender runs beside
//! the workers and never holds a deployment up; what is still queued when the agent stops (or
//! is killed) is sent by the next start, with the same delivery id.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Channel, Sent};
use crate::error::chain;
use crate::ledger::{Ended, Queued, Recorder, now_ms};
use crate::metrics::Metrics;

/// The first wait before a retry.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The longest wait between tries.
const LONGEST_RETRY: Duration = Duration::from_secs(300);

/// How long a message is tried before it is given up.
const GIVE_UP_AFTER: chrono::Duration = chrono::Duration::hours(24);

/// How long a sender sleeps with nothing queued before it looks again anyway.
const IDLE: Duration = Duration::from_secs(60);

/// The wait before try `tries + 1`: 1 s doubling to 5 minutes, each ±20% at random.
pub fn backoff(tries: u32) -> Duration {
    let wait = FIRST_RETRY.saturating_mul(1u32.checked_shl(tries.min(16)).unwrap_or(u32::MAX));
    let wait = wait.min(LONGEST_RETRY);
    wait.mul_f64(0.8 + fastrand::f64() * 0.4)
}

/// Sends `channel`'s messages from `ledger`'s outbox until `cancel`; `bell` rings when new ones
/// are queued.
pub async fn run(
    channel: Arc<Channel>,
    ledger: Recorder,
    bell: Arc<Notify>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let name = channel.name.clone();
    loop {
        depth(&ledger, &name, &metrics).await;
        let next = {
            let name = name.clone();
            ledger.call(move |l| l.outbox_next(&name)).await
        };
        let wait = match next {
            Err(e) => {
                tracing::error!(channel = %name, error = %chain(&e), "Cannot read the outbox; trying again shortly.");
                Some(Duration::from_secs(5))
            }
            Ok(None) => Some(IDLE),
            Ok(Some(queued)) if queued.due > now_ms() => {
                Some(Duration::from_millis((queued.due - now_ms()).max(0) as u64))
            }
            Ok(Some(queued)) => {
                let done = tokio::select! {
                    _ = cancel.cancelled() => return,
                    done = attempt(&channel, &ledger, &metrics, queued) => done,
                };
                if let Err(e) = done {
                    tracing::error!(channel = %name, error = %chain(&e), "Cannot record a delivery in the outbox; it is tried again.");
                    Some(Duration::from_secs(5))
                } else {
                    None
                }
            }
        };
        if let Some(wait) = wait {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = bell.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Tries `queued` once and records how it went.
async fn attempt(
    channel: &Channel,
    ledger: &Recorder,
    metrics: &Metrics,
    queued: Queued,
) -> Result<(), crate::ledger::LedgerError> {
    let (name, id) = (channel.name.clone(), queued.id);
    let message = &queued.message;
    let expired = chrono::DateTime::parse_from_rfc3339(&queued.queued)
        .is_ok_and(|at| chrono::Utc::now() - at.with_timezone(&chrono::Utc) > GIVE_UP_AFTER);
    if expired {
        tracing::error!(channel = %name, delivery = %message.delivery, event = %message.event, environment = %message.environment, "Gave a notification up after 24 hours of tries.");
        metrics.notification(&name, "given_up");
        return ledger
            .call(move |l| l.outbox_ended(id, Ended::GivenUp, "tried for 24 hours"))
            .await;
    }
    match channel.send(message, ledger).await {
        Sent::Delivered(answer) => {
            tracing::info!(channel = %name, delivery = %message.delivery, event = %message.event, environment = %message.environment, "Notification delivered.");
            metrics.notification(&name, "delivered");
            ledger
                .call(move |l| l.outbox_ended(id, Ended::Delivered, &answer))
                .await
        }
        Sent::Rejected(answer) => {
            tracing::error!(channel = %name, delivery = %message.delivery, event = %message.event, environment = %message.environment, %answer, "The receiver refused a notification for good; it is not sent again.");
            metrics.notification(&name, "rejected");
            ledger.call(move |l| l.outbox_ended(id, Ended::Rejected, &answer)).await
        }
        Sent::Retry(answer, after) => {
            // The receiver's word, but never a tight loop (`Retry-After: 0`).
            let wait = after.map_or_else(|| backoff(queued.tries), |after| after.max(FIRST_RETRY));
            tracing::warn!(channel = %name, delivery = %message.delivery, event = %message.event, tries = queued.tries + 1, %answer, wait_ms = wait.as_millis() as u64, "A notification did not go; it is tried again.");
            metrics.notification(&name, "retried");
            let due = now_ms() + wait.as_millis() as i64;
            ledger.call(move |l| l.outbox_retry(id, due, &answer)).await
        }
    }
}

/// Publishes how many of `channel`'s messages wait.
async fn depth(ledger: &Recorder, channel: &str, metrics: &Metrics) {
    let name = channel.to_owned();
    if let Ok(queued) = ledger.call(move |l| l.outbox_queued(&name)).await {
        metrics.notification_queue(channel, queued);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_minutes_with_jitter() {
        for (tries, base) in [(0, 1.0), (1, 2.0), (3, 8.0), (8, 256.0), (9, 300.0), (40, 300.0)] {
            let wait = backoff(tries).as_secs_f64();
            assert!(wait >= base * 0.8 && wait <= base * 1.2, "try {tries}: {wait}");
        }
    }
}
