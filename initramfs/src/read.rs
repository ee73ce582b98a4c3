//! A strict newc reader, for verifying what the writer produced and for inspecting archives
//! from elsewhere. It treats its input as hostile: every length is checked against the bytes
//! that remain, nothing is indexed unchecked, and it never panics.

use thiserror::Error;

use crate::newc::{HEADER_LEN, MAGIC, TRAILER_NAME};

/// One member as stored in the archive.
#[derive(Clone, PartialEq, Eq)]
pub struct Member {
    /// The name, exactly as stored (not validated as an [`crate::ArchivePath`]).
    pub name: String,
    /// Inode number.
    pub ino: u32,
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time.
    pub mtime: u32,
    /// Device major number (for device nodes).
    pub rdev_major: u32,
    /// Device minor number (for device nodes).
    pub rdev_minor: u32,
    /// The data: file contents or symlink target.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.name)
            .field("ino", &self.ino)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("size", &self.data.len())
            .finish_non_exhaustive()
    }
}

/// Why an archive could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReadError {
    /// The input ends inside a member.
    #[error("archive truncated at offset {offset}")]
    Truncated {
        /// Where the missing bytes start.
        offset: usize,
    },
    /// A header does not start with `070701`.
    #[error("no newc magic at offset {offset}")]
    BadMagic {
        /// Offset of the header.
        offset: usize,
    },
    /// A header field is not 8 hex digits.
    #[error("header field {field} at offset {offset} is not hexadecimal")]
    BadField {
        /// Offset of the header.
        offset: usize,
        /// Field name.
        field: &'static str,
    },
    /// The name is not NUL-terminated, contains a NUL, or is not UTF-8.
    #[error("member name at offset {offset} is malformed")]
    BadName {
        /// Offset of the header.
        offset: usize,
    },
    /// The input ends without a `TRAILER!!!` member.
    #[error("archive has no trailer")]
    MissingTrailer,
    /// Non-zero bytes follow the trailer.
    #[error("non-zero data after the trailer at offset {offset}")]
    TrailingData {
        /// Offset of the first non-zero byte.
        offset: usize,
    },
}

impl ReadError {
    /// A stable, machine-matchable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "cpio_truncated",
            Self::BadMagic { .. } => "cpio_bad_magic",
            Self::BadField { .. } => "cpio_bad_field",
            Self::BadName { .. } => "cpio_bad_name",
            Self::MissingTrailer => "cpio_missing_trailer",
            Self::TrailingData { .. } => "cpio_trailing_data",
        }
    }
}

const FIELD_NAMES: [&str; 13] = [
    "ino",
    "mode",
    "uid",
    "gid",
    "nlink",
    "mtime",
    "filesize",
    "devmajor",
    "devminor",
    "rdevmajor",
    "rdevminor",
    "namesize",
    "check",
];

/// Parses a whole uncompressed newc archive, up to and including its trailer.
///
/// Zero bytes after the trailer are accepted (the kernel skips such padding); anything
/// else after it is an error, as is a missing trailer.
pub fn read_archive(bytes: &[u8]) -> Result<Vec<Member>, ReadError> {
    let mut members = Vec::new();
    let mut offset = 0usize;
    loop {
        if offset >= bytes.len() {
            return Err(ReadError::MissingTrailer);
        }
        let header = slice(bytes, offset, HEADER_LEN)?;
        if header.get(..MAGIC.len()) != Some(&MAGIC[..]) {
            return Err(ReadError::BadMagic { offset });
        }
        let mut fields = [0u32; 13];
        for (i, (slot, name)) in fields.iter_mut().zip(FIELD_NAMES).enumerate() {
            let start = MAGIC.len() + i * 8;
            let text = header
                .get(start..start + 8)
                .ok_or(ReadError::Truncated { offset })?;
            *slot = parse_hex(text).ok_or(ReadError::BadField {
                offset,
                field: name,
            })?;
        }
        let [
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            filesize,
            _,
            _,
            rdev_major,
            rdev_minor,
            namesize,
            _,
        ] = fields;
        let name_start = offset + HEADER_LEN;
        let name_len = usize::try_from(namesize).map_err(|_| ReadError::BadName { offset })?;
        let raw_name = slice(bytes, name_start, name_len)?;
        let name = match raw_name.split_last() {
            Some((0, body)) if !body.contains(&0) => {
                std::str::from_utf8(body).map_err(|_| ReadError::BadName { offset })?
            }
            _ => return Err(ReadError::BadName { offset }),
        };
        if name == TRAILER_NAME {
            // Only zero padding may follow; the kernel treats it as the gap before a
            // possible next archive.
            let rest_start = name_start + name_len;
            let rest = bytes.get(rest_start..).unwrap_or_default();
            if let Some(pos) = rest.iter().position(|b| *b != 0) {
                return Err(ReadError::TrailingData {
                    offset: rest_start + pos,
                });
            }
            return Ok(members);
        }
        let data_start = align4(name_start + name_len);
        let data_len = usize::try_from(filesize).map_err(|_| ReadError::Truncated { offset })?;
        let data = slice(bytes, data_start, data_len)?;
        let next = align4(data_start + data_len);
        members.push(Member {
            name: name.to_owned(),
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            rdev_major,
            rdev_minor,
            data: data.to_vec(),
        });
        offset = next;
    }
}

/// `len` bytes at `start`, or `Truncated`.
fn slice(bytes: &[u8], start: usize, len: usize) -> Result<&[u8], ReadError> {
    start
        .checked_add(len)
        .and_then(|end| bytes.get(start..end))
        .ok_or(ReadError::Truncated {
            offset: start.min(bytes.len()),
        })
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

fn parse_hex(text: &[u8]) -> Option<u32> {
    if text.len() != 8 || !text.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(text).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::newc::{WriteOptions, write_archive};
    use crate::spec::Spec;

    fn sample() -> Vec<u8> {
        let mut spec = Spec::new();
        spec.add_file("init", 0o755, b"#!/bin/sh\n".to_vec())
            .unwrap();
        spec.add_symlink("bin", "usr/bin").unwrap();
        let mut buf = Vec::new();
        write_archive(&spec, WriteOptions { mtime: 7 }, &mut buf).unwrap();
        buf
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let buf = sample();
        for cut in 0..buf.len() - 3 {
            let err = read_archive(&buf[..cut]).unwrap_err();
            assert!(
                matches!(err, ReadError::Truncated { .. } | ReadError::MissingTrailer),
                "cut at {cut}: {err:?}"
            );
        }
        // The trailer's own padding may be cut without loss.
        assert_eq!(read_archive(&buf[..buf.len() - 3]).unwrap().len(), 2);
    }

    #[test]
    fn every_single_byte_corruption_is_handled() {
        let buf = sample();
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x5a;
            // Either it still parses (a data byte changed) or it fails with a reason.
            if let Err(e) = read_archive(&bad) {
                assert!(!e.code().is_empty());
            }
        }
    }

    #[test]
    fn hostile_headers_are_rejected_with_codes() {
        let buf = sample();
        let mut bad_magic = buf.clone();
        bad_magic[5] = b'7';
        assert_eq!(
            read_archive(&bad_magic).unwrap_err().code(),
            "cpio_bad_magic"
        );

        let mut bad_field = buf.clone();
        bad_field[6] = b'g';
        let err = read_archive(&bad_field).unwrap_err();
        assert_eq!(
            err,
            ReadError::BadField {
                offset: 0,
                field: "ino"
            }
        );

        // A namesize of 0xFFFFFFFF must not overflow or allocate.
        let mut huge_name = buf.clone();
        huge_name[6 + 11 * 8..6 + 12 * 8].copy_from_slice(b"FFFFFFFF");
        assert_eq!(
            read_archive(&huge_name).unwrap_err().code(),
            "cpio_truncated"
        );

        let mut trailing = buf.clone();
        trailing.extend_from_slice(b"\0\0\0\0junk");
        assert_eq!(
            read_archive(&trailing).unwrap_err().code(),
            "cpio_trailing_data"
        );

        assert_eq!(
            read_archive(&[]).unwrap_err().code(),
            "cpio_missing_trailer"
        );
    }
}
