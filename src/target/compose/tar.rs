//! A build context as the Engine's build API takes it: an uncompressed POSIX (ustar) archive of
//! regular files, owned by root, dated at the epoch so the same files make the same archive.

/// A file of an archive.
pub struct File<'a> {
    /// Its path inside the archive, `/`-separated.
    pub path: &'a str,
    /// Its bytes.
    pub bytes: &'a [u8],
    /// Whether it may be run (mode 0755, else 0644).
    pub executable: bool,
}

/// Why an archive cannot be made.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` has a path too long for an archive (at most 100 bytes after a folder of at most 155)")]
pub struct TooLong(String);

/// The archive of `files`.
pub fn archive<'a>(files: impl IntoIterator<Item = File<'a>>) -> Result<Vec<u8>, TooLong> {
    let mut out = Vec::new();
    for file in files {
        out.extend_from_slice(&header(&file)?);
        out.extend_from_slice(file.bytes);
        let padding = (512 - file.bytes.len() % 512) % 512;
        out.resize(out.len() + padding, 0);
    }
    // Two empty blocks end an archive.
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

/// The 512-byte header of `file`.
fn header(file: &File<'_>) -> Result<[u8; 512], TooLong> {
    let (prefix, name) = split(file.path).ok_or_else(|| TooLong(file.path.to_owned()))?;
    let mut block = [0u8; 512];
    block[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut block[100..108], if file.executable { 0o755 } else { 0o644 });
    octal(&mut block[108..116], 0);
    octal(&mut block[116..124], 0);
    octal(&mut block[124..136], file.bytes.len() as u64);
    octal(&mut block[136..148], 0);
    block[156] = b'0';
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    block[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    // The checksum is taken with its own field as spaces.
    block[148..156].fill(b' ');
    let sum: u64 = block.iter().map(|b| u64::from(*b)).sum();
    octal(&mut block[148..155], sum);
    block[155] = b' ';
    Ok(block)
}

/// `path` as ustar's prefix (a folder, at most 155 bytes) and name (at most 100 bytes).
fn split(path: &str) -> Option<(&str, &str)> {
    if path.len() <= 100 {
        return Some(("", path));
    }
    path.match_indices('/')
        .map(|(i, _)| (&path[..i], &path[i + 1..]))
        .find(|(prefix, name)| prefix.len() <= 155 && name.len() <= 100 && !name.is_empty())
}

/// `value` in octal digits filling `field` but its last byte, which is NUL.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_reads_what_is_archived() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let files = [
            File {
                path: "Dockerfile",
                bytes: b"FROM scratch\n",
                executable: false,
            },
            File {
                path: "bin/run.sh",
                bytes: b"#!/bin/sh\necho hi\n",
                executable: true,
            },
            File {
                path: &long,
                bytes: &[0, 1, 2, 255],
                executable: false,
            },
        ];
        let archive = archive(files).unwrap();
        let dir = std::env::temp_dir().join(format!("plumb-tar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("context.tar");
        std::fs::write(&path, &archive).unwrap();
        let listed = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&path)
            .output()
            .unwrap();
        assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
        let listing = String::from_utf8(listed.stdout).unwrap();
        assert!(
            listing.contains("-rw-r--r-- 0/0              13 1970-01-01 00:00 Dockerfile"),
            "{listing}"
        );
        assert!(
            listing.contains("-rwxr-xr-x 0/0              18 1970-01-01 00:00 bin/run.sh"),
            "{listing}"
        );
        assert!(listing.contains(&long), "{listing}");
        let extracted = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&path)
            .arg("-C")
            .arg(&dir)
            .status()
            .unwrap();
        assert!(extracted.success());
        assert_eq!(std::fs::read(dir.join(&long)).unwrap(), [0, 1, 2, 255]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_path_with_no_place_to_split_is_refused() {
        let path = "x".repeat(101);
        assert!(
            archive([File {
                path: &path,
                bytes: b"",
                executable: false
            }])
            .is_err()
        );
    }
}
