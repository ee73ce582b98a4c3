//! The newc ("SVR4 without CRC", magic `070701`) cpio format, as the kernel's initramfs
//! unpacker reads it (`init/initramfs.c`, `Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Each member is a 110-byte ASCII header (the magic, then 13 fields of 8 hex digits), the
//! name with a terminating NUL, padding to a multiple of 4 bytes, the data, and padding to a
//! multiple of 4 again. The archive ends with a member named `TRAILER!!!`.

use std::io::{self, Write};

use crate::spec::{EntryKind, Spec};

/// The newc magic.
pub const MAGIC: &[u8; 6] = b"070701";

/// Header length: 6 bytes of magic and 13 fields of 8 hex digits.
pub const HEADER_LEN: usize = 6 + 13 * 8;

/// The name of the end-of-archive member.
pub const TRAILER_NAME: &str = "TRAILER!!!";

/// Fixed metadata applied to every member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// Modification time of every member, in seconds since the epoch (`SOURCE_DATE_EPOCH`,
    /// or 0). newc stores 32 bits.
    pub mtime: u32,
}

/// The header fields of one member, in on-disk order.
struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdev_major: u32,
    rdev_minor: u32,
    namesize: u32,
}

/// Writes `spec` as a newc archive to `out` and returns the number of bytes written.
///
/// Members appear in name order; inode numbers count up from 1 in that order; uid, gid and
/// the (device-of-archive) `dev` fields are 0; every mtime is `options.mtime`. The output is
/// therefore a function of the spec and the options alone.
pub fn write_archive<W: Write>(spec: &Spec, options: WriteOptions, out: W) -> io::Result<u64> {
    let mut out = CountingWriter {
        inner: out,
        count: 0,
    };
    let mut ino: u32 = 0;
    for (path, entry) in spec.entries() {
        ino = ino
            .checked_add(1)
            .ok_or_else(|| io::Error::other("more than u32::MAX archive members"))?;
        let (data, rdev_major, rdev_minor, nlink): (&[u8], u32, u32, u32) = match &entry.kind {
            // A directory's link count is 2 (itself and its `.`); the kernel ignores it.
            EntryKind::Dir => (&[], 0, 0, 2),
            EntryKind::File(data) => (data, 0, 0, 1),
            EntryKind::Symlink(target) => (target.as_bytes(), 0, 0, 1),
            EntryKind::CharDevice { major, minor } => (&[], *major, *minor, 1),
        };
        let header = Header {
            ino,
            mode: entry.mode(),
            nlink,
            mtime: options.mtime,
            filesize: len_u32(data.len())?,
            rdev_major,
            rdev_minor,
            namesize: len_u32(path.as_str().len() + 1)?,
        };
        write_member(&mut out, &header, path.as_str(), data)?;
    }
    let trailer = Header {
        ino: 0,
        mode: 0,
        nlink: 1,
        mtime: 0,
        filesize: 0,
        rdev_major: 0,
        rdev_minor: 0,
        namesize: len_u32(TRAILER_NAME.len() + 1)?,
    };
    write_member(&mut out, &trailer, TRAILER_NAME, &[])?;
    out.inner.flush()?;
    Ok(out.count)
}

fn len_u32(n: usize) -> io::Result<u32> {
    // The spec already bounds names and file sizes; this guards the conversion anyway.
    u32::try_from(n).map_err(|_| io::Error::other("length does not fit a newc field"))
}

fn write_member<W: Write>(
    out: &mut CountingWriter<W>,
    h: &Header,
    name: &str,
    data: &[u8],
) -> io::Result<()> {
    let fields = [
        h.ino,
        h.mode,
        0, // uid
        0, // gid
        h.nlink,
        h.mtime,
        h.filesize,
        0, // dev major
        0, // dev minor
        h.rdev_major,
        h.rdev_minor,
        h.namesize,
        0, // check: only used by the 070702 (CRC) variant
    ];
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    for f in fields {
        header.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.write_all(&header)?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    out.pad4()?;
    out.write_all(data)?;
    out.pad4()
}

/// Counts bytes so padding can be computed from the absolute offset.
struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> CountingWriter<W> {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.count += buf.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> io::Result<()> {
        let pad = (4 - (self.count % 4)) % 4;
        for _ in 0..pad {
            self.write_all(&[0])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_spec_is_just_the_trailer() {
        let mut buf = Vec::new();
        let n = write_archive(&Spec::new(), WriteOptions { mtime: 0 }, &mut buf).unwrap();
        let expected = concat!(
            "070701",
            "00000000",
            "00000000",
            "00000000",
            "00000000",
            "00000001",
            "00000000",
            "00000000",
            "00000000",
            "00000000",
            "00000000",
            "00000000",
            "0000000B",
            "00000000",
            "TRAILER!!!\0"
        );
        // 110 + 11 = 121 bytes, padded to 124.
        assert_eq!(buf.len(), 124);
        assert_eq!(n, 124);
        assert_eq!(&buf[..121], expected.as_bytes());
        assert_eq!(&buf[121..], &[0, 0, 0]);
    }

    #[test]
    fn one_file_header_fields_and_padding() {
        let mut spec = Spec::new();
        spec.add_file("init", 0o755, b"hello".to_vec()).unwrap();
        let mut buf = Vec::new();
        write_archive(&spec, WriteOptions { mtime: 0x1234 }, &mut buf).unwrap();
        let header = std::str::from_utf8(&buf[..HEADER_LEN]).unwrap();
        assert_eq!(
            header,
            concat!(
                "070701", "00000001", "000081ED", "00000000", "00000000", "00000001", "00001234",
                "00000005", "00000000", "00000000", "00000000", "00000000", "00000005", "00000000"
            )
        );
        // Name "init\0" ends at 115, padded to 116; data 5 bytes to 121, padded to 124.
        assert_eq!(&buf[110..116], b"init\0\0");
        assert_eq!(&buf[116..124], b"hello\0\0\0");
        assert_eq!(&buf[124..130], MAGIC);
    }
}
