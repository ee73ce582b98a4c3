//! `cargo xtask initramfs`: the agent's boot image.
//!
//! Builds `pxeimage` for `x86_64-unknown-linux-musl` (profile `release-static`), fetches
//! Debian's kernel (see [`crate::kernel`]), and writes to the output directory (default
//! `target/dist/`):
//!
//! - `pxeimage.initramfs`: a zstd-compressed newc archive with `/init` (the agent, 0755),
//!   `/dev/console` (char 5:1), `/dev`, `/proc`, `/sys`, `/run`, `/tmp`, and
//!   `/lib/modules/<kver>/` holding the driver subset with `modules.dep`, `modules.alias`,
//!   `modules.softdep`, `modules.builtin` and `modules.builtin.alias` regenerated for it.
//!   Module files are **uncompressed `.ko`** (the agent passes them to `finit_module`
//!   as they are); the archive as a whole is zstd.
//! - `vmlinuz`: the kernel from the same package.
//!
//! Trusted snapshot keys: every `*.pub` file of the keys directory (`RACKHAND_SNAPSHOT_KEYS`,
//! default `target/dist-keys/`) is baked in as `/etc/rackhand/snapshot-keys/NAME.pub`; the
//! agent installs only snapshots signed by one of them. `cargo xtask test-os` creates the
//! directory with a generated **test** key when it is absent. Production deployments put
//! their own public keys there (`snapshot-tool keygen` on an offline machine; only the
//! `.pub` file goes here, never the secret key). Without keys the build still succeeds, with
//! a warning, and the agent refuses every install with `no_trusted_keys`.
//!
//! `--agent FILE` uses a prebuilt agent instead of building one (for CI stages that build
//! separately, or to test the pipeline while `pxeimage` does not compile).
//!
//! The archive is reproducible: mtimes are `SOURCE_DATE_EPOCH` (or 0), owners are root, entries
//! are sorted. `--check-reproducible` assembles it twice from scratch and compares digests.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use initramfs::{Spec, WriteOptions};
use sha2::{Digest, Sha256};

use crate::kernel::{self, KernelTree};
use crate::{elf, util};

/// The agent's target triple.
pub(crate) const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// The cargo profile for the agent (defined in the root Cargo.toml).
pub(crate) const AGENT_PROFILE: &str = "release-static";

/// File name of the compressed initramfs in the output directory.
pub(crate) const INITRAMFS_NAME: &str = "pxeimage.initramfs";

/// File name of the kernel in the output directory.
pub(crate) const VMLINUZ_NAME: &str = "vmlinuz";

/// Environment variable naming the trusted snapshot keys directory.
pub(crate) const KEYS_ENV: &str = "RACKHAND_SNAPSHOT_KEYS";

/// Where the keys go inside the initramfs (the agent's `install::KEYS_DIR`).
pub(crate) const KEYS_IN_IMAGE: &str = "etc/rackhand/snapshot-keys";

/// First field of snapshot-tool's public key file format.
const PUBKEY_TAG: &str = "rackhand-snapshot-pubkey v1 ";

/// The trusted snapshot keys directory: `$RACKHAND_SNAPSHOT_KEYS` or `target/dist-keys`.
pub(crate) fn keys_dir() -> PathBuf {
    std::env::var_os(KEYS_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("dist-keys"))
}

/// Reads the `*.pub` files of `dir` (sorted). A missing directory is no keys; a file that
/// does not look like a public key (e.g. a secret key renamed) is an error.
pub(crate) fn read_public_keys(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut keys = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".pub") || name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        if data.len() > 1024 || !data.starts_with(PUBKEY_TAG.as_bytes()) {
            bail!(
                "bad_public_key: {} is not a snapshot-tool public key file",
                path.display()
            );
        }
        keys.push((name, data));
    }
    keys.sort();
    Ok(keys)
}

/// Options of `cargo xtask initramfs`.
#[derive(Debug)]
pub(crate) struct Options {
    /// Where `pxeimage.initramfs` and `vmlinuz` go.
    pub(crate) out_dir: PathBuf,
    /// Assemble twice and compare digests.
    pub(crate) check_reproducible: bool,
    /// Use this prebuilt agent instead of building `pxeimage` (it is still checked to be
    /// static).
    pub(crate) agent: Option<PathBuf>,
}

impl Options {
    /// Parses the subcommand's arguments.
    pub(crate) fn parse(args: &[String]) -> Result<Self> {
        let mut opts = Self {
            out_dir: target_dir().join("dist"),
            check_reproducible: false,
            agent: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--check-reproducible" => opts.check_reproducible = true,
                "--out" => {
                    opts.out_dir = it.next().context("--out needs a directory")?.into();
                }
                "--agent" => {
                    opts.agent = Some(it.next().context("--agent needs a file")?.into());
                }
                other => bail!(
                    "unknown option {other:?} (expected --out DIR, --agent FILE, --check-reproducible)"
                ),
            }
        }
        Ok(opts)
    }
}

/// What a build produced.
#[derive(Debug)]
pub(crate) struct Built {
    /// The agent binary that became `/init`.
    pub(crate) pxeimage: PathBuf,
    /// The compressed initramfs.
    pub(crate) initramfs: PathBuf,
    /// The kernel package it came from.
    pub(crate) kernel: kernel::KernelPackage,
}

/// Runs `cargo xtask initramfs`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let opts = Options::parse(args)?;
    build(&opts).map(|_| ())
}

/// Builds the agent, fetches the kernel and writes the initramfs and kernel to `opts.out_dir`.
pub(crate) fn build(opts: &Options) -> Result<Built> {
    let pxeimage = match &opts.agent {
        Some(prebuilt) => {
            check_static(prebuilt)?;
            prebuilt.clone()
        }
        None => build_agent()?,
    };
    let tree = kernel::fetch(&target_dir().join("kernel-cache"))?;
    let mtime = source_date_epoch()?;
    let work = target_dir().join("initramfs-work");

    let image = assemble(&pxeimage, &tree, mtime, &work.join("stage-1"))?;
    if opts.check_reproducible {
        let again = assemble(&pxeimage, &tree, mtime, &work.join("stage-2"))?;
        let (a, b) = (sha256_hex(&image.compressed), sha256_hex(&again.compressed));
        if a != b {
            let diff = first_difference(&image.listing, &again.listing);
            bail!(
                "not_reproducible: two builds differ: {a} vs {b}; first differing listing line: {diff}"
            );
        }
        eprintln!("xtask: reproducible: both builds are sha256 {a}");
    }

    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let initramfs = opts.out_dir.join(INITRAMFS_NAME);
    let vmlinuz = opts.out_dir.join(VMLINUZ_NAME);
    write_atomic(&initramfs, &image.compressed)?;
    let kernel_bytes = std::fs::read(tree.vmlinuz())
        .with_context(|| format!("reading {}", tree.vmlinuz().display()))?;
    write_atomic(&vmlinuz, &kernel_bytes)?;
    let listing_path = work.join(format!("{INITRAMFS_NAME}.listing"));
    write_atomic(&listing_path, image.listing.as_bytes())?;

    eprintln!(
        "xtask: {} {} bytes (cpio {} bytes, {} entries, {} modules{}), sha256 {}",
        initramfs.display(),
        image.compressed.len(),
        image.cpio_len,
        image.entries,
        image.module_count,
        if image.builtin.is_empty() {
            String::new()
        } else {
            format!(", built in: {}", image.builtin.join(" "))
        },
        sha256_hex(&image.compressed)
    );
    eprintln!("xtask: listing in {}", listing_path.display());
    eprintln!(
        "xtask: {} {} bytes (kernel {})",
        vmlinuz.display(),
        kernel_bytes.len(),
        tree.package.kver()
    );
    Ok(Built {
        pxeimage,
        initramfs,
        kernel: tree.package,
    })
}

/// Builds `pxeimage` for the musl target and checks it is static.
pub(crate) fn build_agent() -> Result<PathBuf> {
    util::run(util::cargo().current_dir(util::workspace_root()).args([
        "build",
        "--package",
        "pxeimage",
        "--target",
        MUSL_TARGET,
        "--profile",
        AGENT_PROFILE,
    ]))?;
    let bin = target_dir()
        .join(MUSL_TARGET)
        .join(AGENT_PROFILE)
        .join("pxeimage");
    check_static(&bin)?;
    Ok(bin)
}

/// Fails unless `bin` is a static ELF binary (no loader, no shared libraries).
pub(crate) fn check_static(bin: &Path) -> Result<()> {
    let bytes = std::fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    match elf::linkage(&bytes).with_context(|| format!("parsing {}", bin.display()))? {
        elf::Linkage::Static => Ok(()),
        elf::Linkage::Dynamic {
            interpreter,
            needed,
        } => bail!(
            "not_static: {} is dynamically linked (interpreter {:?}, {needed} needed libraries)",
            bin.display(),
            interpreter.unwrap_or_default()
        ),
    }
}

/// `SOURCE_DATE_EPOCH` if set (it must be a 32-bit number of seconds), else 0.
fn source_date_epoch() -> Result<u32> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => s.trim().parse::<u32>().with_context(|| {
            format!("bad_source_date_epoch: SOURCE_DATE_EPOCH={s:?} is not seconds in 0..2^32")
        }),
        Err(std::env::VarError::NotPresent) => Ok(0),
        Err(e) => Err(e).context("bad_source_date_epoch: SOURCE_DATE_EPOCH is not UTF-8"),
    }
}

/// One assembled image.
struct Image {
    compressed: Vec<u8>,
    cpio_len: usize,
    entries: usize,
    module_count: usize,
    builtin: Vec<String>,
    listing: String,
}

/// Stages the modules in `stage`, builds the spec and writes the compressed archive.
fn assemble(pxeimage: &Path, tree: &KernelTree, mtime: u32, stage: &Path) -> Result<Image> {
    let staged = kernel::stage_modules(tree, kernel::AGENT_MODULES, stage)?;
    let agent =
        std::fs::read(pxeimage).with_context(|| format!("reading {}", pxeimage.display()))?;
    let keys_dir = keys_dir();
    let keys = read_public_keys(&keys_dir)?;
    if keys.is_empty() {
        eprintln!(
            "xtask: warning: no *.pub in {} ({KEYS_ENV}): the agent will refuse every install \
             (no_trusted_keys); `cargo xtask test-os` creates a test key there",
            keys_dir.display()
        );
    } else {
        eprintln!(
            "xtask: trusted snapshot keys from {}: {}",
            keys_dir.display(),
            keys.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }

    let mut spec = Spec::new();
    spec.add_file("init", 0o755, agent)?;
    spec.add_dir("dev", 0o755)?;
    spec.add_char_device("dev/console", 0o600, 5, 1)?;
    spec.add_dir("proc", 0o555)?;
    spec.add_dir("sys", 0o555)?;
    spec.add_dir("run", 0o755)?;
    spec.add_dir("tmp", 0o1777)?;
    spec.add_dir(KEYS_IN_IMAGE, 0o755)?;
    for (name, data) in keys {
        spec.add_file(&format!("{KEYS_IN_IMAGE}/{name}"), 0o644, data)?;
    }
    let modules_root = format!("lib/modules/{}", tree.package.kver());
    for (rel, data) in staged.files {
        spec.add_file(&format!("{modules_root}/{rel}"), 0o644, data)?;
    }

    let (cpio, compressed) = initramfs::build_zstd(&spec, WriteOptions { mtime })
        .context("writing the initramfs archive")?;
    // Verify what was written: it must read back, and the kernel must accept the window.
    let members = initramfs::read_archive(&cpio).context("re-reading the written archive")?;
    let window =
        initramfs::frame_window_size(&compressed).context("reading the zstd frame header")?;
    if window > initramfs::ZSTD_MAX_WINDOW {
        bail!(
            "zstd_window_too_large: {window} bytes > {}",
            initramfs::ZSTD_MAX_WINDOW
        );
    }
    Ok(Image {
        cpio_len: cpio.len(),
        entries: members.len(),
        module_count: staged.selection.files.len(),
        builtin: staged.selection.builtin.into_iter().collect(),
        listing: initramfs::listing(&members),
        compressed,
    })
}

/// Lowercase hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The cargo target directory: `CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::workspace_root().join("target"))
}

/// Writes `data` to a temporary file beside `path`, then renames it over `path`, so a reader
/// (or an interrupted build) never sees a partial file.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

fn first_difference(a: &str, b: &str) -> String {
    a.lines()
        .zip(b.lines())
        .find(|(x, y)| x != y)
        .map(|(x, y)| format!("{x:?} vs {y:?}"))
        .unwrap_or_else(|| "(listings are identical: compression differs)".into())
}
