//! Servers the tests start once per test process (a Docker Engine, a Kubernetes control plane):
//! each gets a parent-death signal, so it dies with the test process and nothing outlives the
//! run.

use std::process::Command;

/// Spawns `command` so that it receives SIGTERM when this test process ends; returns its pid.
pub fn spawn_tied(mut command: Command) -> std::io::Result<u32> {
    // SAFETY: prctl in the child before exec; it only asks for a signal when the parent dies.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    // The parent-death signal follows the thread that spawned the child: a thread that lives as
    // long as the process spawns it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let spawned = command.spawn();
        let failed = spawned.is_err();
        let _ = tx.send(spawned.map(|c| c.id()));
        if !failed {
            loop {
                std::thread::park();
            }
        }
    });
    rx.recv().expect("the spawning thread answers")
}

/// Whether a process is gone (or a zombie waiting for its parent).
pub fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z"))
}
