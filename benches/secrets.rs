//! Encrypted values: opening one (`ENC[age,…]`) in-process, beside the age tool opening the
//! same ciphertext (`age -d`, one process per value, as a shell pipeline would); sealing one;
//! and what opening every value adds to rendering a 1,000-service repository (2,000 values ×
//! 3 environments), in-process and as `plumb validate --identity`.
//!
//! Run: `cargo bench --bench secrets` (needs the age tool for the side-by-side figure).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use plumb::source::WorkTree;
use plumb::spec::sealed::{self, Keyring};

const SERVICES: usize = 1_000;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (identity, recipient) = sealed::generate();
    let identity_file = dir.path().join("agent.key");
    std::fs::write(&identity_file, format!("{}\n", identity.expose())).unwrap();
    let recipients = [recipient];

    // Sealing and opening one value.
    let values: Vec<String> = (0..200)
        .map(|i| sealed::seal(&recipients, &format!("password-{i}")).unwrap())
        .collect();
    let sealing = median(
        (0..200)
            .map(|i| {
                let start = Instant::now();
                sealed::seal(&recipients, &format!("password-{i}")).unwrap();
                start.elapsed()
            })
            .collect(),
    );
    let opening = median(
        values
            .iter()
            .map(|value| {
                // A keyring of its own: nothing comes from the cache.
                let keys = Keyring::read(std::slice::from_ref(&identity_file)).unwrap();
                let start = Instant::now();
                keys.open(value).unwrap();
                start.elapsed()
            })
            .collect(),
    );
    let keys = Keyring::read(std::slice::from_ref(&identity_file)).unwrap();
    keys.open(&values[0]).unwrap();
    let cached = median(
        (0..200)
            .map(|_| {
                let start = Instant::now();
                keys.open(&values[0]).unwrap();
                start.elapsed()
            })
            .collect(),
    );
    println!("seal one value:                 {sealing:>10.1?}");
    println!("open one value (cold):          {opening:>10.1?}");
    println!("open one value (opened before): {cached:>10.1?}");
    let age = Command::new("age")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if age {
        let peer = median(
            values
                .iter()
                .take(50)
                .map(|value| {
                    let body = value.strip_prefix("ENC[age,").unwrap().strip_suffix(']').unwrap();
                    let bytes = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
                    let start = Instant::now();
                    let mut child = Command::new("age")
                        .arg("-d")
                        .arg("-i")
                        .arg(&identity_file)
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .spawn()
                        .unwrap();
                    child.stdin.take().unwrap().write_all(&bytes).unwrap();
                    let output = child.wait_with_output().unwrap();
                    assert!(output.status.success());
                    start.elapsed()
                })
                .collect(),
        );
        println!(
            "age -d, one process per value:  {peer:>10.1?}  → plumb is {:.0}× faster per value",
            peer.as_secs_f64() / opening.as_secs_f64()
        );
    } else {
        println!("age -d: not installed, side by side not run");
    }

    // A repository with two encrypted values per service.
    let repo = dir.path().join("repo");
    write_repo(&repo, &recipients);
    let tree = WorkTree::new(&repo);
    let sealed_render = median(
        (0..5)
            .map(|_| {
                let start = Instant::now();
                let rendered = plumb::spec::render(&tree, None).unwrap();
                assert!(rendered.is_valid());
                start.elapsed()
            })
            .collect(),
    );
    let opened_render = median(
        (0..5)
            .map(|_| {
                // A new keyring each time: every value is opened, none comes from a cache.
                let keys = Keyring::read(std::slice::from_ref(&identity_file)).unwrap();
                let start = Instant::now();
                let rendered = plumb::spec::render_opening(&tree, None, &keys, &Default::default()).unwrap();
                assert!(rendered.is_valid(), "{:?}", rendered.diagnostics.first());
                start.elapsed()
            })
            .collect(),
    );
    println!(
        "render {SERVICES} services × 3 environments: values sealed {sealed_render:.1?}, opened {opened_render:.1?} (+{:.1?} for {} values)",
        opened_render.saturating_sub(sealed_render),
        SERVICES * 2
    );
    let process = |identity: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_plumb"));
        command.args(["validate", "--repo"]).arg(&repo);
        if identity {
            command.arg("--identity").arg(&identity_file);
        }
        median(
            (0..3)
                .map(|_| {
                    let start = Instant::now();
                    let status = command.stdout(Stdio::null()).status().unwrap();
                    assert!(status.success());
                    start.elapsed()
                })
                .collect(),
        )
    };
    println!(
        "plumb validate: {:.1?}; with --identity (every value opened): {:.1?}",
        process(false),
        process(true)
    );
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn write_repo(root: &Path, recipients: &[String]) {
    write(
        &root.join("plumb.yaml"),
        "apiVersion: plumb/v1\nkind: Repository\nenvironments: [development, staging, production]\n",
    );
    for i in 0..SERVICES {
        let token = sealed::seal(recipients, &format!("token-{i}")).unwrap();
        let password = sealed::seal(recipients, &format!("password-{i}")).unwrap();
        write(
            &root.join(format!("services/svc-{i}.yaml")),
            &format!(
                "apiVersion: plumb/v1\nkind: Service\nname: svc-{i}\nimage: registry.example.com/svc-{i}:1\nports:\n  - {{name: http, port: 8080}}\nenv:\n  - {{name: API_TOKEN, value: \"{token}\"}}\nconfig:\n  values:\n    database: {{host: db-{i}.internal, password: \"{password}\"}}\n"
            ),
        );
    }
    for env in ["development", "staging", "production"] {
        write(
            &root.join(format!("environments/{env}.yaml")),
            &format!(
                "apiVersion: plumb/v1\nkind: Environment\nname: {env}\ntarget:\n  kubernetes: {{namespace: {env}}}\n"
            ),
        );
    }
}
