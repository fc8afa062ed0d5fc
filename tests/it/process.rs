//! Supervised replicas as real child processes: output in the log, restarts with backoff after
//! a crash, SIGTERM then SIGKILL to the whole process group, no leaked environment.

use std::path::Path;
use std::time::Duration;

use plumb::target::local::process::{Backoff, Replica, Spec, State};

use plumb::lab::gone;

fn spec(log: &Path, script: &str) -> Spec {
    Spec {
        command: vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()],
        env: vec![("PLUMB_SLOT".to_owned(), "blue".to_owned())],
        dir: None,
        log: log.to_owned(),
    }
}

fn quick() -> Backoff {
    Backoff {
        first: Duration::from_millis(20),
        max: Duration::from_millis(100),
        reset_after: Duration::from_secs(60),
        grace: Duration::from_millis(300),
    }
}

/// The live (not zombie) processes of process group `pgid`, from `/proc`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command name in parentheses: state, ppid, pgrp, …
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        if fields.get(2) == Some(&pgid.to_string().as_str()) && fields.first() != Some(&"Z") {
            members.push(pid);
        }
    }
    members
}

/// Waits (bounded: signals are delivered asynchronously) until the group has no live process.
async fn group_gone(pgid: u32) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !group_members(pgid).is_empty() {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Waits (bounded) until `path` contains `text`.
async fn log_contains(path: &Path, text: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let content = std::fs::read_to_string(path).unwrap_or_default();
        if content.contains(text) {
            return content;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{text:?} never appeared in {content:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn runs_logs_and_stops_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs/api-blue-0.log");
    // The shell ignores SIGTERM and has a child of its own: both must go.
    let mut replica = Replica::start(
        spec(
            &log,
            "trap '' TERM; echo started $PLUMB_SLOT; sleep 30 & wait; sleep 30",
        ),
        quick(),
    );
    let State::Running { pid, .. } = replica.wait_for(|s| matches!(s, State::Running { .. })).await else {
        panic!()
    };
    log_contains(&log, "started blue").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while group_members(pid).len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the shell and its sleep: {:?}",
            group_members(pid)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    replica.stop().await;
    assert!(
        group_gone(pid).await,
        "no process of the group survives the stop: {:?}",
        group_members(pid)
    );
}

#[tokio::test]
async fn a_crashing_process_is_restarted_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("crash.log");
    let mut replica = Replica::start(spec(&log, "echo run; exit 3"), quick());
    let state = replica
        .wait_for(|s| matches!(s, State::Running { restarts, .. } if *restarts >= 2))
        .await;
    assert!(matches!(state, State::Running { .. }), "{state:?}");
    let content = log_contains(&log, "plumb: the process exited (exit status: 3)").await;
    assert!(content.matches("run\n").count() >= 2, "{content}");
    replica.stop().await;
}

#[tokio::test]
async fn only_declared_variables_reach_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("env.log");
    let mut replica = Replica::start(spec(&log, "env; echo END; sleep 30"), quick());
    replica.wait_for(|s| matches!(s, State::Running { .. })).await;
    let content = log_contains(&log, "END").await;
    let allowed = [
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TZ",
        "TMPDIR",
        "USER",
        "PLUMB_SLOT",
        "PWD",
        "SHLVL",
        "_",
    ];
    for line in content.lines().take_while(|l| *l != "END") {
        let key = line.split('=').next().unwrap();
        assert!(allowed.contains(&key), "{key} leaked into the process");
    }
    assert!(content.contains("PLUMB_SLOT=blue"));
    replica.stop().await;
}

#[tokio::test]
async fn a_missing_program_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let mut replica = Replica::start(
        Spec {
            command: vec!["/no/such/program".to_owned()],
            env: Vec::new(),
            dir: None,
            log: dir.path().join("missing.log"),
        },
        quick(),
    );
    let state = replica.wait_for(|s| matches!(s, State::Failed(_))).await;
    let State::Failed(message) = state else {
        panic!("{state:?}")
    };
    assert!(message.contains("cannot start `/no/such/program`"), "{message}");
    replica.stop().await;
}

#[tokio::test]
async fn what_a_killed_agent_left_running_is_swept() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().display().to_string();
    let log = dir.path().join("r.log");
    let mut replica = Replica::start(
        Spec {
            env: vec![("PLUMB_RUN".to_owned(), marker.clone())],
            // A shell with a child of its own: the whole group goes.
            ..spec(&log, "sleep 600 & echo child $!; wait")
        },
        quick(),
    );
    let State::Running { pid, .. } = replica.wait_for(|s| matches!(s, State::Running { .. })).await else {
        unreachable!()
    };
    // The shell says when its child runs.
    log_contains(&log, "child ").await;
    assert_eq!(plumb::target::local::process::sweep("PLUMB_RUN", "elsewhere"), 0);
    assert!(plumb::target::local::process::sweep("PLUMB_RUN", &marker) >= 1);
    assert!(gone(pid));
    assert_eq!(
        plumb::target::local::process::sweep("PLUMB_RUN", &marker),
        0,
        "the shell's child went with its group"
    );
    replica.stop().await;
}
