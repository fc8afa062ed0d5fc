//! Cron schedules in the syntax people write: five fields (`*/5 * * * *`, `0 9 * * MON-FRI`),
//! day-of-week numbers from 0 (Sunday) to 7 (Sunday again), and the `@hourly`-style shorthands.
//! The `cron` crate wants a seconds field first, numbers Sunday as 1, and fires only when both
//! day-of-month and day-of-week match; this module translates, and keeps cron's usual rule that
//! a schedule restricting both days fires when *either* matches.

use std::str::FromStr;

use chrono::{DateTime, Utc};

/// A parsed cron schedule, evaluated in UTC.
#[derive(Clone, Debug)]
pub struct Schedule {
    text: String,
    /// One schedule, or two (day-of-month only, day-of-week only) fired at the earlier.
    inner: Vec<cron::Schedule>,
}

/// Why a cron expression was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{expression}` is not a cron schedule: {reason} (expected five fields: minute hour day-of-month month day-of-week, e.g. `*/5 * * * *`)"
)]
pub struct ScheduleError {
    expression: String,
    reason: String,
}

impl Schedule {
    /// Parses a five-field expression or a shorthand (`@hourly`, `@daily`, `@weekly`, `@monthly`,
    /// `@yearly`).
    pub fn parse(expression: &str) -> Result<Schedule, ScheduleError> {
        let error = |reason: String| ScheduleError {
            expression: expression.to_owned(),
            reason,
        };
        let trimmed = expression.trim();
        let translated = if trimmed.starts_with('@') {
            vec![trimmed.to_owned()]
        } else {
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            let [minute, hour, day, month, weekday] = fields[..] else {
                return Err(error(format!("it has {} fields", fields.len())));
            };
            let weekday = weekdays(weekday).map_err(error)?;
            if day != "*" && weekday != "*" {
                vec![
                    format!("0 {minute} {hour} {day} {month} *"),
                    format!("0 {minute} {hour} * {month} {weekday}"),
                ]
            } else {
                vec![format!("0 {minute} {hour} {day} {month} {weekday}")]
            }
        };
        let inner = translated
            .iter()
            .map(|t| cron::Schedule::from_str(t).map_err(|e| error(e.to_string())))
            .collect::<Result<_, _>>()?;
        Ok(Schedule {
            text: trimmed.to_owned(),
            inner,
        })
    }

    /// The first time strictly after `after` the schedule fires, if it ever does again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_after_in(&after)
    }

    /// The first time strictly after `after` the schedule fires, reading its fields as local
    /// times of `after`'s zone.
    pub fn next_after_in<Z: chrono::TimeZone>(&self, after: &DateTime<Z>) -> Option<DateTime<Z>> {
        self.inner.iter().filter_map(|s| s.after(after).next()).min()
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Rewrites day-of-week numbers (0–7, Sunday = 0 or 7) as names, leaving steps alone.
fn weekdays(field: &str) -> Result<String, String> {
    const NAMES: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
    let name = |part: &str| -> Result<String, String> {
        match part.parse::<usize>() {
            Ok(n) if n < NAMES.len() => Ok(NAMES[n].to_owned()),
            Ok(n) => Err(format!("day of week {n} is out of range 0-7")),
            Err(_) => Ok(part.to_owned()),
        }
    };
    let items: Result<Vec<String>, String> = field
        .split(',')
        .map(|item| {
            let (range, step) = match item.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (item, None),
            };
            let range = match range.split_once('-') {
                // cron counts Sunday as the first day: a range up to Sunday-as-7 is split.
                Some((from, "7")) if step.is_none() && from != "0" => format!("{}-SAT,SUN", name(from)?),
                Some((from, to)) => format!("{}-{}", name(from)?, name(to)?),
                None => name(range)?,
            };
            Ok(match step {
                Some(step) => format!("{range}/{step}"),
                None => range,
            })
        })
        .collect();
    Ok(items?.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    fn next(expression: &str, after: DateTime<Utc>) -> DateTime<Utc> {
        Schedule::parse(expression).unwrap().next_after(after).unwrap()
    }

    #[test]
    fn five_fields_and_sunday_zero() {
        // Thursday 2026-11-26 10:07:30 UTC.
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 10, 7, 30).unwrap();
        assert_eq!(
            next("*/5 * * * *", now),
            Utc.with_ymd_and_hms(2026, 11, 26, 10, 10, 0).unwrap()
        );
        let weekday = next("0 9 * * 1-5", now);
        assert_eq!((weekday.weekday(), weekday.hour()), (Weekday::Fri, 9));
        assert_eq!(next("0 9 * * 0", now).weekday(), Weekday::Sun);
        assert_eq!(next("0 9 * * 7", now).weekday(), Weekday::Sun);
        assert_eq!(next("0 9 * * MON-FRI", now).weekday(), Weekday::Fri);
        assert_eq!(
            next("@hourly", now),
            Utc.with_ymd_and_hms(2026, 11, 26, 11, 0, 0).unwrap()
        );
    }

    #[test]
    fn refusals_say_what_is_expected() {
        let error = Schedule::parse("* * *").unwrap_err().to_string();
        assert!(
            error.contains("it has 3 fields") && error.contains("five fields"),
            "{error}"
        );
        let error = Schedule::parse("0 9 * * 8").unwrap_err().to_string();
        assert!(error.contains("out of range 0-7"), "{error}");
        assert!(Schedule::parse("61 * * * *").is_err());
    }
}
