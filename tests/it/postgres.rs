//! A PostgreSQL server of the test's own: a cluster made with `initdb` in a temporary folder,
//! started on a loopback port, stopped (immediately) when dropped. The server refuses to run
//! as root, so as root it runs as the `postgres` user the Debian package creates.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

/// A running PostgreSQL server.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl Postgres {
    /// Makes a cluster and starts it; panics saying what is missing when PostgreSQL is not
    /// installed (`.ci/run` installs Debian's `postgresql`).
    pub fn start() -> Postgres {
        let bin = server_binaries().expect("PostgreSQL's server programs (Debian's `postgresql`) are installed");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            // The postgres user must be able to reach its folder.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let port = crate::reconcile::free_port();
        run(
            root,
            Command::new(bin.join("initdb"))
                .args(["--auth=trust", "--username=plumb", "--encoding=UTF8", "--no-sync", "-D"])
                .arg(&data),
        );
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c client_connection_check_interval=100ms",
            dir.path().display()
        );
        run(
            root,
            Command::new(bin.join("pg_ctl"))
                .args(["-w", "-t", "60", "-o", &options, "-l"])
                .arg(dir.path().join("server.log"))
                .arg("-D")
                .arg(&data)
                .arg("start"),
        );
        Postgres {
            bin,
            data,
            _dir: dir,
            port,
        }
    }

    /// The connection URL of database `postgres` as user `plumb`.
    pub fn url(&self) -> String {
        format!("postgresql://plumb@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs `sql` with `psql`; its output, unaligned, tuples only.
    pub fn query(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", &self.url(), "-c", sql])
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// The columns of table `table`, in order.
    pub fn columns(&self, table: &str) -> Vec<String> {
        let sql = format!(
            "SELECT column_name FROM information_schema.columns WHERE table_name = '{table}' ORDER BY ordinal_position"
        );
        self.query(&sql).lines().map(str::to_owned).collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let root = unsafe { libc::geteuid() } == 0;
        let mut stop = Command::new(self.bin.join("pg_ctl"));
        stop.args(["-m", "immediate", "-D"]).arg(&self.data).arg("stop");
        let _ = as_server_user(root, &mut stop).output();
    }
}

/// The folder of `initdb` and `pg_ctl`: on the `PATH`, or Debian's newest version folder.
fn server_binaries() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    if let Some(dir) = on_path.into_iter().find(|d| d.join("initdb").is_file()) {
        return Some(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

/// `command`, as the `postgres` user when `root`.
fn as_server_user(root: bool, command: &mut Command) -> Command {
    if !root {
        let mut same = Command::new(command.get_program());
        same.args(command.get_args());
        return same;
    }
    let mut wrapped = Command::new("runuser");
    wrapped
        .args(["-u", "postgres", "--"])
        .arg(command.get_program())
        .args(command.get_args());
    wrapped
}

/// Runs `command` (as the server's user) and insists it succeeds.
fn run(root: bool, command: &mut Command) {
    let out = as_server_user(root, command)
        .output()
        .expect("a PostgreSQL program runs");
    assert!(
        out.status.success(),
        "{:?}: {}{}",
        command,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
