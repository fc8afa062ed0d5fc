//! Stopping on a signal, for the commands that run until stopped (`plumb agent`, `plumb demo`):
//! the first SIGINT or SIGTERM cancels — a step in progress ends or is parked as interrupted
//! within ten seconds, then what the agent runs stops — and says so on the terminal; a second
//! one stops the process at once, as a crash would (the next start finishes or rolls back what
//! was left, and adopts or stops the replicas).

use tokio_util::sync::CancellationToken;

/// Cancels `stop` on the first SIGINT or SIGTERM and exits at once on the second; with `say`,
/// writes what it waits for to standard error in words (the demo's; the agent's log says it
/// already, and its standard error may be JSON lines). Must be called within a tokio runtime.
pub fn stop_on_signals(stop: CancellationToken, say: bool) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM can be handled");
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).expect("SIGINT can be handled");
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        if say {
            eprintln!(
                "\nStopping: a step in progress ends or is parked as interrupted (at most 10 s), then the services this agent runs stop. A second Ctrl-C stops at once."
            );
        }
        tracing::info!(
            "Stopping: a step in progress ends or is parked, then replicas stop; a second signal stops at once."
        );
        stop.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        if say {
            eprintln!("Stopped at once: the next start finishes or rolls back what was left.");
        }
        tracing::warn!("Stopped at once on a second signal: the next start finishes or rolls back what was left.");
        std::process::exit(130);
    });
}
