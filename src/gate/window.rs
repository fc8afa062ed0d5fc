//! Sync windows: whether changes may land now, and if not, which window holds them back and
//! when that ends. A window opens at each time its schedule names, read as local time in its
//! zone, and lasts its duration in real time: a window opening at 02:30 on the night clocks
//! spring over 02:30 opens when the zone's clock next reads a time the schedule names.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::spec::model::gates::{SyncWindow, WindowKind};
use crate::trigger::Schedule;

/// Why changes may not land now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    /// The windows holding changes back, in words.
    pub reason: String,
    /// When changes may land again, when known.
    pub opens: Option<DateTime<Utc>>,
    /// Whether `plumb sync` may still apply: every window holding changes back allows it.
    pub manual: bool,
}

/// Whether changes may land at `now` under `windows`; `None` when they may. Windows whose
/// schedule or zone cannot be read were refused when the commit was rendered, and are skipped.
pub fn closed(windows: &[SyncWindow], now: DateTime<Utc>) -> Option<Closed> {
    let denying: Vec<(&SyncWindow, DateTime<Utc>)> = windows
        .iter()
        .filter(|w| w.kind == WindowKind::Deny)
        .filter_map(|w| open_until(w, now).map(|end| (w, end)))
        .collect();
    if !denying.is_empty() {
        let reason = denying
            .iter()
            .map(|(w, end)| format!("the deny window `{}` is open until {}", describe(w), local(w, *end)))
            .collect::<Vec<_>>()
            .join("; ");
        return Some(Closed {
            reason,
            opens: denying.iter().map(|(_, end)| *end).max(),
            manual: denying.iter().all(|(w, _)| w.manual_sync),
        });
    }
    let allowing: Vec<&SyncWindow> = windows.iter().filter(|w| w.kind == WindowKind::Allow).collect();
    if allowing.is_empty() || allowing.iter().any(|w| open_until(w, now).is_some()) {
        return None;
    }
    let next = allowing
        .iter()
        .filter_map(|w| next_start(w, now).map(|start| (*w, start)))
        .min_by_key(|(_, start)| *start);
    let reason = match next {
        Some((w, start)) => format!(
            "outside every allow window; the next, `{}`, opens {}",
            describe(w),
            local(w, start)
        ),
        None => "outside every allow window, and none opens again".to_owned(),
    };
    Some(Closed {
        reason,
        opens: next.map(|(_, start)| start),
        manual: allowing.iter().all(|w| w.manual_sync),
    })
}

/// When `window`, open at `now`, closes; `None` when it is not open.
fn open_until(window: &SyncWindow, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let (schedule, zone) = parsed(window)?;
    let length = chrono::Duration::from_std(window.duration.0).ok()?;
    let from = (now - length).with_timezone(&zone);
    let start = schedule.next_after_in(&from)?.with_timezone(&Utc);
    (start <= now).then_some(start + length)
}

/// When `window` next opens after `now`.
fn next_start(window: &SyncWindow, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let (schedule, zone) = parsed(window)?;
    Some(schedule.next_after_in(&now.with_timezone(&zone))?.with_timezone(&Utc))
}

fn parsed(window: &SyncWindow) -> Option<(Schedule, Tz)> {
    Some((Schedule::parse(&window.schedule).ok()?, window.time_zone.parse().ok()?))
}

/// `window` in a few words: `0 22 * * 5, 8h, Europe/Berlin`.
fn describe(window: &SyncWindow) -> String {
    format!(
        "{}, {}, {}",
        window.schedule,
        humantime(window.duration.0),
        window.time_zone
    )
}

/// `at` as the window's zone reads it.
fn local(window: &SyncWindow, at: DateTime<Utc>) -> String {
    match window.time_zone.parse::<Tz>() {
        Ok(zone) => at.with_timezone(&zone).format("%Y-%m-%d %H:%M %Z").to_string(),
        Err(_) => at.format("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

/// A duration as people write it (`8h`, `1h30m`, `45s`).
fn humantime(duration: std::time::Duration) -> String {
    let mut seconds = duration.as_secs();
    let mut text = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            text.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    if text.is_empty() { "0s".to_owned() } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::model::scalar::Duration;
    use chrono::TimeZone;

    fn window(kind: WindowKind, schedule: &str, hours: u64, zone: &str, manual: bool) -> SyncWindow {
        SyncWindow {
            kind,
            schedule: schedule.to_owned(),
            duration: Duration::secs(hours * 3600),
            time_zone: zone.to_owned(),
            manual_sync: manual,
        }
    }

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    #[test]
    fn a_weekend_deny_window_holds_changes_back_in_its_zone() {
        // From Saturday 00:00 to Monday 00:00, Berlin time (CET, UTC+1 in December).
        let windows = [window(WindowKind::Deny, "0 0 * * SAT", 48, "Europe/Berlin", false)];
        // Friday 22:59 UTC is Friday 23:59 in Berlin: open.
        assert_eq!(closed(&windows, utc(2026, 12, 11, 22, 59)), None);
        // Friday 23:00 UTC is Saturday 00:00 in Berlin: held back until Monday 00:00 Berlin.
        let held = closed(&windows, utc(2026, 12, 11, 23, 0)).unwrap();
        assert_eq!(held.opens, Some(utc(2026, 12, 13, 23, 0)));
        assert!(held.reason.contains("until 2026-12-14 00:00 CET"), "{}", held.reason);
        assert!(!held.manual);
        assert_eq!(closed(&windows, utc(2026, 12, 13, 23, 0)), None);
    }

    #[test]
    fn allow_windows_let_changes_through_only_while_open() {
        let windows = [window(WindowKind::Allow, "0 22 * * *", 8, "Europe/Berlin", true)];
        // 12:00 Berlin: outside; the next opens at 22:00 Berlin.
        let held = closed(&windows, utc(2026, 12, 7, 11, 0)).unwrap();
        assert_eq!(held.opens, Some(utc(2026, 12, 7, 21, 0)));
        assert!(held.manual, "manualSync lets plumb sync through");
        // 23:00 and 05:59 Berlin: inside; 06:00: outside again.
        assert_eq!(closed(&windows, utc(2026, 12, 7, 22, 0)), None);
        assert_eq!(closed(&windows, utc(2026, 12, 8, 4, 59)), None);
        assert!(closed(&windows, utc(2026, 12, 8, 5, 0)).is_some());
        // A deny window in force wins over an open allow window.
        let both = [
            windows[0].clone(),
            window(WindowKind::Deny, "0 23 * * *", 1, "Europe/Berlin", false),
        ];
        let held = closed(&both, utc(2026, 12, 7, 22, 30)).unwrap();
        assert!(
            held.reason
                .starts_with("the deny window `0 23 * * *, 1h, Europe/Berlin`"),
            "{}",
            held.reason
        );
        assert!(!held.manual);
    }

    #[test]
    fn daylight_saving_changes_follow_the_zone() {
        // A window from 01:00 to 05:00 Berlin local time each night (4h real time).
        let windows = [window(WindowKind::Allow, "0 1 * * *", 4, "Europe/Berlin", false)];
        // Before the spring change (CET, UTC+1): it opens at 00:00 UTC.
        assert_eq!(closed(&windows, utc(2027, 3, 27, 0, 0)), None);
        assert!(closed(&windows, utc(2027, 3, 26, 23, 59)).is_some());
        // On 28 March 2027 clocks go from 02:00 to 03:00; 01:00 is CET still: 00:00 UTC. The
        // day after, it opens at 01:00 CEST, 23:00 UTC the day before.
        assert_eq!(closed(&windows, utc(2027, 3, 28, 0, 0)), None);
        let held = closed(&windows, utc(2027, 3, 28, 22, 59)).unwrap();
        assert_eq!(held.opens, Some(utc(2027, 3, 28, 23, 0)));
        assert!(held.reason.contains("2027-03-29 01:00 CEST"), "{}", held.reason);
        // In autumn (31 October 2027, 03:00 CEST back to 02:00 CET), 01:00 is still CEST:
        // 23:00 UTC; the night after, 01:00 CET is 00:00 UTC.
        assert_eq!(closed(&windows, utc(2027, 10, 30, 23, 0)), None);
        let held = closed(&windows, utc(2027, 10, 31, 23, 30)).unwrap();
        assert_eq!(held.opens, Some(utc(2027, 11, 1, 0, 0)));
        // A window named at a time the spring change skips (02:30) opens at the next time
        // the clock reads one the schedule names: the next day.
        let skipped = [window(WindowKind::Allow, "30 2 * * *", 1, "Europe/Berlin", false)];
        let held = closed(&skipped, utc(2027, 3, 27, 23, 0)).unwrap();
        assert!(held.opens.is_some());
    }
}
