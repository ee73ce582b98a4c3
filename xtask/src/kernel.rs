//! Debian's kernel, fetched without installing it, and the module subset the agent needs.
//!
//! The `linux-image-amd64` metapackage names the current kernel package in its `Depends`
//! (`linux-image-6.1.0-56-amd64 (= 6.1.192-2)`). That exact version is fetched with
//! `apt-get download` into `target/kernel-cache/`, unpacked with `dpkg-deb -x` (nothing is
//! written to the host's `/boot` or `/lib/modules`), and indexed with `depmod -b`, because
//! the .deb ships no `modules.dep` (its postinst generates one).
//!
//! The parsing and module resolution here are pure; [`fetch`] and [`stage_modules`] are the
//! I/O around them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

/// The metapackage whose `Depends` names the current kernel image package.
pub(crate) const META_PACKAGE: &str = "linux-image-amd64";

/// Drivers for common server and virtual hardware, by module name. Their dependencies (and
/// soft dependencies) are added by [`resolve_modules`].
pub(crate) const AGENT_MODULES: &[&str] = &[
    // Virtual machines (QEMU/KVM).
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "e1000",
    // Intel server NICs, 1 to 100 Gb/s.
    "e1000e",
    "igb",
    "ixgbe",
    "i40e",
    "ice",
    // Mellanox/NVIDIA ConnectX-4 and later.
    "mlx5_core",
    // Broadcom NICs common in Dell and HPE servers.
    "bnxt_en",
    "tg3",
    // Storage: SATA (AHCI, and the PIIX controller of QEMU's `pc` machine), NVMe, SAS/RAID.
    "ahci",
    "libahci",
    "libata",
    "ata_piix",
    "nvme",
    "nvme_core",
    "megaraid_sas",
    "mpt3sas",
    "sd_mod",
    "scsi_mod",
    // BMC access for inventory (serial number, firmware) and power control.
    "ipmi_si",
    "ipmi_devintf",
    "ipmi_msghandler",
];

/// The kernel image package chosen by the metapackage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelPackage {
    /// Package name, e.g. `linux-image-6.1.0-56-amd64`.
    pub(crate) name: String,
    /// Exact Debian version, e.g. `6.1.192-2`.
    pub(crate) version: String,
}

impl KernelPackage {
    /// The kernel release (`uname -r`): the package name without `linux-image-`.
    pub(crate) fn kver(&self) -> &str {
        self.name.strip_prefix("linux-image-").unwrap_or(&self.name)
    }

    /// The file name `apt-get download` gives the .deb (an epoch's `:` becomes `%3a`).
    pub(crate) fn deb_file_name(&self) -> String {
        format!(
            "{}_{}_amd64.deb",
            self.name,
            self.version.replace(':', "%3a")
        )
    }
}

/// Finds the kernel image package in the metapackage's `apt-cache show` stanza.
pub(crate) fn parse_meta_depends(stanza: &str) -> Result<KernelPackage> {
    let depends = stanza
        .lines()
        .find_map(|l| l.strip_prefix("Depends:"))
        .context("kernel_meta_no_depends: the metapackage stanza has no Depends field")?;
    for item in depends.split(',') {
        // An item is `name`, `name (op version)`, or alternatives `a | b`; take the first.
        let item = item.split('|').next().unwrap_or_default().trim();
        let (name, rest) = item.split_once(' ').unwrap_or((item, ""));
        if !name.starts_with("linux-image-") || !name.ends_with("-amd64") {
            continue;
        }
        let version = rest
            .trim()
            .strip_prefix("(=")
            .and_then(|v| v.strip_suffix(')'))
            .map(str::trim)
            .with_context(|| {
                format!(
                    "kernel_meta_unpinned: {name} is not pinned with `(= version)` in {depends:?}"
                )
            })?;
        let pkg = KernelPackage {
            name: name.to_owned(),
            version: version.to_owned(),
        };
        let safe = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".+-~:_".contains(&b))
        };
        if !safe(&pkg.name) || !safe(&pkg.version) || pkg.kver().contains(':') {
            bail!("kernel_meta_bad_name: unexpected characters in {item:?}");
        }
        return Ok(pkg);
    }
    bail!("kernel_meta_no_image: no linux-image-*-amd64 in Depends: {depends:?}")
}

/// Module name as the kernel knows it: file stem without `.ko`, `-` replaced by `_`.
pub(crate) fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file.strip_suffix(".ko")?;
    Some(stem.replace('-', "_"))
}

/// What to put in the initramfs: module paths relative to `/lib/modules/<kver>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModuleSelection {
    /// Every module file to copy, sorted.
    pub(crate) files: BTreeSet<String>,
    /// Requested modules that are built into the kernel (nothing to copy).
    pub(crate) builtin: BTreeSet<String>,
}

/// A full kernel's module index files, as text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexFiles<'a> {
    /// `modules.dep`.
    pub(crate) dep: &'a str,
    /// `modules.builtin`.
    pub(crate) builtin: &'a str,
    /// `modules.softdep`.
    pub(crate) softdep: &'a str,
    /// `modules.alias`.
    pub(crate) alias: &'a str,
}

/// Resolves `wanted` against a full kernel's index: each module, its hard dependencies, and
/// its `pre:`/`post:` soft dependencies, transitively. A soft dependency may name a module or
/// an alias (`crct10dif`); every module providing that exact alias is taken. Soft
/// dependencies that resolve to nothing are skipped; a wanted module that is neither a
/// module nor built in is an error.
pub(crate) fn resolve_modules(wanted: &[&str], idx: IndexFiles<'_>) -> Result<ModuleSelection> {
    let IndexFiles {
        dep: modules_dep,
        builtin: modules_builtin,
        softdep: modules_softdep,
        alias: modules_alias,
    } = idx;
    // name -> (path, deps)
    let mut index: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for (n, line) in modules_dep.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (path, deps) = line
            .split_once(':')
            .with_context(|| format!("modules_dep_syntax: line {} has no ':'", n + 1))?;
        let name = module_name(path).with_context(|| {
            format!("modules_dep_syntax: line {}: {path:?} is not a .ko", n + 1)
        })?;
        let deps = deps.split_whitespace().map(str::to_owned).collect();
        index.insert(name, (path.to_owned(), deps));
    }
    let builtin: BTreeSet<String> = modules_builtin.lines().filter_map(module_name).collect();
    let mut soft: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in modules_softdep.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("softdep") {
            continue;
        }
        let Some(module) = words.next() else { continue };
        let others = words
            .filter(|w| *w != "pre:" && *w != "post:")
            .map(|w| w.replace('-', "_"))
            .collect();
        soft.insert(module.replace('-', "_"), others);
    }

    // Exact (non-glob) aliases only: soft dependencies name an alias literally.
    let mut aliases: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for line in modules_alias.lines() {
        let mut words = line.split_whitespace();
        if let (Some("alias"), Some(alias), Some(module), None) =
            (words.next(), words.next(), words.next(), words.next())
        {
            aliases
                .entry(alias)
                .or_default()
                .push(module.replace('-', "_"));
        }
    }

    let mut selection = ModuleSelection {
        files: BTreeSet::new(),
        builtin: BTreeSet::new(),
    };
    let mut seen = BTreeSet::new();
    let mut queue: Vec<(String, bool)> =
        wanted.iter().map(|w| (w.replace('-', "_"), true)).collect();
    // Each module is expanded once, so the loop ends after at most |index| + |wanted| turns.
    while let Some((name, required)) = queue.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some((path, deps)) = index.get(&name) {
            selection.files.insert(path.clone());
            for dep in deps {
                selection.files.insert(dep.clone());
                if let Some(dep_name) = module_name(dep) {
                    queue.push((dep_name, true));
                }
            }
            for s in soft.get(&name).into_iter().flatten() {
                // A soft dependency is a hint; one that does not exist is skipped.
                queue.push((s.clone(), false));
            }
        } else if builtin.contains(&name) {
            if required && wanted.iter().any(|w| w.replace('-', "_") == name) {
                selection.builtin.insert(name);
            }
        } else if !required {
            for provider in aliases.get(name.as_str()).into_iter().flatten() {
                queue.push((provider.clone(), false));
            }
        } else {
            bail!(
                "module_not_found: kernel module {name:?} is neither in modules.dep nor built in"
            );
        }
    }
    Ok(selection)
}

/// An unpacked kernel package with its module index.
#[derive(Debug, Clone)]
pub(crate) struct KernelTree {
    /// The package it came from.
    pub(crate) package: KernelPackage,
    /// The extraction root (holds `boot/` and `lib/modules/<kver>/`).
    pub(crate) root: PathBuf,
}

impl KernelTree {
    /// `lib/modules/<kver>` inside the extraction.
    pub(crate) fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(self.package.kver())
    }

    /// The kernel image.
    pub(crate) fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.package.kver()))
    }
}

/// Marker written into an extraction once `depmod` has finished, so an interrupted unpack is
/// never mistaken for a complete one.
const COMPLETE_MARKER: &str = ".rackhand-complete";

/// Resolves, downloads (once) and unpacks (once) the current Debian kernel under `cache`.
pub(crate) fn fetch(cache: &Path) -> Result<KernelTree> {
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let mut updated = false;
    let stanza = match show_meta() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("xtask: {e:#}; running apt-get update once");
            apt_update()?;
            updated = true;
            show_meta()?
        }
    };
    let package = parse_meta_depends(&stanza)?;
    eprintln!(
        "xtask: kernel package {} {} (kernel {})",
        package.name,
        package.version,
        package.kver()
    );
    let deb = cache.join(package.deb_file_name());
    if !deb.is_file() {
        let spec = format!("{}={}", package.name, package.version);
        let download = || {
            util::run(
                Command::new("apt-get")
                    .current_dir(cache)
                    .args(["download", "-q", &spec]),
            )
        };
        if let Err(e) = download() {
            if updated {
                return Err(e);
            }
            eprintln!("xtask: {e:#}; running apt-get update once");
            apt_update()?;
            download()?;
        }
        if !deb.is_file() {
            bail!(
                "kernel_download_missing: apt-get download succeeded but {} is not there",
                deb.display()
            );
        }
    }
    let root = cache.join(format!(
        "{}_{}",
        package.name,
        package.version.replace(':', "%3a")
    ));
    if !root.join(COMPLETE_MARKER).is_file() {
        unpack(&deb, &root, package.kver())?;
    }
    let tree = KernelTree { package, root };
    if !tree.vmlinuz().is_file() {
        bail!(
            "kernel_no_vmlinuz: {} is missing from the package",
            tree.vmlinuz().display()
        );
    }
    Ok(tree)
}

fn show_meta() -> Result<String> {
    util::output(Command::new("apt-cache").args(["show", "--no-all-versions", META_PACKAGE]))
}

fn apt_update() -> Result<()> {
    util::run(Command::new("apt-get").args(["update", "-qq"]))
}

/// Unpacks `deb` into a fresh temporary directory next to `root`, indexes it, and renames it
/// into place, so concurrent or interrupted runs never see half a tree.
fn unpack(deb: &Path, root: &Path, kver: &str) -> Result<()> {
    let mut tmp = root.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    util::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp))?;
    util::run(Command::new("depmod").arg("-b").arg(&tmp).arg(kver))?;
    std::fs::write(tmp.join(COMPLETE_MARKER), b"")
        .with_context(|| format!("marking {}", tmp.display()))?;
    if root.exists() {
        // A stale, incomplete extraction from an interrupted run.
        std::fs::remove_dir_all(root).with_context(|| format!("removing {}", root.display()))?;
    }
    if let Err(e) = std::fs::rename(&tmp, root) {
        // Another run may have won the race; use its tree if it is complete.
        let _ = std::fs::remove_dir_all(&tmp);
        if !root.join(COMPLETE_MARKER).is_file() {
            return Err(e).with_context(|| format!("renaming into {}", root.display()));
        }
    }
    Ok(())
}

/// The module subset, indexed by `depmod` in a staging tree of its own.
#[derive(Debug)]
pub(crate) struct StagedModules {
    /// The selection that was staged.
    pub(crate) selection: ModuleSelection,
    /// `(path relative to /lib/modules/<kver>, contents)`, sorted by path: the module files
    /// and the regenerated index files.
    pub(crate) files: Vec<(String, Vec<u8>)>,
}

/// Index files copied from the full tree so `depmod` on the subset knows the load order and
/// the built-in modules.
const CARRIED_INDEX_FILES: &[&str] = &[
    "modules.order",
    "modules.builtin",
    "modules.builtin.modinfo",
];

/// Index files the initramfs carries (text forms only: the agent parses text).
pub(crate) const SHIPPED_INDEX_FILES: &[&str] = &[
    "modules.dep",
    "modules.alias",
    "modules.softdep",
    "modules.builtin",
];

/// Copies the modules for `wanted` into `stage/lib/modules/<kver>`, runs `depmod -b` there,
/// and returns the module files and regenerated index files.
pub(crate) fn stage_modules(
    tree: &KernelTree,
    wanted: &[&str],
    stage: &Path,
) -> Result<StagedModules> {
    let src = tree.modules_dir();
    let read = |name: &str| -> Result<String> {
        let p = src.join(name);
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    let (dep, builtin, softdep, alias) = (
        read("modules.dep")?,
        read("modules.builtin")?,
        read("modules.softdep")?,
        read("modules.alias")?,
    );
    let selection = resolve_modules(
        wanted,
        IndexFiles {
            dep: &dep,
            builtin: &builtin,
            softdep: &softdep,
            alias: &alias,
        },
    )?;
    if stage.exists() {
        std::fs::remove_dir_all(stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    let dst = stage.join("lib/modules").join(tree.package.kver());
    for rel in selection
        .files
        .iter()
        .map(String::as_str)
        .chain(CARRIED_INDEX_FILES.iter().copied())
    {
        let from = src.join(rel);
        let to = dst.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    util::run(
        Command::new("depmod")
            .arg("-b")
            .arg(stage)
            .arg(tree.package.kver()),
    )?;

    let mut files = Vec::new();
    for rel in selection
        .files
        .iter()
        .map(String::as_str)
        .chain(SHIPPED_INDEX_FILES.iter().copied())
    {
        let p = dst.join(rel);
        let data = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        files.push((rel.to_owned(), data));
    }
    files.sort();
    Ok(StagedModules { selection, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = "Package: linux-image-amd64\nSource: linux-signed-amd64 (6.1.192+2)\n\
        Version: 6.1.192-2\nDepends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)\n\
        Description: Linux for 64-bit PCs (meta-package)\n";

    #[test]
    fn meta_depends_names_the_image() {
        let pkg = parse_meta_depends(META).unwrap();
        assert_eq!(pkg.name, "linux-image-6.1.0-56-amd64");
        assert_eq!(pkg.version, "6.1.192-2");
        assert_eq!(pkg.kver(), "6.1.0-56-amd64");
        assert_eq!(
            pkg.deb_file_name(),
            "linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb"
        );
        let epoch = KernelPackage {
            name: "linux-image-x-amd64".into(),
            version: "1:2-3".into(),
        };
        assert_eq!(
            epoch.deb_file_name(),
            "linux-image-x-amd64_1%3a2-3_amd64.deb"
        );
    }

    #[test]
    fn meta_depends_errors() {
        let cases = [
            ("Package: x\n", "kernel_meta_no_depends"),
            ("Depends: libc6 (>= 2)\n", "kernel_meta_no_image"),
            (
                "Depends: linux-image-6.1.0-56-amd64\n",
                "kernel_meta_unpinned",
            ),
            (
                "Depends: linux-image-6.1.0-56-amd64 (>= 6.1)\n",
                "kernel_meta_unpinned",
            ),
            (
                "Depends: linux-image-$(x)-amd64 (= 1)\n",
                "kernel_meta_bad_name",
            ),
            (
                "Depends: linux-image-6.1-amd64 (= 1 2/..)\n",
                "kernel_meta_bad_name",
            ),
        ];
        for (stanza, code) in cases {
            let err = format!("{:#}", parse_meta_depends(stanza).unwrap_err());
            assert!(err.starts_with(code), "{stanza:?}: {err}");
        }
    }

    const DEP: &str = "\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/net/ethernet/mellanox/mlx5/core/mlx5_core.ko: kernel/drivers/net/ethernet/mellanox/mlxfw/mlxfw.ko
kernel/drivers/net/ethernet/mellanox/mlxfw/mlxfw.ko:
kernel/drivers/scsi/sd_mod.ko: kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_common.ko:
kernel/lib/crc-t10dif.ko:
kernel/arch/x86/crypto/crct10dif-pclmul.ko:
kernel/drivers/unrelated/big.ko:
";
    const BUILTIN: &str = "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n";
    const SOFTDEP: &str = "# Soft dependencies\nsoftdep sd_mod pre: crc-t10dif post: missing_mod\n\
        softdep crc_t10dif pre: crct10dif\n";
    const ALIAS: &str = "alias crct10dif crct10dif_pclmul\nalias crct10dif crct10dif_generic\n\
        alias pci:v00001AF4d00001041sv*sd*bc*sc*i* virtio_pci\nalias big* big\n";

    fn index() -> IndexFiles<'static> {
        IndexFiles {
            dep: DEP,
            builtin: BUILTIN,
            softdep: SOFTDEP,
            alias: ALIAS,
        }
    }

    #[test]
    fn resolves_deps_softdeps_and_builtins() {
        let sel =
            resolve_modules(&["virtio_net", "virtio-pci", "sd_mod", "virtio"], index()).unwrap();
        let files: Vec<&str> = sel.files.iter().map(String::as_str).collect();
        assert_eq!(
            files,
            [
                "kernel/arch/x86/crypto/crct10dif-pclmul.ko",
                "kernel/drivers/net/net_failover.ko",
                "kernel/drivers/net/virtio_net.ko",
                "kernel/drivers/scsi/scsi_common.ko",
                "kernel/drivers/scsi/sd_mod.ko",
                "kernel/drivers/virtio/virtio_pci.ko",
                "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
                "kernel/lib/crc-t10dif.ko",
                "kernel/net/core/failover.ko",
            ]
        );
        assert_eq!(sel.builtin.iter().collect::<Vec<_>>(), ["virtio"]);
    }

    #[test]
    fn unknown_module_is_an_error() {
        let err = resolve_modules(&["no_such_driver"], index()).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("module_not_found"),
            "{err:#}"
        );
        let garbage = IndexFiles {
            dep: "garbage line\n",
            ..index()
        };
        let err = resolve_modules(&["x"], garbage).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("modules_dep_syntax"),
            "{err:#}"
        );
    }

    #[test]
    fn module_names() {
        assert_eq!(
            module_name("kernel/lib/crc-t10dif.ko").as_deref(),
            Some("crc_t10dif")
        );
        assert_eq!(module_name("kernel/lib/x.ko.xz"), None);
        assert_eq!(module_name("x.ko").as_deref(), Some("x"));
    }
}
