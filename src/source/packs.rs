//! Keeping the cache's pack files few. Every fetch brings one pack; each stays open and mapped
//! for as long as the agent runs and every object lookup may search it, so an agent following a
//! busy repository would grow by a pack per commit (a file handle and about 30 KB of memory
//! each, measured over 1,000 commits: docs/performance.md). Past [`MOST_PACKS`] they are made
//! one, as git's automatic garbage collection does past its `gc.autoPackLimit`.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

/// The most pack files kept before they are made one (git's `gc.autoPackLimit`).
pub const MOST_PACKS: usize = 50;

/// Deletes the packs `retired` at the last call, then, when the repository at `path` (a bare
/// one) holds more than [`MOST_PACKS`] packs, writes every object into one new pack and marks
/// the older packs retired: deleted at the next call, so that a reader that listed them before
/// (a tree being rendered) finishes first. Every object is kept, reachable or not: a rollback
/// point may have left the remote's history. Returns whether any pack was written or deleted:
/// a handle opened before still lists them, and must be opened again.
pub fn consolidate(path: &Path, retired: &mut Vec<PathBuf>) -> Result<bool, git2::Error> {
    let dir = path.join("objects").join("pack");
    let deleted = !retired.is_empty();
    for pack in retired.drain(..) {
        remove_pack(&pack);
    }
    let packs = pack_files(&dir);
    if packs.len() <= MOST_PACKS {
        return Ok(deleted);
    }
    // A handle of its own: one opened earlier may still list packs deleted since.
    let repo = Repository::open_bare(path)?;
    let mut ids: Vec<Oid> = Vec::new();
    repo.odb()?.foreach(|id| {
        ids.push(*id);
        true
    })?;
    let mut builder = repo.packbuilder()?;
    for id in ids {
        // The same object in several packs is inserted once.
        builder.insert_object(id, None)?;
    }
    builder.write(&dir, 0)?;
    let Some(name) = builder.name()? else {
        return Err(git2::Error::from_str("the new pack was written without a name"));
    };
    let written = format!("pack-{name}.pack");
    retired.extend(
        packs
            .into_iter()
            .filter(|pack| pack.file_name().and_then(|n| n.to_str()) != Some(written.as_str())),
    );
    Ok(true)
}

/// The `.pack` files of `dir`.
fn pack_files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    entries
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "pack"))
        .collect()
}

/// Deletes a pack and the files beside it (its index, reverse index, keep marker). One already
/// gone is no matter.
fn remove_pack(pack: &Path) {
    for extension in ["idx", "rev", "keep", "pack"] {
        let file = pack.with_extension(extension);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "Cannot delete a pack file the cache no longer uses.")
            }
        }
    }
}
