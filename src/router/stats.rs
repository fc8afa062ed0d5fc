//! Per-slot counters: answers by status class, failures to answer, and latency.

use std::time::Duration;

use serde::Serialize;

/// The class of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusClass {
    /// 1xx–3xx.
    Ok,
    /// 4xx: the client's fault, not the slot's.
    Client,
    /// 5xx, or no answer at all.
    Server,
}

/// What one slot answered.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SlotStats {
    /// Requests forwarded.
    pub requests: u64,
    /// Answers 1xx–3xx.
    pub ok: u64,
    /// Answers 4xx.
    pub client_errors: u64,
    /// Answers 5xx.
    pub server_errors: u64,
    /// Requests the replica never answered (connection refused, reset).
    pub unanswered: u64,
    /// Sum of latencies, for the mean.
    pub latency_total: Duration,
    /// The slowest answer.
    pub latency_max: Duration,
}

impl SlotStats {
    /// Counts one answer (`None`: no answer) and its latency.
    pub fn record(&mut self, status: Option<u16>, latency: Duration) {
        self.requests += 1;
        match status.map(classify) {
            Some(StatusClass::Ok) => self.ok += 1,
            Some(StatusClass::Client) => self.client_errors += 1,
            Some(StatusClass::Server) => self.server_errors += 1,
            None => self.unanswered += 1,
        }
        self.latency_total += latency;
        self.latency_max = self.latency_max.max(latency);
    }

    /// Adds another port's counters of the same slot.
    pub fn add(&mut self, other: &SlotStats) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        self.unanswered += other.unanswered;
        self.latency_total += other.latency_total;
        self.latency_max = self.latency_max.max(other.latency_max);
    }

    /// The share of requests the slot served without a server error or a missing answer;
    /// `None` before any request. Client errors count as served: the slot answered correctly.
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| (self.ok + self.client_errors) as f64 / self.requests as f64)
    }

    /// The mean latency; `None` before any request.
    pub fn mean_latency(&self) -> Option<Duration> {
        (self.requests > 0)
            .then(|| Duration::from_nanos((self.latency_total.as_nanos() / self.requests as u128) as u64))
    }
}

/// The class of a status code.
pub fn classify(status: u16) -> StatusClass {
    match status {
        100..=399 => StatusClass::Ok,
        400..=499 => StatusClass::Client,
        _ => StatusClass::Server,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_rate_counts_client_errors_as_served() {
        let mut stats = SlotStats::default();
        assert_eq!(stats.success_rate(), None);
        for status in [Some(200), Some(302), Some(404), Some(503), None] {
            stats.record(status, Duration::from_millis(10));
        }
        assert_eq!(
            (stats.ok, stats.client_errors, stats.server_errors, stats.unanswered),
            (2, 1, 1, 1)
        );
        assert_eq!(stats.success_rate(), Some(0.6));
        assert_eq!(stats.mean_latency(), Some(Duration::from_millis(10)));
    }
}
