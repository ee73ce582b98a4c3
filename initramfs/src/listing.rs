//! A stable text listing of an archive, one member per line, for golden files and for
//! humans comparing two builds.
//!
//! Line format: `<type><perms> <uid>:<gid> <size> <sha256|-> <name>[ -> <target>|  <maj>:<min>]`
//! where type is `d`, `-`, `l`, `c`, `b`, `p`, `s` or `?`. The mtime and inode number are
//! left out on purpose: the writer fixes them, and the listing should show content.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::read::Member;

/// Renders `members` as a listing (each line ends with `\n`).
pub fn listing(members: &[Member]) -> String {
    let mut out = String::new();
    for m in members {
        let kind = match m.mode & 0o170000 {
            0o040000 => 'd',
            0o100000 => '-',
            0o120000 => 'l',
            0o020000 => 'c',
            0o060000 => 'b',
            0o010000 => 'p',
            0o140000 => 's',
            _ => '?',
        };
        let digest = if kind == '-' {
            hex::encode(Sha256::digest(&m.data))
        } else {
            "-".to_owned()
        };
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "{kind}{:04o} {}:{} {} {digest} {}",
            m.mode & 0o7777,
            m.uid,
            m.gid,
            m.data.len(),
            m.name
        );
        match kind {
            'l' => {
                let _ = write!(out, " -> {}", String::from_utf8_lossy(&m.data));
            }
            'c' | 'b' => {
                let _ = write!(out, " {}:{}", m.rdev_major, m.rdev_minor);
            }
            _ => {}
        }
        out.push('\n');
    }
    out
}
