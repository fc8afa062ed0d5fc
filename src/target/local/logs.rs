//! Replica logs: the process writes straight into a file opened for appending (so its output
//! survives an agent restart, with no pipe to break), and the file is rotated by copy and
//! truncate once it grows past a limit, keeping a few older generations (`name.log.1`, …).
//! Lines written during the copy itself can be lost, as with logrotate's `copytruncate`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Rotate past this size.
pub const MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Older generations kept.
pub const KEEP: usize = 3;

/// A replica's log file.
#[derive(Clone)]
pub struct LogFile {
    path: PathBuf,
}

impl LogFile {
    /// Opens (creating) the log at `path`.
    pub fn open(path: &Path) -> io::Result<LogFile> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        OpenOptions::new().create(true).append(true).open(path)?;
        Ok(LogFile { path: path.to_owned() })
    }

    /// Two append handles for a child's stdout and stderr.
    pub fn handles(&self) -> io::Result<(File, File)> {
        let open = || OpenOptions::new().append(true).open(&self.path);
        Ok((open()?, open()?))
    }

    /// Appends a line of plumb's own (restarts, stops).
    pub fn note(&self, line: &str) {
        if let Ok(mut file) = OpenOptions::new().append(true).open(&self.path) {
            let _ = writeln!(file, "{line}");
        }
    }

    /// Rotates when the file is larger than `max_bytes`: generations shift up by one, the
    /// current content is copied to `.1`, and the file is truncated in place (the process keeps
    /// its handle and goes on appending). Returns whether it rotated.
    pub fn rotate_if_larger(&self, max_bytes: u64, keep: usize) -> io::Result<bool> {
        if std::fs::metadata(&self.path)?.len() <= max_bytes {
            return Ok(false);
        }
        for n in (1..keep).rev() {
            let from = generation(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, generation(&self.path, n + 1))?;
            }
        }
        std::fs::copy(&self.path, generation(&self.path, 1))?;
        OpenOptions::new().write(true).open(&self.path)?.set_len(0)?;
        Ok(true)
    }
}

fn generation(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The last `max_bytes` of the log, older generations first (what `plumb logs` prints).
pub fn tail(path: &Path, max_bytes: u64) -> io::Result<String> {
    let mut parts = Vec::new();
    let mut remaining = max_bytes;
    for n in 0..=KEEP {
        if remaining == 0 {
            break;
        }
        let file = if n == 0 { path.to_owned() } else { generation(path, n) };
        let Ok(mut handle) = File::open(&file) else {
            continue;
        };
        let len = handle.metadata()?.len();
        let take = len.min(remaining);
        handle.seek(SeekFrom::Start(len - take))?;
        let mut bytes = Vec::with_capacity(take as usize);
        handle.take(take).read_to_end(&mut bytes)?;
        remaining -= take;
        parts.push(bytes);
    }
    parts.reverse();
    Ok(String::from_utf8_lossy(&parts.concat()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_copy_and_truncate_keeping_generations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.log");
        let log = LogFile::open(&path).unwrap();
        let (mut out, _) = log.handles().unwrap();
        for round in 0..5 {
            writeln!(out, "round {round} {}", "x".repeat(100)).unwrap();
            assert!(log.rotate_if_larger(50, 3).unwrap());
        }
        // The writer's handle still appends to the (truncated) file.
        writeln!(out, "after").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        assert!(
            std::fs::read_to_string(generation(&path, 1))
                .unwrap()
                .starts_with("round 4")
        );
        assert!(
            std::fs::read_to_string(generation(&path, 3))
                .unwrap()
                .starts_with("round 2")
        );
        assert!(!generation(&path, 4).exists());
        let tail = tail(&path, 10_000).unwrap();
        assert!(tail.starts_with("round 2") && tail.ends_with("after\n"), "{tail}");
        assert!(!log.rotate_if_larger(50, 3).unwrap());
    }
}
