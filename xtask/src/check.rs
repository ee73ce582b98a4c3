//! `cargo xtask check-workspace`: policy as code. Fails when a member crate does not inherit the
//! workspace lints, or depends on a workspace crate that the layout forbids (ARCHITECTURE.md,
//! "Dependency direction").

use anyhow::{Context, Result, bail};

use crate::util;

/// Each member directory, its package name, and the workspace crates it may depend on.
const ALLOWED: &[(&str, &str, &[&str])] = &[
    ("api", "pxe-api", &[]),
    ("initramfs", "initramfs", &[]),
    ("snapshot-tool", "snapshot-tool", &[]),
    ("recon", "recon", &["pxe-api"]),
    ("installer", "installer", &["pxe-api", "snapshot-tool"]),
    ("pxe-server", "pxe-server", &["pxe-api"]),
    // The agent verifies snapshot signatures itself (the pure `format` module only,
    // `default-features = false`).
    (
        "pxeimage",
        "pxeimage",
        &["pxe-api", "recon", "installer", "snapshot-tool"],
    ),
    ("tests", "rackhand-tests", &["pxe-api", "pxe-server"]),
    (
        "xtask",
        "xtask",
        &[
            "pxe-api",
            "initramfs",
            "snapshot-tool",
            "rackhand-tests",
            "recon",
        ],
    ),
];

/// Problems found in one manifest (pure: takes the text).
pub(crate) fn check_manifest(dir: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let Some((_, name, allowed)) = ALLOWED.iter().find(|(d, _, _)| *d == dir) else {
        return vec![format!(
            "{dir}: not a known workspace member; add it to xtask/src/check.rs"
        )];
    };
    let doc: toml::Table = match text.parse() {
        Ok(d) => d,
        Err(e) => return vec![format!("{dir}/Cargo.toml: {e}")],
    };
    let pkg = doc
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str());
    if pkg != Some(name) {
        problems.push(format!("{dir}: package name {pkg:?}, expected {name:?}"));
    }
    let lints_inherited = doc
        .get("lints")
        .and_then(|l| l.get("workspace"))
        .and_then(|w| w.as_bool())
        == Some(true);
    if !lints_inherited {
        problems.push(format!("{dir}: missing `[lints] workspace = true`"));
    }
    let members: Vec<&str> = ALLOWED.iter().map(|(_, n, _)| *n).collect();
    for section in ["dependencies", "build-dependencies"] {
        let Some(deps) = doc.get(section).and_then(|d| d.as_table()) else {
            continue;
        };
        for dep in deps.keys() {
            if members.contains(&dep.as_str()) && !allowed.contains(&dep.as_str()) {
                problems.push(format!("{dir}: depends on {dep}, which the layout forbids"));
            }
            if dep == "xtask" || (dep == "rackhand-tests" && dir != "xtask") {
                problems.push(format!("{dir}: nothing may depend on {dep}"));
            }
        }
    }
    problems
}

pub(crate) fn run() -> Result<()> {
    let root = util::workspace_root();
    let mut problems = Vec::new();
    for (dir, _, _) in ALLOWED {
        let path = root.join(dir).join("Cargo.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        problems.extend(check_manifest(dir, &text));
    }
    if !problems.is_empty() {
        bail!("workspace policy violations:\n  {}", problems.join("\n  "));
    }
    eprintln!("xtask: workspace policy: ok ({} crates)", ALLOWED.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_manifest;

    #[test]
    fn flags_forbidden_edges_and_missing_lints() {
        let ok = "[package]\nname = \"pxe-server\"\n[dependencies]\npxe-api.workspace = true\n[lints]\nworkspace = true\n";
        assert!(check_manifest("pxe-server", ok).is_empty());
        let bad = "[package]\nname = \"pxe-server\"\n[dependencies]\ninstaller.workspace = true\n";
        let p = check_manifest("pxe-server", bad);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().any(|x| x.contains("installer")));
        assert!(p.iter().any(|x| x.contains("lints")));
        assert!(!check_manifest("recon", "[package]\nname = \"recon\"\n[dependencies]\npxe-server = { path = \"../pxe-server\" }\n[lints]\nworkspace = true\n").is_empty());
    }
}
