//! Images made without a registry or a daemon: a root file system holding one binary and the
//! shared libraries it links, written in `docker save`'s format (one layer, a configuration,
//! a manifest naming them), which containerd's `ctr images import` and the Docker Engine's
//! image load both take.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use sha2::Digest;

/// A root file system under construction.
pub struct RootFs {
    dir: PathBuf,
}

impl RootFs {
    /// An empty one in `dir` (created).
    pub fn new(dir: &Path) -> anyhow::Result<RootFs> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(RootFs { dir: dir.to_owned() })
    }

    /// Its folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Copies `binary` to `inside` (an absolute path in the image) with the libraries it links,
    /// each at its own path.
    pub fn binary(&self, binary: &Path, inside: &str) -> anyhow::Result<&Self> {
        self.place(binary, inside)?;
        for library in libraries(binary)? {
            self.place(&library, &library.display().to_string())?;
        }
        Ok(self)
    }

    /// Writes `text` at `path` (relative to the root).
    pub fn file(&self, path: &str, text: &str) -> anyhow::Result<&Self> {
        let target = self.dir.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("a file has a folder"))?;
        std::fs::write(&target, text).with_context(|| format!("cannot write {}", target.display()))?;
        Ok(self)
    }

    /// Makes the empty folder `path`, writable by all (as `/tmp` is).
    pub fn folder(&self, path: &str) -> anyhow::Result<&Self> {
        let target = self.dir.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&target)?;
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o1777))?;
        Ok(self)
    }

    fn place(&self, from: &Path, to: &str) -> anyhow::Result<()> {
        let target = self.dir.join(to.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("a file has a folder"))?;
        std::fs::copy(from, &target).with_context(|| format!("cannot copy {} into an image", from.display()))?;
        Ok(())
    }

    /// Writes the file system as image `name` (`repository:tag`) in `docker save`'s format to
    /// `out`, running `entrypoint` when it names one. The archive is the same for the same
    /// files: sorted, owned by root, dated 1970.
    pub fn archive(&self, name: &str, entrypoint: Option<&str>, out: &Path) -> anyhow::Result<()> {
        let work = out.with_extension("parts");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let layer_tar = work.join("layer.tar");
        tar(&self.dir, &layer_tar, &["."])?;
        let layer = hex::encode(sha2::Sha256::digest(std::fs::read(&layer_tar)?));
        std::fs::create_dir(work.join(&layer))?;
        std::fs::rename(&layer_tar, work.join(&layer).join("layer.tar"))?;
        let config = serde_json::json!({
            "architecture": architecture(),
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {
                "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                "Entrypoint": entrypoint.map(|e| vec![e]),
                "WorkingDir": "/",
            },
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer}")]},
        });
        let config = serde_json::to_vec(&config)?;
        let config_name = format!("{}.json", hex::encode(sha2::Sha256::digest(&config)));
        std::fs::write(work.join(&config_name), &config)?;
        let manifest = serde_json::json!([{
            "Config": config_name,
            "RepoTags": [name],
            "Layers": [format!("{layer}/layer.tar")],
        }]);
        std::fs::write(work.join("manifest.json"), serde_json::to_vec(&manifest)?)?;
        tar(&work, out, &["manifest.json", &config_name, &layer])?;
        std::fs::remove_dir_all(&work)?;
        Ok(())
    }
}

/// The image of `plumb example-app`: `binary` (a plumb executable) at `/plumb`, its libraries
/// and a `/tmp`, written as image `name` to `out`.
pub fn example(binary: &Path, name: &str, out: &Path) -> anyhow::Result<()> {
    let fs = RootFs::new(&out.with_extension("fs"))?;
    fs.binary(binary, "/plumb")?.folder("tmp")?;
    fs.archive(name, None, out)?;
    std::fs::remove_dir_all(fs.path())?;
    Ok(())
}

/// The example image `plumb dev-cluster` imports and `plumb demo --target kubernetes` runs by
/// default: this version's.
pub fn demo_name() -> String {
    format!("localhost/plumb-example:{}", env!("CARGO_PKG_VERSION"))
}

/// The image name for the example image made of `binary`: its size and modification time in
/// the tag, so a new build is a new image.
pub fn stamped(repository: &str, binary: &Path) -> anyhow::Result<String> {
    let meta = std::fs::metadata(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let modified = meta.modified()?.duration_since(std::time::UNIX_EPOCH)?.as_secs();
    Ok(format!("{repository}:{}-{modified}", meta.len()))
}

/// The image architecture of this machine, as OCI names it.
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn tar(from: &Path, to: &Path, what: &[&str]) -> anyhow::Result<()> {
    let mut command = Command::new("tar");
    command
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
            "-C",
        ])
        .arg(from)
        .arg("-cf")
        .arg(to)
        .args(what);
    super::output(command).map(drop)
}

/// The shared libraries `binary` loads, as `ldd` resolves them (none for a static binary).
fn libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .context("cannot run ldd (package libc-bin)")?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}
