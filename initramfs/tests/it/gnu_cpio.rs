//! An independent check of the format: GNU cpio (Debian's `cpio` package, installed by
//! `cargo xtask setup`) must list the archive with the same names, modes and targets.

use std::io::Write;
use std::process::{Command, Stdio};

use initramfs::{WriteOptions, write_archive};

use crate::common::agent_like_spec;

fn gnu_cpio_list(archive: &[u8]) -> std::io::Result<String> {
    let mut child = Command::new("cpio")
        .args(["-i", "--list", "--verbose", "--numeric-uid-gid", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(archive)?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "cpio failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    String::from_utf8(out.stdout).map_err(std::io::Error::other)
}

#[test]
fn gnu_cpio_reads_the_archive() {
    let spec = agent_like_spec(false).unwrap();
    let mut cpio = Vec::new();
    write_archive(&spec, WriteOptions { mtime: 0 }, &mut cpio).unwrap();
    let text = gnu_cpio_list(&cpio)
        .expect("run `cpio` (Debian package cpio; `cargo xtask setup` installs it)");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), spec.len(), "{text}");
    for ((path, entry), line) in spec.entries().zip(&lines) {
        // `ls -l` style: mode string, links, uid, gid, size-or-dev, date, name[ -> target].
        let cols: Vec<&str> = line.split_whitespace().collect();
        let perms = cols[0];
        let expected_type = match entry.mode() & 0o170000 {
            0o040000 => 'd',
            0o100000 => '-',
            0o120000 => 'l',
            0o020000 => 'c',
            other => panic!("unexpected type {other:o}"),
        };
        assert_eq!(perms.chars().next(), Some(expected_type), "{line}");
        assert_eq!((cols[2], cols[3]), ("0", "0"), "{line}");
        let name_field = if expected_type == 'l' {
            line.rsplit_once(" -> ").unwrap().0
        } else {
            line
        };
        assert!(
            name_field.ends_with(&format!(" {path}")),
            "{line} vs {path}"
        );
    }
    let console = lines.iter().find(|l| l.ends_with(" dev/console")).unwrap();
    assert!(console.starts_with("crw-------"), "{console}");
    assert!(console.contains(" 5,"), "{console}");
    let tmp = lines.iter().find(|l| l.ends_with(" tmp")).unwrap();
    assert!(tmp.starts_with("drwxrwxrwt"), "{tmp}");
    let sbin = lines.iter().find(|l| l.contains(" sbin -> ")).unwrap();
    assert!(sbin.ends_with(" sbin -> bin"), "{sbin}");
}
