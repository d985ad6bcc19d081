//! The tar container, read by our own strict one-pass reader and written with the `tar` crate.
//!
//! Why not `tar::Archive` for reading: it honours PAX `size` records over the header (the 2026
//! PAX-size confusion), follows GNU long names, and treats EOF at a block boundary as a clean
//! end, so a bundle cut between two entries would look complete. Our format needs none of
//! that: POSIX ustar headers, regular files, short names. Anything else is refused here.

use std::io::{Read, Write};

use crate::error::BundleError;

/// Name of the first entry; its content is [`MARKER_PREFIX`] followed by the format number.
pub const MARKER_NAME: &str = "outpost-bundle";
/// Content of the marker entry before the format number.
pub const MARKER_PREFIX: &str = "outpost-bundle format ";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the second entry: the exact manifest bytes that are signed.
pub const MANIFEST_NAME: &str = "manifest.json";
/// Name of the third entry: the signature document.
pub const SIGNATURES_NAME: &str = "signatures.json";
/// Payload entries are named `payloads/<manifest name>`.
pub const PAYLOAD_PREFIX: &str = "payloads/";

pub(crate) const BLOCK: usize = 512;
/// Largest marker entry we read.
pub(crate) const MAX_MARKER: u64 = 64;
/// Zero bytes allowed after the two end blocks (tar pads to 20-block records).
const MAX_TRAILING_ZEROS: u64 = 20 * BLOCK as u64;

/// A parsed ustar header of a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryHeader {
    pub name: String,
    pub size: u64,
}

/// Parse one 512-byte header block. `Ok(None)` is an all-zero (end-of-archive) block.
pub(crate) fn parse_header(
    block: &[u8; BLOCK],
    offset: u64,
) -> Result<Option<EntryHeader>, BundleError> {
    let bad = |reason| BundleError::MalformedHeader { offset, reason };
    if block.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    if &block[257..263] != b"ustar\0" || &block[263..265] != b"00" {
        return Err(bad("not a POSIX ustar header"));
    }
    let stored = parse_octal(&block[148..156]).ok_or_else(|| bad("checksum field"))?;
    let computed: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if stored != computed {
        return Err(bad("checksum mismatch"));
    }
    let name = {
        let base = field_str(&block[0..100]).ok_or_else(|| bad("name is not UTF-8"))?;
        let prefix = field_str(&block[345..500]).ok_or_else(|| bad("prefix is not UTF-8"))?;
        if prefix.is_empty() {
            base.to_string()
        } else {
            format!("{prefix}/{base}")
        }
    };
    let kind = match block[156] {
        b'0' | 0 => None,
        b'1' => Some("hard link"),
        b'2' => Some("symbolic link"),
        b'3' => Some("character device"),
        b'4' => Some("block device"),
        b'5' => Some("directory"),
        b'6' => Some("FIFO"),
        b'7' => Some("contiguous file"),
        b'x' | b'g' => Some("PAX extended header"),
        b'L' | b'K' => Some("GNU long-name header"),
        b'S' => Some("sparse file"),
        _ => Some("entry of unknown type"),
    };
    if let Some(kind) = kind {
        return Err(BundleError::NotRegularFile { entry: name, kind });
    }
    check_entry_name(&name)?;
    let size = parse_number(&block[124..136]).ok_or_else(|| bad("size field"))?;
    Ok(Some(EntryHeader { name, size }))
}

/// Refuse absolute names, `..` components and anything but a plain relative name.
pub(crate) fn check_entry_name(name: &str) -> Result<(), BundleError> {
    let unsafe_name = |reason| BundleError::UnsafeName {
        entry: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(unsafe_name("empty name"));
    }
    if name.starts_with('/') {
        return Err(unsafe_name("absolute path"));
    }
    if name.split(['/', '\\']).any(|c| c == "..") {
        return Err(unsafe_name("contains a `..` component"));
    }
    if name.split('/').any(|c| c.is_empty() || c == ".") {
        return Err(unsafe_name("empty or `.` component"));
    }
    if name.chars().any(|c| c.is_control() || c == '\\') {
        return Err(unsafe_name("control character or backslash"));
    }
    Ok(())
}

/// A NUL-terminated header text field.
fn field_str(field: &[u8]) -> Option<&str> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    std::str::from_utf8(&field[..end]).ok()
}

/// Octal digits, optionally surrounded by spaces and ended by NUL/space.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let text = std::str::from_utf8(&field[..end]).ok()?.trim_matches(' ');
    if text.is_empty() || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u64::from_str_radix(text, 8).ok()
}

/// Octal, or GNU base-256 (first byte 0x80) for sizes of 8 GiB and more.
fn parse_number(field: &[u8]) -> Option<u64> {
    match field.first() {
        Some(0x80) => {
            let rest = &field[1..];
            let (high, low) = rest.split_at(rest.len().saturating_sub(8));
            if high.iter().any(|&b| b != 0) {
                return None;
            }
            Some(low.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
        }
        _ => parse_octal(field),
    }
}

/// Bytes of zero padding after `size` bytes of data.
pub(crate) fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// What follows in the archive.
#[derive(Debug)]
pub(crate) enum Next {
    Entry(EntryHeader),
    End,
}

/// One-pass reader over a bundle stream. Counts every byte for progress and error offsets.
pub(crate) struct TarReader<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> TarReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        TarReader { inner, offset: 0 }
    }

    /// Bytes consumed so far.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Read the next header. `after` names the previous entry for truncation messages.
    pub(crate) fn next(&mut self, after: &str) -> Result<Next, BundleError> {
        let start = self.offset;
        let mut block = [0u8; BLOCK];
        if !self.fill(&mut block, after)? {
            // EOF exactly at a block boundary: the end-of-archive blocks are missing.
            return Err(BundleError::Truncated {
                entry: format!("end of archive after {after}"),
            });
        }
        match parse_header(&block, start)? {
            Some(h) => Ok(Next::Entry(h)),
            None => {
                let mut second = [0u8; BLOCK];
                let what = "end-of-archive blocks";
                if !self.fill(&mut second, what)? {
                    return Err(BundleError::Truncated { entry: what.into() });
                }
                if second.iter().any(|&b| b != 0) {
                    return Err(BundleError::TrailingGarbage { offset: start });
                }
                self.check_trailing()?;
                Ok(Next::End)
            }
        }
    }

    /// After the end blocks only zero record padding may follow, and not much of it.
    fn check_trailing(&mut self) -> Result<(), BundleError> {
        let mut buf = [0u8; BLOCK];
        let mut zeros = 0u64;
        loop {
            let n = self.read_some(&mut buf, "trailing bytes")?;
            if n == 0 {
                return Ok(());
            }
            if let Some(pos) = buf[..n].iter().position(|&b| b != 0) {
                return Err(BundleError::TrailingGarbage {
                    offset: self.offset - n as u64 + pos as u64,
                });
            }
            zeros += n as u64;
            if zeros > MAX_TRAILING_ZEROS {
                return Err(BundleError::TrailingGarbage {
                    offset: self.offset - n as u64,
                });
            }
        }
    }

    /// Read a whole small entry (size already checked against a limit) and its padding.
    pub(crate) fn read_small(&mut self, h: &EntryHeader) -> Result<Vec<u8>, BundleError> {
        let len = usize::try_from(h.size).map_err(|_| BundleError::MalformedHeader {
            offset: self.offset,
            reason: "size does not fit in memory",
        })?;
        let mut data = vec![0u8; len];
        if !self.fill(&mut data, &h.name)? && len > 0 {
            return Err(BundleError::Truncated {
                entry: h.name.clone(),
            });
        }
        self.skip_padding(h)?;
        Ok(data)
    }

    /// Read up to `buf.len()` bytes of entry data; 0 means EOF (the caller bounds the length).
    pub(crate) fn read_some(&mut self, buf: &mut [u8], entry: &str) -> Result<usize, BundleError> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BundleError::io(format!("reading {entry}"), e)),
            }
        }
    }

    /// Fill `buf` completely. `Ok(false)` on EOF before the first byte; EOF later is `Truncated`.
    fn fill(&mut self, buf: &mut [u8], entry: &str) -> Result<bool, BundleError> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_some(&mut buf[done..], entry)?;
            if n == 0 {
                if done == 0 {
                    return Ok(false);
                }
                return Err(BundleError::Truncated {
                    entry: entry.to_string(),
                });
            }
            done += n;
        }
        Ok(true)
    }

    /// Consume the zero padding after an entry's data.
    pub(crate) fn skip_padding(&mut self, h: &EntryHeader) -> Result<(), BundleError> {
        let pad = padding(h.size) as usize;
        if pad == 0 {
            return Ok(());
        }
        let mut buf = [0u8; BLOCK];
        if !self.fill(&mut buf[..pad], &h.name)? {
            return Err(BundleError::Truncated {
                entry: h.name.clone(),
            });
        }
        if buf[..pad].iter().any(|&b| b != 0) {
            return Err(BundleError::BadPadding {
                entry: h.name.clone(),
            });
        }
        Ok(())
    }
}

/// A ustar header for a regular file in a bundle (mode 0644, owner 0, fixed mtime).
pub(crate) fn header_for(name: &str, size: u64, mtime: u64) -> Result<tar::Header, BundleError> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)
        .map_err(|e| BundleError::io(format!("tar name {name:?}"), e))?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// Append one entry from memory.
pub(crate) fn append_bytes<W: Write>(
    b: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
    mtime: u64,
) -> Result<(), BundleError> {
    let h = header_for(name, data.len() as u64, mtime)?;
    b.append(&h, data)
        .map_err(|e| BundleError::io(format!("writing entry {name:?}"), e))
}

/// The marker entry's content for the current format.
pub(crate) fn marker_content() -> String {
    format!("{MARKER_PREFIX}{FORMAT_VERSION}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_for(name: &str, size: u64, kind: tar::EntryType) -> [u8; BLOCK] {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(size);
        h.set_entry_type(kind);
        h.set_cksum();
        let mut b = [0u8; BLOCK];
        b.copy_from_slice(h.as_bytes());
        b
    }

    #[test]
    fn headers_parse_or_refuse() {
        use tar::EntryType as T;
        let ok = |name: &str, size| {
            Ok(Some(EntryHeader {
                name: name.into(),
                size,
            }))
        };
        type Want = Result<Option<EntryHeader>, &'static str>;
        let cases: Vec<(&str, [u8; BLOCK], Want)> = vec![
            (
                "regular",
                block_for("manifest.json", 10, T::Regular),
                ok("manifest.json", 10),
            ),
            ("zero", [0u8; BLOCK], Ok(None)),
            (
                "symlink",
                block_for("a", 0, T::Symlink),
                Err("NotRegularFile"),
            ),
            (
                "hardlink",
                block_for("a", 0, T::Link),
                Err("NotRegularFile"),
            ),
            (
                "dir",
                block_for("a", 0, T::Directory),
                Err("NotRegularFile"),
            ),
            ("char", block_for("a", 0, T::Char), Err("NotRegularFile")),
            ("block", block_for("a", 0, T::Block), Err("NotRegularFile")),
            ("fifo", block_for("a", 0, T::Fifo), Err("NotRegularFile")),
            ("pax", block_for("a", 0, T::XHeader), Err("NotRegularFile")),
            (
                "gnu long",
                block_for("a", 0, T::GNULongName),
                Err("NotRegularFile"),
            ),
            ("dotdot", raw_named(b"payloads/../x", 1), Err("UnsafeName")),
            ("absolute", raw_named(b"/etc/passwd", 1), Err("UnsafeName")),
            (
                "bad checksum",
                {
                    let mut b = block_for("a", 1, T::Regular);
                    b[0] = b'b';
                    b
                },
                Err("MalformedHeader"),
            ),
            (
                "gnu magic",
                {
                    let mut h = tar::Header::new_gnu();
                    h.set_path("a").unwrap();
                    h.set_cksum();
                    let mut b = [0u8; BLOCK];
                    b.copy_from_slice(h.as_bytes());
                    b
                },
                Err("MalformedHeader"),
            ),
        ];
        for (what, block, want) in cases {
            let got = parse_header(&block, 0);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{what}"),
                (Err(e), Err(w)) => assert!(format!("{e:?}").starts_with(w), "{what}: {e:?}"),
                (g, w) => panic!("{what}: got {g:?}, want {w:?}"),
            }
        }
    }

    /// tar::Header refuses to set absolute or `..` names, so write the field by hand.
    fn raw_named(name: &[u8], size: u64) -> [u8; BLOCK] {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.as_mut_bytes()[..name.len()].copy_from_slice(name);
        h.set_cksum();
        let mut b = [0u8; BLOCK];
        b.copy_from_slice(h.as_bytes());
        b
    }

    #[test]
    fn entry_names() {
        let cases = [
            ("payloads/tool", true),
            ("manifest.json", true),
            ("/etc/passwd", false),
            ("../x", false),
            ("payloads/..", false),
            ("a//b", false),
            ("./a", false),
            ("a\\..\\b", false),
            ("a\nb", false),
            ("", false),
        ];
        for (name, ok) in cases {
            assert_eq!(check_entry_name(name).is_ok(), ok, "{name:?}");
        }
    }

    #[test]
    fn numbers() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"00000000012\0", Some(10)),
            (b"         12 ", Some(10)),
            (b"0000000001a\0", None),
            (b"\0\0\0\0\0\0\0\0\0\0\0\0", None),
            (&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], Some(256)),
            (&[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0], None),
        ];
        for (field, want) in cases {
            assert_eq!(parse_number(field), *want, "{field:?}");
        }
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
    }

    #[test]
    fn reader_requires_end_blocks_and_nothing_after() {
        let mut archive = Vec::new();
        {
            let mut b = tar::Builder::new(&mut archive);
            append_bytes(&mut b, "manifest.json", b"{}", 0).unwrap();
            b.finish().unwrap();
        }
        let read_all = |bytes: &[u8]| -> Result<usize, BundleError> {
            let mut r = TarReader::new(bytes);
            let mut n = 0;
            loop {
                match r.next("start")? {
                    Next::Entry(h) => {
                        r.read_small(&h)?;
                        n += 1;
                    }
                    Next::End => return Ok(n),
                }
            }
        };
        assert_eq!(read_all(&archive).unwrap(), 1);
        let cut = &archive[..1024];
        assert!(matches!(read_all(cut), Err(BundleError::Truncated { .. })));
        let cut = &archive[..1024 + 512];
        assert!(matches!(read_all(cut), Err(BundleError::Truncated { .. })));
        let cut = &archive[..700];
        assert!(matches!(read_all(cut), Err(BundleError::Truncated { .. })));
        let mut padded = archive.clone();
        padded.extend_from_slice(&[0u8; 4096]);
        assert_eq!(read_all(&padded).unwrap(), 1);
        let mut garbage = archive.clone();
        garbage.extend_from_slice(b"x");
        assert!(matches!(
            read_all(&garbage),
            Err(BundleError::TrailingGarbage { .. })
        ));
        let mut endless = archive.clone();
        endless.extend_from_slice(&vec![0u8; 64 * 1024]);
        assert!(matches!(
            read_all(&endless),
            Err(BundleError::TrailingGarbage { .. })
        ));
        let mut bad_pad = archive.clone();
        bad_pad[512 + 5] = 1;
        assert!(matches!(
            read_all(&bad_pad),
            Err(BundleError::BadPadding { .. })
        ));
    }
}
