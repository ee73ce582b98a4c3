//! The `snapshot-tool` command line (feature `cli`). Each subcommand is a clap struct with a
//! `run`; results go to stdout, progress and errors to stderr. An error is printed once, as
//! `snapshot-tool: error[CODE]: outer: cause: cause`, and the exit status is 1.

mod progress;
mod qemu;

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::build::{BuildError, BuildOptions, DEFAULT_LEVEL, build_dir, sign_dir, validate_name};
use crate::format::{
    ChunkError, DEFAULT_SECTOR_SIZE, DigestAlgorithm, FormatError, MAX_SIGNATURE_FILE_LEN,
    PublicKey, SecretKey, SignatureError,
};
use crate::inspect::{human_bytes, inspect_dir, render_json, render_text};
use crate::verify::{VerifyError, verify_dir};
use progress::Progress;

/// Failures of the command line itself (the library's errors carry their own codes).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// `qemu-img` could not be started.
    #[error("cannot run qemu-img (install qemu-utils)")]
    QemuImgSpawn {
        /// The spawn error.
        #[source]
        source: std::io::Error,
    },
    /// `qemu-img convert` failed.
    #[error("qemu-img convert failed ({status}): {stderr}")]
    QemuImgFailed {
        /// Exit status.
        status: String,
        /// Its stderr (truncated).
        stderr: String,
    },
    /// A raw image was given that is really qcow2.
    #[error("{} is a qcow2 image; pass --from-qcow2", path.display())]
    LooksLikeQcow2 {
        /// The image.
        path: PathBuf,
    },
    /// `--from-qcow2` was given for something that is not qcow2.
    #[error("{} is not a qcow2 image", path.display())]
    NotQcow2 {
        /// The image.
        path: PathBuf,
    },
    /// keygen would overwrite a key.
    #[error("{} already exists; refusing to overwrite a key", path.display())]
    KeyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A `--pubkey` directory holds no `*.pub` file.
    #[error("no *.pub key in {}", path.display())]
    NoKeys {
        /// The directory.
        path: PathBuf,
    },
}

impl CliError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::QemuImgSpawn { .. } => "qemu_img_missing",
            Self::QemuImgFailed { .. } => "qemu_img_failed",
            Self::LooksLikeQcow2 { .. } => "image_is_qcow2",
            Self::NotQcow2 { .. } => "not_qcow2",
            Self::KeyExists { .. } => "key_exists",
            Self::NoKeys { .. } => "no_keys",
        }
    }
}

/// The reason code of the first error in the chain that has one.
pub fn reason_code(err: &anyhow::Error) -> Option<&'static str> {
    err.chain().find_map(|e| {
        if let Some(e) = e.downcast_ref::<CliError>() {
            Some(e.code())
        } else if let Some(e) = e.downcast_ref::<BuildError>() {
            Some(e.code())
        } else if let Some(e) = e.downcast_ref::<VerifyError>() {
            Some(e.code())
        } else if let Some(e) = e.downcast_ref::<FormatError>() {
            Some(e.code())
        } else if let Some(e) = e.downcast_ref::<SignatureError>() {
            Some(e.code())
        } else {
            e.downcast_ref::<ChunkError>().map(ChunkError::code)
        }
    })
}

/// Build, sign, inspect and verify rackhand OS snapshots.
///
/// A snapshot is a directory with manifest.bin (signed chunk table), manifest.sig and
/// data.zst (independently compressed chunks of a raw disk image).
#[derive(Debug, Parser)]
#[command(name = "snapshot-tool", version, max_term_width = 80)]
pub struct Cli {
    /// No progress output on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a signing key: KEYFILE (secret, mode 0600) and KEYFILE.pub.
    Keygen(KeygenArgs),
    /// Build a snapshot from a raw (or qcow2) disk image.
    Build(BuildArgs),
    /// Verify a snapshot's contents, then (re)sign its manifest.
    Sign(SignArgs),
    /// Show what a snapshot's manifest says (no signature check).
    Inspect(InspectArgs),
    /// Check signature, manifest, every chunk and the image digest.
    Verify(VerifyArgs),
}

/// `keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Secret key file to create; the public key goes to KEYFILE.pub.
    #[arg(long, value_name = "KEYFILE")]
    pub out: PathBuf,
}

/// `build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The disk image (raw unless --from-qcow2; a block device works too).
    #[arg(long, value_name = "IMG")]
    pub image: PathBuf,
    /// The image is qcow2: convert it with `qemu-img convert` first.
    #[arg(long)]
    pub from_qcow2: bool,
    /// Directory in which the snapshot directory NAME is created.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Snapshot name: 1-64 of A-Z a-z 0-9 . _ - (not starting with . or -).
    #[arg(long)]
    pub name: String,
    /// Chunk size, a multiple of 4 KiB in 1M..64M (suffixes K, M, G).
    #[arg(long, value_name = "N", default_value = "4M", value_parser = parse_size)]
    pub chunk_size: u32,
    /// Logical sector size of the image.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_SECTOR_SIZE)]
    pub sector_size: u32,
    /// zstd compression level (1-19).
    #[arg(long, default_value_t = DEFAULT_LEVEL)]
    pub level: i32,
    /// Compression threads [default: number of CPUs].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Digest of every chunk and of the image: sha256 (format version 1, readable by every
    /// rackhand release) or blake3 (format version 2, ~3.5x faster to verify: for machines
    /// whose installs are CPU-bound).
    #[arg(long, value_name = "ALG", default_value = "sha256", value_parser = parse_digest)]
    pub digest: DigestAlgorithm,
    /// Sign with this secret key file.
    #[arg(long, value_name = "SECRET")]
    pub key: Option<PathBuf>,
}

/// `sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// Secret key file.
    #[arg(long, value_name = "SECRET")]
    pub key: PathBuf,
    /// Snapshot directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Snapshot directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Print JSON (with the whole chunk table) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Trusted public key file, or a directory of *.pub files (repeatable).
    #[arg(long, value_name = "PUB", required = true)]
    pub pubkey: Vec<PathBuf>,
    /// Snapshot directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Parses `sha256` or `blake3`.
fn parse_digest(text: &str) -> Result<DigestAlgorithm, String> {
    text.parse()
        .map_err(|e: crate::format::FormatError| e.to_string())
}

/// Parses "4194304", "4M", "4MiB", "512K", "1G" into bytes.
fn parse_size(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, suffix) = t.split_at(digits_end);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 4M)"))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => return Err(format!("{text:?}: unknown unit (use K, M or G)")),
    };
    number
        .checked_mul(1 << shift)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Runs the command line; the process exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = reason_code(&err).unwrap_or("error");
            eprintln!("snapshot-tool: error[{code}]: {err:#}");
            ExitCode::FAILURE
        }
    }
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Keygen(a) => a.run(),
            Command::Build(a) => a.run(self.quiet),
            Command::Sign(a) => a.run(self.quiet),
            Command::Inspect(a) => a.run(),
            Command::Verify(a) => a.run(self.quiet),
        }
    }
}

fn read_key_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    crate::format::read_capped(file, MAX_SIGNATURE_FILE_LEN)
        .with_context(|| format!("cannot read {}", path.display()))
}

fn load_secret_key(path: &Path) -> anyhow::Result<SecretKey> {
    let bytes = read_key_file(path)?;
    SecretKey::parse(&bytes).with_context(|| format!("secret key {}", path.display()))
}

/// Loads `--pubkey` arguments: files, or every `*.pub` in a directory (sorted).
fn load_public_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    let mut keys = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut files: Vec<PathBuf> = fs::read_dir(path)
                .with_context(|| format!("cannot list {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(CliError::NoKeys { path: path.clone() }.into());
            }
            for file in files {
                let bytes = read_key_file(&file)?;
                keys.push(
                    PublicKey::parse(&bytes)
                        .with_context(|| format!("public key {}", file.display()))?,
                );
            }
        } else {
            let bytes = read_key_file(path)?;
            keys.push(
                PublicKey::parse(&bytes)
                    .with_context(|| format!("public key {}", path.display()))?,
            );
        }
    }
    Ok(keys)
}

/// `KEYFILE` + ".pub".
fn pub_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".pub");
    PathBuf::from(s)
}

fn create_new(path: &Path, mode: u32, contents: &str) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::Error::new(CliError::KeyExists {
                    path: path.to_path_buf(),
                })
            } else {
                anyhow::Error::new(e).context(format!("cannot create {}", path.display()))
            }
        })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

impl KeygenArgs {
    /// Generates a key pair from the OS random source.
    pub fn run(self) -> anyhow::Result<()> {
        use rand::TryRngCore as _;
        let public_path = pub_path(&self.out);
        for path in [&self.out, &public_path] {
            if path.symlink_metadata().is_ok() {
                return Err(CliError::KeyExists { path: path.clone() }.into());
            }
        }
        let mut seed = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut seed)
            .context("cannot read the OS random source")?;
        let secret = SecretKey::from_seed(&seed);
        seed.fill(0);
        create_new(&self.out, 0o600, &secret.to_file())?;
        create_new(&public_path, 0o644, &secret.public().to_file())?;
        println!("key id      {}", secret.public().id());
        println!("secret key  {} (keep private)", self.out.display());
        println!("public key  {}", public_path.display());
        Ok(())
    }
}

/// Opens an image and finds its size (seeking to the end works for block devices too).
fn open_image(path: &Path) -> anyhow::Result<(File, u64, [u8; 4])> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file
        .seek(SeekFrom::End(0))
        .with_context(|| format!("cannot find the size of {}", path.display()))?;
    let mut head = [0u8; 4];
    file.seek(SeekFrom::Start(0))
        .and_then(|_| {
            if size >= 4 {
                file.read_exact(&mut head)
            } else {
                Ok(())
            }
        })
        .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok((file, size, head))
}

impl BuildArgs {
    /// Builds (converting qcow2 first), then prints a summary.
    pub fn run(self, quiet: bool) -> anyhow::Result<()> {
        validate_name(&self.name)?;
        let key = self.key.as_deref().map(load_secret_key).transpose()?;
        let (_, _, head) = open_image(&self.image)?;
        let _temp;
        let raw_path = if self.from_qcow2 {
            if head != qemu::QCOW2_MAGIC {
                return Err(CliError::NotQcow2 { path: self.image }.into());
            }
            let tmp = self
                .out
                .join(format!(".{}.raw-{}", self.name, std::process::id()));
            if !quiet {
                eprintln!("converting {} to raw with qemu-img", self.image.display());
            }
            _temp = qemu::qcow2_to_raw(&self.image, &tmp)?;
            tmp
        } else {
            if head == qemu::QCOW2_MAGIC {
                return Err(CliError::LooksLikeQcow2 { path: self.image }.into());
            }
            self.image.clone()
        };
        let (image, size, _) = open_image(&raw_path)?;
        let options = BuildOptions {
            chunk_size: self.chunk_size,
            sector_size: self.sector_size,
            level: self.level,
            threads: self
                .threads
                .unwrap_or_else(|| BuildOptions::default().threads),
            digest: self.digest,
        };
        let mut progress = Progress::new("building", size, quiet);
        let built = build_dir(
            image,
            size,
            &options,
            &self.out,
            &self.name,
            key.as_ref(),
            &mut |done| progress.update(done),
        )
        .with_context(|| format!("cannot build snapshot {:?}", self.name))?;
        progress.finish();
        let m = &built.manifest;
        println!("snapshot  {}", built.dir.display());
        println!(
            "chunks    {} ({} zero, {} each)",
            m.chunks().len(),
            m.zero_chunks(),
            human_bytes(u64::from(m.geometry().chunk_size()))
        );
        println!(
            "image     {} bytes, {} {}",
            m.image_size(),
            m.digest_algorithm(),
            m.image_digest()
        );
        println!(
            "data      {} bytes ({})",
            m.data_len(),
            human_bytes(m.data_len())
        );
        match &built.signature {
            Some(sig) => println!("signed    key {}", sig.key_id),
            None => println!("signed    no (run `snapshot-tool sign`)"),
        }
        Ok(())
    }
}

impl SignArgs {
    /// Verifies the contents, then writes `manifest.sig`.
    pub fn run(self, quiet: bool) -> anyhow::Result<()> {
        let key = load_secret_key(&self.key)?;
        let (_, manifest) = crate::verify::load_manifest(&self.dir)?;
        let mut progress = Progress::new("verifying", manifest.image_size(), quiet);
        let sig = sign_dir(&self.dir, &key, &mut |done| progress.update(done))
            .with_context(|| format!("cannot sign {}", self.dir.display()))?;
        progress.finish();
        println!("signed {} with key {}", self.dir.display(), sig.key_id);
        Ok(())
    }
}

impl InspectArgs {
    /// Prints the inspection.
    pub fn run(self) -> anyhow::Result<()> {
        let inspection = inspect_dir(&self.dir)?;
        let text = if self.json {
            render_json(&inspection)
        } else {
            render_text(&inspection)
        };
        print!("{text}");
        Ok(())
    }
}

impl VerifyArgs {
    /// Verifies and prints the report.
    pub fn run(self, quiet: bool) -> anyhow::Result<()> {
        let keys = load_public_keys(&self.pubkey)?;
        // The size for the progress bar; the manifest is parsed (and trusted) only after the
        // signature check inside verify_dir.
        let total = crate::verify::load_manifest(&self.dir)
            .map(|(_, m)| m.image_size())
            .unwrap_or(0);
        let mut progress = Progress::new("verifying", total, quiet);
        let result = verify_dir(&self.dir, &keys, &mut |done| progress.update(done));
        progress.finish();
        let report = result.with_context(|| format!("{} does not verify", self.dir.display()))?;
        print!("{report}");
        println!("verified  {}", self.dir.display());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;
    use crate::format::DEFAULT_CHUNK_SIZE;

    #[test]
    fn sizes() {
        // The `--chunk-size` default string must stay in step with the format's default.
        assert_eq!(parse_size("4M"), Ok(DEFAULT_CHUNK_SIZE));
        assert_eq!(parse_size("4194304"), Ok(4 << 20));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("4G").is_err());
        assert!(parse_size("4T").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
    }
}
