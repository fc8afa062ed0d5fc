//! Fetching over SSH from a real OpenSSH server on loopback: the client key authenticates, and
//! the server's host key must be listed in `known_hosts` — unknown hosts and changed keys are
//! refused unless trust-on-first-use is configured (and a changed key is refused even then).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plumb::source::{Auth, Cache, Remote, SourceError, Timeouts, TrackedRef};

use crate::harness::TestRepo;

const SSHD: &str = "/usr/sbin/sshd";

/// An `sshd` on a free loopback port, accepting one generated client key.
struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
}

impl Sshd {
    fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (.ci/run does) to run the SSH tests"
        );
        let dir = tempfile::tempdir().unwrap();
        keygen(&dir.path().join("host_key"));
        keygen(&dir.path().join("client_key"));
        std::fs::copy(dir.path().join("client_key.pub"), dir.path().join("authorized_keys")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
             PidFile {d}/sshd.pid\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n",
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("sshd_config"), config).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-f")
            .arg(dir.path().join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Sshd { child, port, dir }
    }

    /// A `known_hosts` line for this server, with `key_file`'s public key.
    fn known_hosts_line(&self, key_file: &str) -> String {
        let public = std::fs::read_to_string(self.dir.path().join(key_file)).unwrap();
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
        format!("[127.0.0.1]:{} {kind} {key}\n", self.port)
    }

    fn remote(&self, repo: &Path, known_hosts: &str, accept_unknown_hosts: bool) -> Remote {
        let file = self.dir.path().join(format!("known_hosts_{}", fastrand::u32(..)));
        std::fs::write(&file, known_hosts).unwrap();
        let user = std::env::var("USER").unwrap_or_else(|_| "root".to_owned());
        Remote {
            url: format!("ssh://{user}@127.0.0.1:{}{}", self.port, repo.display()),
            auth: Auth::Ssh {
                private_key: self.dir.path().join("client_key"),
                passphrase: None,
                known_hosts: file,
                accept_unknown_hosts,
            },
            timeouts: Timeouts {
                connect: Duration::from_secs(5),
                idle: Duration::from_secs(10),
                total: Duration::from_secs(30),
            },
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fetch(remote: Remote, reference: &TrackedRef) -> Result<String, SourceError> {
    let cache_dir = tempfile::tempdir().unwrap();
    let mut cache = Cache::open(cache_dir.path(), remote)?;
    let fetched = cache.fetch(std::slice::from_ref(reference))?;
    Ok(fetched.heads[0].2.to_string())
}

fn upstream() -> (TestRepo, String, TrackedRef) {
    let mut repo = TestRepo::example();
    let head = repo.commit("Example");
    let reference = {
        let head = repo.git().find_reference("HEAD").unwrap();
        TrackedRef::new(head.symbolic_target().unwrap().unwrap())
    };
    (repo, head, reference)
}

#[test]
fn fetches_over_ssh_from_a_known_host() {
    let sshd = Sshd::start();
    let (repo, head, reference) = upstream();
    let known = sshd.known_hosts_line("host_key.pub");
    assert_eq!(
        fetch(sshd.remote(repo.path(), &known, false), &reference).unwrap(),
        head
    );
}

#[test]
fn unknown_and_changed_host_keys_are_refused() {
    let sshd = Sshd::start();
    let (repo, head, reference) = upstream();

    let unknown = fetch(sshd.remote(repo.path(), "", false), &reference).unwrap_err();
    let message = format!("{:#}", anyhow::Error::from(unknown));
    assert!(message.contains("is not listed in"), "{message}");

    // Trust on first use, when configured, accepts a host that is not listed and records its
    // key, so later connections are checked against it…
    let tofu = sshd.remote(repo.path(), "", true);
    assert_eq!(fetch(tofu.clone(), &reference).unwrap(), head);
    let Auth::Ssh { known_hosts, .. } = &tofu.auth else {
        unreachable!()
    };
    assert_eq!(
        std::fs::read_to_string(known_hosts).unwrap(),
        sshd.known_hosts_line("host_key.pub")
    );
    assert_eq!(fetch(tofu, &reference).unwrap(), head);

    // …but never a listed host presenting another key.
    let other = sshd.known_hosts_line("client_key.pub");
    for accept_unknown in [false, true] {
        let changed = fetch(sshd.remote(repo.path(), &other, accept_unknown), &reference).unwrap_err();
        let message = format!("{:#}", anyhow::Error::from(changed));
        assert!(message.contains("differs from the one listed"), "{message}");
    }
}

#[test]
fn a_key_the_server_does_not_accept_is_reported() {
    let sshd = Sshd::start();
    let (repo, _, reference) = upstream();
    let known = sshd.known_hosts_line("host_key.pub");
    let mut remote = sshd.remote(repo.path(), &known, false);
    let stranger: PathBuf = sshd.dir.path().join("stranger");
    keygen(&stranger);
    if let Auth::Ssh { private_key, .. } = &mut remote.auth {
        *private_key = stranger;
    }
    let error = fetch(remote, &reference).unwrap_err();
    assert!(matches!(error, SourceError::Refused { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("the host refused the configured credentials"),
        "{error}"
    );
}
