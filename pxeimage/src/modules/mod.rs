//! Cold-plug: load a driver for every device the kernel has found, without udev or modprobe.
//!
//! Each device under `/sys/bus/*/devices/*` that needs a driver has a `modalias` file. Its value
//! is matched against `modules.alias` ([`index`], [`glob`]); each matching module is loaded
//! with its dependencies from `modules.dep`, in dependency order, with `finit_module(2)`.
//! Loading a driver can create new devices (virtio_pci creates the virtio devices that
//! virtio_net and virtio_blk bind to), so the caller runs [`ColdPlug::pass`] more than once.
//!
//! Modules may be plain `.ko` files or `.ko.xz`/`.ko.zst`/`.ko.gz`; compressed ones are handed
//! to the kernel with `MODULE_INIT_COMPRESSED_FILE`, which needs a kernel built with
//! `CONFIG_MODULE_DECOMPRESS` (Linux ≥ 5.17) and the matching decompressor. Without that, the
//! initramfs builder must ship uncompressed modules.

pub mod glob;
pub mod index;

use std::collections::{BTreeSet, HashSet};
use std::ffi::CStr;
use std::fs::File;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};

pub use index::{ModIndex, PlanError};

/// Where the initramfs keeps modules: `/lib/modules/<kernel release>`.
pub const MODULES_ROOT: &str = "/lib/modules";
/// The running kernel's release string.
pub const OSRELEASE: &str = "/proc/sys/kernel/osrelease";
/// `MODULE_INIT_COMPRESSED_FILE` from `<linux/module.h>` (Linux 5.17).
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

/// Why cold-plug could not start.
#[derive(Debug, thiserror::Error)]
pub enum ModError {
    /// An index file could not be read.
    #[error("cannot read {path}")]
    ReadIndex {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Distinct modaliases seen.
    pub devices: usize,
    /// Modules newly loaded (including dependencies).
    pub loaded: usize,
    /// Modules that failed to load.
    pub failed: usize,
}

/// The cold-plug state: the index and what has been tried already.
#[derive(Debug)]
pub struct ColdPlug {
    dir: PathBuf,
    index: ModIndex,
    /// `.ko` paths already handed to the kernel (loaded, already present, or failed).
    tried: HashSet<String>,
    /// Modaliases already resolved.
    seen: HashSet<String>,
}

fn read(path: &Path, required: bool) -> Result<String, ModError> {
    match std::fs::read(path) {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(ModError::ReadIndex {
            path: path.to_owned(),
            source,
        }),
    }
}

impl ColdPlug {
    /// Reads the index of the running kernel's modules under `root` (normally `/`).
    pub fn open(root: &Path) -> Result<ColdPlug, ModError> {
        let release = read(&root.join(OSRELEASE.trim_start_matches('/')), true)?;
        let dir = root
            .join(MODULES_ROOT.trim_start_matches('/'))
            .join(release.trim());
        Self::open_dir(dir)
    }

    /// Reads the index in `dir` (a `/lib/modules/<kver>`).
    pub fn open_dir(dir: PathBuf) -> Result<ColdPlug, ModError> {
        let dep = read(&dir.join("modules.dep"), true)?;
        let alias = read(&dir.join("modules.alias"), false)?;
        let softdep = read(&dir.join("modules.softdep"), false)?;
        let (index, issues) = ModIndex::parse(&dep, &alias, &softdep);
        for i in &issues {
            crate::debug!("{}:{}: skipped: {}", i.file, i.line, i.reason);
        }
        crate::info!("modules: {} in {}", index.len(), dir.display());
        Ok(ColdPlug {
            dir,
            index,
            tried: HashSet::new(),
            seen: HashSet::new(),
        })
    }

    /// One pass over `sysfs/bus/*/devices/*/modalias`: loads what matches new modaliases.
    pub fn pass(&mut self, sysfs: &Path) -> PassStats {
        let aliases = read_modaliases(sysfs);
        let mut stats = PassStats {
            devices: aliases.len(),
            ..PassStats::default()
        };
        for alias in aliases {
            if !self.seen.insert(alias.clone()) {
                continue;
            }
            let modules: Vec<String> = self
                .index
                .resolve(&alias)
                .into_iter()
                .map(str::to_owned)
                .collect();
            for m in modules {
                self.load(&m, &mut stats);
            }
        }
        stats
    }

    /// Loads `module` and its dependencies.
    pub fn load(&mut self, module: &str, stats: &mut PassStats) {
        let plan: Vec<String> = match self.index.load_plan(module) {
            Ok(p) => p.into_iter().map(str::to_owned).collect(),
            Err(PlanError::NotFound(_)) => {
                crate::debug!("module {module}: not shipped (or built in)");
                return;
            }
            Err(e) => {
                crate::warn!("module {module}: {e} [{}]", e.code());
                stats.failed += 1;
                return;
            }
        };
        for path in plan {
            if !self.tried.insert(path.clone()) {
                continue;
            }
            match insert(&self.dir.join(&path)) {
                Ok(Inserted::Loaded) => {
                    crate::debug!("loaded {path}");
                    stats.loaded += 1;
                }
                Ok(Inserted::AlreadyPresent) => {}
                Err(e) => {
                    // ENODEV/ENXIO: the driver found no hardware it supports; common and benign
                    if matches!(e, InsertError::Kernel(Errno::ENODEV | Errno::ENXIO)) {
                        crate::debug!("module {path}: no matching device");
                    } else {
                        crate::warn!("module {path}: {e}");
                        stats.failed += 1;
                    }
                    // the modules that needed it cannot load either
                    return;
                }
            }
        }
    }
}

/// Every distinct `modalias` value under `sysfs/bus/*/devices/*`, sorted.
pub fn read_modaliases(sysfs: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(buses) = std::fs::read_dir(sysfs.join("bus")) else {
        return out;
    };
    for bus in buses.flatten() {
        let Ok(devices) = std::fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for dev in devices.flatten() {
            if let Ok(b) = std::fs::read(dev.path().join("modalias")) {
                let s = String::from_utf8_lossy(&b).trim().to_owned();
                if !s.is_empty() {
                    out.insert(s);
                }
            }
        }
    }
    out
}

#[derive(Debug)]
enum Inserted {
    Loaded,
    AlreadyPresent,
}

#[derive(Debug, thiserror::Error)]
enum InsertError {
    #[error("cannot open: {0}")]
    Open(std::io::Error),
    #[error("finit_module failed: {0}")]
    Kernel(Errno),
    #[error(
        "compressed module refused ({0}): the kernel lacks CONFIG_MODULE_DECOMPRESS for this \
         format; ship uncompressed .ko files"
    )]
    Compressed(Errno),
}

fn insert(path: &Path) -> Result<Inserted, InsertError> {
    let file = File::open(path).map_err(InsertError::Open)?;
    let name = path.to_string_lossy();
    let compressed = [".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|ext| name.ends_with(ext));
    let flags = if compressed {
        ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE)
    } else {
        ModuleInitFlags::empty()
    };
    let no_params: &CStr = c"";
    match finit_module(&file, no_params, flags) {
        Ok(()) => Ok(Inserted::Loaded),
        Err(Errno::EEXIST) => Ok(Inserted::AlreadyPresent),
        Err(e @ (Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ENOEXEC)) if compressed => {
            Err(InsertError::Compressed(e))
        }
        Err(e) => Err(InsertError::Kernel(e)),
    }
}
