//! When to fetch without being asked: every polling interval (with jitter, so a fleet of agents
//! does not hit the git host in step), sooner when a cron schedule fires, and later — doubling
//! up to a ceiling, or as long as the host asked — after failures.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Reason, Schedule};

/// Polling settings.
#[derive(Clone, Debug)]
pub struct Poll {
    /// How often to fetch; `None` to rely on webhooks and schedules only.
    pub interval: Option<Duration>,
    /// The fraction of the interval by which each wait varies (0.1 = ±10 %).
    pub jitter: f64,
    /// The first wait after a failure; doubled for each further failure.
    pub backoff: Duration,
    /// The longest wait after failures.
    pub max_backoff: Duration,
    /// Cron schedules that also trigger a fetch.
    pub schedules: Vec<Schedule>,
}

impl Default for Poll {
    fn default() -> Self {
        Poll {
            interval: Some(Duration::from_secs(60)),
            jitter: 0.1,
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(600),
            schedules: Vec::new(),
        }
    }
}

/// The timer of one repository.
#[derive(Debug)]
pub struct Timer {
    poll: Poll,
    failures: u32,
    retry_after: Option<Duration>,
}

impl Timer {
    /// A timer with no failures yet.
    pub fn new(poll: Poll) -> Timer {
        Timer {
            poll,
            failures: 0,
            retry_after: None,
        }
    }

    /// Records a successful fetch: the normal interval resumes.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_after = None;
    }

    /// Records a failed fetch; `retry_after` is the host's own request, when it made one.
    pub fn failed(&mut self, retry_after: Option<Duration>) {
        self.failures = self.failures.saturating_add(1);
        self.retry_after = retry_after;
    }

    /// How long to wait from `now` before the next fetch, and why; `None` when nothing but a
    /// webhook will ever trigger one.
    pub fn next(&self, now: DateTime<Utc>) -> Option<(Duration, Reason)> {
        let polled = if self.failures > 0 {
            let doubled = self
                .poll
                .backoff
                .saturating_mul(1 << (self.failures - 1).min(16))
                .min(self.poll.max_backoff);
            let wait = self.retry_after.map_or(doubled, |asked| asked.max(doubled));
            Some((self.jittered(wait), Reason::Poll))
        } else {
            self.poll.interval.map(|i| (self.jittered(i), Reason::Poll))
        };
        let scheduled = self
            .poll
            .schedules
            .iter()
            .filter_map(|s| {
                let at = s.next_after(now)?;
                let wait = (at - now).to_std().unwrap_or_default();
                Some((wait, Reason::Schedule(s.as_str().to_owned())))
            })
            .min_by_key(|(wait, _)| *wait);
        match (polled, scheduled) {
            (Some(p), Some(s)) => Some(if s.0 < p.0 { s } else { p }),
            (p, s) => p.or(s),
        }
    }

    fn jittered(&self, wait: Duration) -> Duration {
        let spread = self.poll.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + spread * (2.0 * fastrand::f64() - 1.0);
        wait.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn timer(interval: u64) -> Timer {
        Timer::new(Poll {
            interval: Some(Duration::from_secs(interval)),
            jitter: 0.1,
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
            schedules: Vec::new(),
        })
    }

    #[test]
    fn interval_with_jitter_then_backoff_then_back() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap();
        let mut t = timer(100);
        let waits: Vec<Duration> = (0..200).map(|_| t.next(now).unwrap().0).collect();
        assert!(waits.iter().all(|w| (90.0..=110.0).contains(&w.as_secs_f64())));
        assert!(waits.iter().any(|w| *w != waits[0]), "jitter varies the wait");

        let in_range = |t: &Timer, secs: f64| {
            let w = t.next(now).unwrap().0.as_secs_f64();
            (secs * 0.9..=secs * 1.1).contains(&w)
        };
        t.failed(None);
        assert!(in_range(&t, 5.0));
        t.failed(None);
        assert!(in_range(&t, 10.0));
        for _ in 0..10 {
            t.failed(None);
        }
        assert!(in_range(&t, 60.0), "capped at the ceiling");
        t.failed(Some(Duration::from_secs(300)));
        assert!(in_range(&t, 300.0), "a host's retry-after is honoured");
        t.succeeded();
        assert!(in_range(&t, 100.0));
    }

    #[test]
    fn a_schedule_that_fires_first_wins() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 30).unwrap();
        let mut t = timer(3600);
        t.poll.schedules.push(Schedule::parse("*/5 * * * *").unwrap());
        let (wait, reason) = t.next(now).unwrap();
        assert_eq!(wait, Duration::from_secs(270));
        assert_eq!(reason, Reason::Schedule("*/5 * * * *".to_owned()));
        t.poll.interval = None;
        t.poll.schedules.clear();
        assert_eq!(t.next(now), None);
    }
}
