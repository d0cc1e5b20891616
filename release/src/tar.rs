//! A deterministic ustar writer for image layers. Written here rather than taken from a crate because every byte of
//! the header is part of the layer's digest: entries are written in the order given (the caller sorts them),
//! owners are numeric with no user or group names, and every mtime is the one the caller passes.

use anyhow::{Context, Result, bail};

const BLOCK: usize = 512;

/// One entry of a layer: a directory or a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the image root, no leading `/`; directories end with `/`.
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// `None` for a directory.
    pub contents: Option<Vec<u8>>,
}

impl Entry {
    pub fn dir(path: &str, mode: u32, owner: u32) -> Self {
        Self {
            path: format!("{}/", path.trim_end_matches('/')),
            mode,
            uid: owner,
            gid: owner,
            contents: None,
        }
    }

    pub fn file(path: &str, mode: u32, contents: Vec<u8>) -> Self {
        Self {
            path: path.to_owned(),
            mode,
            uid: 0,
            gid: 0,
            contents: Some(contents),
        }
    }
}

/// Writes `value` as zero-padded octal filling `field` but its last byte, which stays NUL.
fn octal(field: &mut [u8], value: u64) -> Result<()> {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    if text.len() > digits {
        bail!("{value} does not fit a {digits}-digit tar field");
    }
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
    Ok(())
}

fn header(entry: &Entry, mtime: u64) -> Result<[u8; BLOCK]> {
    let mut h = [0u8; BLOCK];
    let name = entry.path.as_bytes();
    // Image paths are short; the 100-byte name field is enough and keeps the prefix field (and its splitting rules)
    // out of the format.
    if name.is_empty() || name.len() > 100 || name[0] == b'/' {
        bail!(
            "tar entry path {:?} must be relative and at most 100 bytes",
            entry.path
        );
    }
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(entry.mode))?;
    octal(&mut h[108..116], u64::from(entry.uid))?;
    octal(&mut h[116..124], u64::from(entry.gid))?;
    let size = entry.contents.as_ref().map_or(0, Vec::len) as u64;
    octal(&mut h[124..136], size)?;
    octal(&mut h[136..148], mtime)?;
    h[156] = if entry.contents.is_some() { b'0' } else { b'5' };
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field read as eight spaces, then written as six octal digits, NUL, space.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    octal(&mut h[148..155], sum)?;
    h[155] = b' ';
    Ok(h)
}

/// The whole archive: each entry in the order given, then the two zero blocks that end a tar stream.
pub fn archive(entries: &[Entry], mtime: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for entry in entries {
        out.extend_from_slice(&header(entry, mtime).with_context(|| format!("tar entry {}", entry.path))?);
        if let Some(data) = &entry.contents {
            out.extend_from_slice(data);
            out.resize(out.len().next_multiple_of(BLOCK), 0);
        }
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_checksum_and_pad() {
        let tar = archive(
            &[
                Entry::dir("etc", 0o755, 0),
                Entry::file("etc/x", 0o644, b"hello".to_vec()),
            ],
            7,
        )
        .unwrap();
        // dir header, file header, one data block, two end blocks.
        assert_eq!(tar.len(), 5 * BLOCK);
        for block in [&tar[..BLOCK], &tar[BLOCK..2 * BLOCK]] {
            let stored = std::str::from_utf8(&block[148..154]).unwrap();
            let mut copy = block.to_vec();
            copy[148..156].copy_from_slice(b"        ");
            let sum: u64 = copy.iter().map(|&b| u64::from(b)).sum();
            assert_eq!(u64::from_str_radix(stored, 8).unwrap(), sum);
            assert_eq!(&block[136..147], b"00000000007");
        }
        assert_eq!(&tar[..4], b"etc/");
        assert_eq!(tar[BLOCK + 156], b'0');
        assert_eq!(&tar[2 * BLOCK..2 * BLOCK + 5], b"hello");
        assert!(tar[2 * BLOCK + 5..].iter().all(|&b| b == 0));
    }

    #[test]
    fn refuses_absolute_and_long_paths() {
        assert!(archive(&[Entry::file("/etc/passwd", 0o644, vec![])], 0).is_err());
        assert!(archive(&[Entry::file(&"a".repeat(101), 0o644, vec![])], 0).is_err());
    }
}
