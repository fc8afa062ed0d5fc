//! The ledger on a real SQLite file: attempts and their steps, rollback points, failed commits,
//! durability across reopening, and tampering detected by `plumb audit verify`.

use plumb::ledger::{Attempt, Ledger, Outcome};
use rusqlite::Connection;
use serde_json::json;

use crate::harness::plumb;

fn attempt(commit: &str) -> Attempt {
    Attempt {
        environment: "production".to_owned(),
        commit: commit.to_owned(),
        signer: Some("alice".to_owned()),
        strategy: "blueGreen".to_owned(),
        plan: json!({ "twikit-backend": "rollout" }),
        trigger: Default::default(),
        by: None,
    }
}

/// Records a successful attempt of `good` and a rolled-back attempt of `bad`.
fn record(ledger: &mut Ledger, good: &str, bad: &str) -> (i64, i64) {
    let first = ledger.begin(&attempt(good)).unwrap();
    for step in ["start green", "health", "switch traffic"] {
        ledger.step_started(first, step).unwrap();
        ledger.step_finished(first, step, None, None).unwrap();
    }
    ledger.finish(first, &Outcome::Succeeded).unwrap();
    let second = ledger.begin(&attempt(bad)).unwrap();
    ledger.step_started(second, "start green").unwrap();
    ledger.step_finished(second, "start green", None, None).unwrap();
    ledger.step_started(second, "health").unwrap();
    ledger
        .step_finished(second, "health", Some("GET /health answered 503"), None)
        .unwrap();
    ledger
        .finish(second, &Outcome::RolledBack("health check failed".to_owned()))
        .unwrap();
    (first, second)
}

#[test]
fn attempts_rollback_points_and_failed_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut ledger = Ledger::open(&path).unwrap();
    assert_eq!(ledger.rollback_point("production").unwrap(), None);
    let (first, second) = record(&mut ledger, "aaaa1111", "bbbb2222");

    assert_eq!(
        ledger.rollback_point("production").unwrap().as_deref(),
        Some("aaaa1111")
    );
    assert_eq!(ledger.rollback_point("staging").unwrap(), None);
    assert!(ledger.is_failed("production", "bbbb2222").unwrap());
    assert!(!ledger.is_failed("production", "aaaa1111").unwrap());
    assert!(!ledger.is_failed("staging", "bbbb2222").unwrap());

    // Reopened from the file: nothing lost.
    drop(ledger);
    let ledger = Ledger::open(&path).unwrap();
    let history = ledger.history("production", 10).unwrap();
    assert_eq!(history.iter().map(|r| r.id).collect::<Vec<_>>(), [second, first]);
    assert_eq!(
        history[0].outcome,
        Some(Outcome::RolledBack("health check failed".to_owned()))
    );
    let steps: Vec<(&str, Option<Option<&str>>)> = history[0]
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.error.as_ref().map(|e| e.as_deref())))
        .collect();
    assert_eq!(
        steps,
        [
            ("start green", Some(None)),
            ("health", Some(Some("GET /health answered 503")))
        ]
    );
    assert!(history[1].steps.iter().all(|s| s.finished.is_some()));
    let mode: String = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn an_unfinished_attempt_shows_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(&dir.path().join("ledger.sqlite")).unwrap();
    let id = ledger.begin(&attempt("cccc3333")).unwrap();
    ledger.step_started(id, "switch traffic").unwrap();
    let history = ledger.history("production", 1).unwrap();
    assert_eq!(history[0].outcome, None);
    assert_eq!(history[0].steps[0].name, "switch traffic");
    assert_eq!(history[0].steps[0].error, None, "started, not finished");
    assert_eq!(ledger.rollback_point("production").unwrap(), None);
}

#[test]
fn tampering_is_detected() {
    let state = tempfile::tempdir().unwrap();
    let path = state.path().join("ledger.sqlite");
    let mut ledger = Ledger::open(&path).unwrap();
    record(&mut ledger, "aaaa1111", "bbbb2222");
    drop(ledger);
    let dir = state.path().to_str().unwrap();

    let intact = plumb(&["audit", "verify", "--state", dir]);
    assert_eq!(intact.code, 0, "{}{}", intact.stdout, intact.stderr);
    assert!(intact.stdout.contains("intact: 14 entries"), "{}", intact.stdout);

    let history = plumb(&["history", "--env", "production", "--state", dir]);
    assert_eq!(history.code, 0, "{}", history.stderr);
    assert!(
        history
            .stdout
            .contains("bbbb2222 (alice, blueGreen): rolled back: health check failed"),
        "{}",
        history.stdout
    );
    assert!(
        history.stdout.contains("health: failed: GET /health answered 503"),
        "{}",
        history.stdout
    );

    // Someone rewrites history: the failed attempt becomes a success.
    let sql = Connection::open(&path).unwrap();
    let changed = sql
        .execute(
            "UPDATE entries SET body = '{\"result\":\"succeeded\"}' WHERE kind = 'outcome' AND seq = 14",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let tampered = plumb(&["audit", "verify", "--state", dir, "--output", "json"]);
    assert_eq!(tampered.code, 1, "{}", tampered.stdout);
    let json: serde_json::Value = serde_json::from_str(&tampered.stdout).unwrap();
    assert_eq!(
        (json["intact"].as_bool(), json["entry"].as_i64()),
        (Some(false), Some(14))
    );

    // Removing an entry from the middle is caught too.
    let path2 = state.path().join("second");
    std::fs::create_dir_all(&path2).unwrap();
    let mut ledger = Ledger::open(&path2.join("ledger.sqlite")).unwrap();
    record(&mut ledger, "aaaa1111", "bbbb2222");
    drop(ledger);
    Connection::open(path2.join("ledger.sqlite"))
        .unwrap()
        .execute("DELETE FROM entries WHERE seq = 5", [])
        .unwrap();
    let removed = plumb(&["audit", "verify", "--state", path2.to_str().unwrap()]);
    assert_eq!(removed.code, 1);
    assert!(
        removed.stdout.contains("TAMPERED: ledger entry 5"),
        "{}",
        removed.stdout
    );
}

#[test]
fn a_missing_ledger_is_an_error_not_an_empty_history() {
    let state = tempfile::tempdir().unwrap();
    let run = plumb(&[
        "history",
        "--env",
        "production",
        "--state",
        state.path().to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no ledger at"), "{}", run.stderr);
}

#[test]
fn interrupted_and_healing_attempts_do_not_fail_their_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(&dir.path().join("ledger.sqlite")).unwrap();
    let applied = ledger.begin(&attempt("aaaa1111")).unwrap();
    ledger.finish(applied, &Outcome::Succeeded).unwrap();
    let heal = ledger
        .begin(&Attempt {
            trigger: plumb::ledger::Trigger::Heal,
            by: None,
            ..attempt("aaaa1111")
        })
        .unwrap();
    ledger
        .finish(heal, &Outcome::Failed("a replica cannot start".to_owned()))
        .unwrap();
    let killed = ledger.begin(&attempt("bbbb2222")).unwrap();
    assert_eq!(ledger.unfinished("production").unwrap(), [killed]);
    ledger.finish(killed, &Outcome::Interrupted).unwrap();
    assert!(ledger.unfinished("production").unwrap().is_empty());
    assert!(!ledger.is_failed("production", "aaaa1111").unwrap());
    assert!(!ledger.is_failed("production", "bbbb2222").unwrap());
    assert_eq!(ledger.applied_commits("production", 10).unwrap(), ["aaaa1111"]);
}

#[test]
fn a_record_carried_to_a_fresh_ledger_keeps_rollback_points_failures_and_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = Ledger::open(&dir.path().join("old.sqlite")).unwrap();
    // Another environment's attempt comes first, so numbers differ between the two ledgers.
    let mut other = attempt("c0");
    other.environment = "staging".to_owned();
    let unrelated = old.begin(&other).unwrap();
    old.finish(unrelated, &Outcome::Succeeded).unwrap();
    record(&mut old, "c1", "c2");
    let migrated = old.begin(&attempt("c3")).unwrap();
    old.migration_started(migrated, "db", "v1").unwrap();
    old.migration_finished(migrated, "db", None).unwrap();
    old.finish(migrated, &Outcome::Succeeded).unwrap();
    // The agent was lost in the middle of this one.
    let unfinished = old.begin(&attempt("c4")).unwrap();
    old.migration_started(unfinished, "db", "v1").unwrap();

    let carried = old.carry("production", 30).unwrap();
    // Through the cluster: JSON there and back.
    let carried: plumb::ledger::Carried = serde_json::from_str(&serde_json::to_string(&carried).unwrap()).unwrap();
    let mut fresh = Ledger::open(&dir.path().join("fresh.sqlite")).unwrap();
    assert_eq!(fresh.adopt(&carried).unwrap(), 4);
    assert_eq!(fresh.rollback_point("production").unwrap().as_deref(), Some("c3"));
    assert_eq!(fresh.applied_commits("production", 10).unwrap(), ["c3", "c1"]);
    assert!(fresh.is_failed("production", "c2").unwrap());
    assert_eq!(
        fresh.migration_state("production", "db", "c3").unwrap().as_deref(),
        Some("succeeded")
    );
    assert_eq!(
        fresh.migration_state("production", "db", "c4").unwrap().as_deref(),
        Some("started"),
        "a migration under way when the agent was lost is not run twice"
    );
    assert_eq!(fresh.unfinished("production").unwrap().len(), 1);
    let history = fresh.history("production", 10).unwrap();
    assert_eq!(history.len(), 4);
    assert_eq!(history[2].steps.len(), 2, "the steps come along");
    assert!(
        fresh.history("staging", 10).unwrap().is_empty(),
        "only the environment carried"
    );
    assert!(fresh.verify().unwrap().is_ok(), "the chain holds");

    // A ledger that already holds the environment takes nothing over.
    assert_eq!(fresh.adopt(&carried).unwrap(), 0);
    // Only the newest attempts travel.
    assert_eq!(
        old.carry("production", 2)
            .unwrap()
            .entries
            .iter()
            .filter(|e| e.kind == "attempt")
            .count(),
        2
    );
}
