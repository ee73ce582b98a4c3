//! The path-traversal corpus shared by the loopback TFTP tests (`tftp.rs`) and the namespace
//! tests of the real binary (`tftp_netns.rs`): a canary layout planted around a TFTP root and
//! more than 200 request filenames that try to reach it.
//!
//! Layout made by [`plant`] around a root directory `<parent>/<R>`:
//! - `<parent>/canary` and `<parent>/<R>-private/secret` hold [`CANARY`] (the second one sits
//!   in a sibling whose name starts with the root's, against prefix-only containment checks);
//! - `<R>/sub/ok` holds `inside` (a control that must be served);
//! - symlinks inside the root pointing out of it: `link-out` → the canary, `link-dir` → the
//!   parent, `link-priv` → `../<R>-private`, `sub/link-up` → `../..`.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;

/// Content of every file outside the root; no reply may ever contain its first six bytes.
pub const CANARY: &[u8] = b"CANARY-must-never-be-served";

/// Content of the control file `sub/ok` inside the root.
pub const INSIDE: &[u8] = b"inside";

/// The root directory's own name (the corpus uses it to climb out and back in).
fn root_name(root: &Path) -> String {
    root.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into())
}

/// Plants the layout described in the module documentation around the existing directory
/// `root` (its parent must be a test-owned temporary directory).
pub fn plant(root: &Path) -> std::io::Result<()> {
    let parent = root
        .parent()
        .ok_or_else(|| std::io::Error::other("the TFTP root has no parent"))?;
    let name = root_name(root);
    let private = parent.join(format!("{name}-private"));
    std::fs::create_dir_all(root.join("sub"))?;
    std::fs::create_dir_all(&private)?;
    std::fs::write(parent.join("canary"), CANARY)?;
    std::fs::write(private.join("secret"), CANARY)?;
    std::fs::write(root.join("sub/ok"), INSIDE)?;
    std::os::unix::fs::symlink(parent.join("canary"), root.join("link-out"))?;
    std::os::unix::fs::symlink(parent, root.join("link-dir"))?;
    std::os::unix::fs::symlink(format!("../{name}-private"), root.join("link-priv"))?;
    std::os::unix::fs::symlink("../..", root.join("sub/link-up"))?;
    Ok(())
}

/// At least 200 request filenames aimed at the files outside `root` (planted by [`plant`]):
/// relative climbs, absolute paths, encodings the server must not decode, backslashes,
/// symlinks, over-long names and invalid UTF-8.
pub fn corpus(root: &Path) -> Vec<Vec<u8>> {
    let name = root_name(root);
    let abs = root
        .parent()
        .map(|p| p.join("canary").display().to_string())
        .unwrap_or_else(|| "/canary".into());
    let fixed = [
        "",
        "/",
        "//",
        "./",
        "../",
        "../../",
        "../../../../../../../../",
        "..\\",
        "..\\..\\",
        "%2e%2e/",
        "%2e%2e%2f",
        "..%2f",
        "....//",
        "..;/",
        ".../",
        "..\u{2215}",
        "\u{ff0e}\u{ff0e}/",
        "sub/../../",
        "sub/./../",
        "/../",
        "\\..\\",
        "..//",
        "./../",
        "..%00/",
        "..%c0%af",
        "sub/link-up/",
        "link-dir/",
        "file:///",
        "C:\\..\\",
        " ../",
        "..\t/",
    ];
    let mut prefixes: Vec<String> = fixed.iter().map(|&p| p.to_owned()).collect();
    prefixes.push(format!("{name}/../"));
    let targets = [
        "canary".to_owned(),
        format!("{name}-private/secret"),
        "etc/passwd".to_owned(),
        "link-out".to_owned(),
    ];
    let suffixes = ["", "/", "%00.efi", "\\"];
    let mut out: Vec<Vec<u8>> = Vec::new();
    for p in &prefixes {
        for t in &targets {
            for s in suffixes {
                out.push(format!("{p}{t}{s}").into_bytes());
            }
        }
    }
    for extra in [
        abs.clone(),
        format!("/{abs}"),
        format!("..{abs}"),
        "link-out".into(),
        "link-dir/canary".into(),
        "link-priv/secret".into(),
        "sub/link-up/canary".into(),
        format!("sub/link-up/{name}-private/secret"),
        format!("/link-dir/{name}-private/secret"),
        "a".repeat(300),
        format!("{}canary", "../".repeat(150)),
        ".".into(),
        "..".into(),
        "/.".into(),
        "sub".into(),
        "sub/".into(),
    ] {
        out.push(extra.into_bytes());
    }
    out.push(b"..\xc0\xaf..\xc0\xafcanary".to_vec());
    out.push(b"\xff\xfe/../canary".to_vec());
    out.push(b"..\x00/canary".to_vec()); // NUL: the name ends at ".."
    out.push(vec![b'/'; 400]);
    out
}

/// True when the server may leave request `pkt` for filename `name` unanswered: the codec
/// drops it as malformed (over 512 bytes, or a NUL inside the name, which shifts the mode
/// field to garbage). Every other corpus request must get an ERROR.
pub fn may_go_unanswered(pkt: &[u8], name: &[u8]) -> bool {
    pkt.len() > 512 || name.contains(&0)
}

/// True when `reply` carries the canary's first bytes.
pub fn leaks_canary(reply: &[u8]) -> bool {
    reply.windows(6).any(|w| CANARY.get(..6) == Some(w))
}
