//! Install throughput: rackhand's verified writer against `zstd -dc | dd`, `qemu-img convert`
//! and the raw disk bandwidth, plus wipe time per method, on one 2 GiB target in one run.
//! Prints figures; asserts nothing about speed.
//!
//! Run with `cargo xtask bench install` (or `cargo bench -p installer --bench install`), as
//! root: the target is a loop device (`losetup --direct-io=on`) over a preallocated 2 GiB file,
//! and the page cache is dropped before every run. Without root (or without loop devices) the
//! target is the file itself and the caches are not dropped; the output says which.
//!
//! Images (built once into `target/bench-install/`, reused while `ready` says so; delete the
//! directory to rebuild):
//! - **sparse**: an ext4 filesystem (`mkfs.ext4 -d`, rootless) holding ~700 MiB of real files
//!   copied from the host's `/usr` (binaries, libraries, data), in a 2 GiB image: "a Debian
//!   root filesystem plus free space".
//! - **dense**: the same files plus ~1.1 GiB of already-compressed real data (the host's
//!   `.gz`/`.xz`/`.png`/... files, cycled), so nearly every 4 MiB chunk holds data that zstd
//!   cannot shrink: the worst case for a writer that hashes and decompresses.
//!
//! Each image becomes two signed snapshots (`snapshot_tool::build`, default 4 MiB chunks, zstd
//! level 3, a throwaway Ed25519 key), one with SHA-256 digests (the default, format version 1)
//! and one with BLAKE3 digests (`--digest blake3`, version 2), plus a single-stream `zstd -3`
//! file and an uncompressed qcow2. The installer rows run both snapshots: on a machine with few
//! cores, verifying SHA-256 over every frame and raw chunk is the bound, BLAKE3 is not.
//!
//! Every run starts from the same target state: the backing file's blocks are punched and
//! preallocated again (reads as zeros, unwritten extents), `sync`, page cache dropped (root),
//! then the method's input is read once so inputs come from the page cache and only the target
//! side is cold. The first run of every install method is checked with `cmp` against the raw
//! image. Figures are wall time, median [min–max] of `INSTALL_BENCH_RUNS` runs (default 3),
//! MB/s of the 2 GiB image (10^6 bytes), and CPU seconds (user + system of this process and
//! its children; the loop device's kernel worker is not counted).
//!
//! The disk's zero-fill bandwidth drifts by up to 20 % over minutes on a shared host, more
//! than the margin the dense target leaves, so that target is measured once more in
//! alternating pairs: a `dd` zero-fill and an installer run of the dense image from the same
//! reset state, back to back, `INSTALL_BENCH_RUNS` times; the per-pair ratios and their
//! median are printed (rows "paired: ...").
//!
//! `INSTALL_BENCH_ONLY=TEXT[|TEXT...]` runs only the rows whose "method image" contains one
//! of the TEXTs (e.g. `INSTALL_BENCH_ONLY="dd if=/dev/zero|BLAKE3 (writes zeros) dense"`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use installer::preflight::{ExistingPartitions, SystemPaths, check};
use installer::wipe::{self, DiskFacts, Method, PurgeFacts, VerifyOptions, WipeOutcome};
use installer::{DiskRule, ImageWriter, Phase, TargetDisk, WriteOptions, ZeroPolicy, write_image};
use snapshot_tool::build::{BuildOptions, build_dir};
use snapshot_tool::format::{
    ChunkVerifier, DATA_FILE, DigestAlgorithm, ImageVerifier, MANIFEST_FILE, MAX_MANIFEST_LEN,
    MAX_SIGNATURE_FILE_LEN, Manifest, PublicKey, SIGNATURE_FILE, SecretKey, SignatureFile,
    read_capped, verify_signature_any,
};

const MIB: u64 = 1 << 20;
/// Image and target size.
const IMAGE_SIZE: u64 = 2 << 30;
/// Real files in the sparse image.
const FS_CONTENT: u64 = 700 * MIB;
/// File bytes in the dense image (the filesystem is 2 GiB; ~110 MiB go to ext4 metadata,
/// the journal and block rounding).
const DENSE_CONTENT: u64 = 1800 * MIB;
/// Bump when the image recipe changes, so a cached directory is rebuilt.
const RECIPE: &str = "install-bench 2 (sha256 + blake3 snapshots)";
/// Extensions of files whose contents are already compressed.
const COMPRESSED_EXT: &[&str] = &[
    "gz", "xz", "bz2", "zst", "lz4", "png", "jpg", "jpeg", "woff2", "zip", "jar", "whl", "deb",
];
/// Clock ticks per second in `/proc/self/stat` (USER_HZ, 100 on Linux x86-64).
const USER_HZ: f64 = 100.0;

fn main() {
    if let Err(e) = real_main() {
        eprintln!("install bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let root = is_root();
    for tool in ["mkfs.ext4", "zstd", "qemu-img", "dd", "cmp", "fallocate"] {
        if !have(tool) {
            bail!(
                "{tool} not found (cargo xtask bench install installs e2fsprogs, zstd, qemu-utils)"
            );
        }
    }
    let runs: usize = std::env::var("INSTALL_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .clamp(1, 20);
    let work = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-install");
    let started = Instant::now();
    let images = prepare(&work)?;
    println!(
        "images ready in {:.0} s (sparse: {} of {} chunks stored, data.zst {} MiB, .zst {} MiB, \
         qcow2 {} MiB; dense: {} of {} stored, data.zst {} MiB, .zst {} MiB, qcow2 {} MiB)",
        started.elapsed().as_secs_f64(),
        images.sparse.stored,
        images.sparse.chunks,
        images.sparse.data_len / MIB,
        file_len(&images.sparse.zst) / MIB,
        allocated(&images.sparse.qcow2) / MIB,
        images.dense.stored,
        images.dense.chunks,
        images.dense.data_len / MIB,
        file_len(&images.dense.zst) / MIB,
        allocated(&images.dense.qcow2) / MIB,
    );

    let target = Target::new(&work, root)?;
    println!(
        "target: {} ({}); page cache {}; {} runs per row; machine: {} cores, load {}",
        target.path().display(),
        match &target {
            Target::Loop { .. } => "loop device with --direct-io=on over a preallocated file",
            Target::File { .. } => "a preallocated regular file (no root or no loop device)",
        },
        if root {
            "dropped before every run (inputs then read once: warm inputs, cold target)"
        } else {
            "NOT dropped (not root)"
        },
        runs,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    println!();

    let mut rows = Vec::new();
    let phases = std::cell::RefCell::new(Vec::new());
    let b = Bench {
        target: &target,
        runs,
        root,
    };
    let dev = target.path().to_owned();
    let dd_out = |of: &Path| {
        let mut v = vec![
            format!("of={}", of.display()),
            "bs=4M".to_owned(),
            "oflag=direct".to_owned(),
            "status=none".to_owned(),
        ];
        if matches!(target, Target::File { .. }) {
            v.push("conv=notrunc".to_owned());
        }
        v
    };

    // Raw disk bandwidth.
    rows.push(
        b.row("dd if=/dev/zero bs=4M oflag=direct", "-", &[], None, |_| {
            let mut c = Command::new("dd");
            c.arg("if=/dev/zero")
                .args(dd_out(&dev))
                .arg(format!("count={}", IMAGE_SIZE / (4 * MIB)));
            run(&mut c)
        })?,
    );

    for img in [&images.sparse, &images.dense] {
        rows.push(b.row(
            "dd if=image.raw bs=4M oflag=direct",
            img.name,
            &[&img.raw],
            Some(&img.raw),
            |_| {
                let mut c = Command::new("dd");
                c.arg(format!("if={}", img.raw.display()))
                    .args(dd_out(&dev));
                run(&mut c)
            },
        )?);
        rows.push(b.row(
            "zstd -dc image.zst | dd bs=4M oflag=direct",
            img.name,
            &[&img.zst],
            Some(&img.raw),
            |_| {
                let cmd = format!(
                    "zstd -dc -q '{}' | dd {} iflag=fullblock",
                    img.zst.display(),
                    dd_out(&dev).join(" ")
                );
                run(Command::new("sh").arg("-c").arg(cmd))
            },
        )?);
        rows.push(b.row(
            "qemu-img convert -n -t none qcow2 -> raw",
            img.name,
            &[&img.qcow2],
            Some(&img.raw),
            |_| {
                run(Command::new("qemu-img")
                    .args(["convert", "-n", "-t", "none", "-f", "qcow2", "-O", "raw"])
                    .arg(&img.qcow2)
                    .arg(&dev))
            },
        )?);
        for (alg, snap) in [
            (DigestAlgorithm::Sha256, &img.snap),
            (DigestAlgorithm::Blake3, &img.snap_b3),
        ] {
            let label = alg_label(alg);
            let snap_inputs = [snap.join(DATA_FILE), snap.join(MANIFEST_FILE)];
            let snap_inputs: Vec<&Path> = snap_inputs.iter().map(PathBuf::as_path).collect();
            rows.push(b.row(
                &format!("rackhand installer, {label} (writes zeros)"),
                img.name,
                &snap_inputs,
                Some(&img.raw),
                |t| {
                    let p = install(snap, &images.key, t, ZeroPolicy::WriteZeros, false)?;
                    phases
                        .borrow_mut()
                        .push((format!("{label}, writes zeros, {}", img.name), p));
                    Ok(())
                },
            )?);
            if alg == DigestAlgorithm::Sha256 {
                // With WriteOptions::image_digest on (off by default: the signed per-chunk
                // digests cover every byte), to show what the extra whole-image pass costs.
                rows.push(b.row(
                    &format!("rackhand installer, {label} + image digest"),
                    img.name,
                    &snap_inputs,
                    Some(&img.raw),
                    |t| {
                        let p = install(snap, &images.key, t, ZeroPolicy::WriteZeros, true)?;
                        phases
                            .borrow_mut()
                            .push((format!("{label} + image digest, {}", img.name), p));
                        Ok(())
                    },
                )?);
            }
            rows.push(b.row_with(
                &format!("rackhand installer, {label}, skips zeros (*)"),
                img.name,
                &snap_inputs,
                Some(&img.raw),
                // An untimed BLKZEROOUT wipe (verified) first: what makes skipping legitimate.
                |t| match t {
                    Target::Loop { .. } => wipe_target(t, Method::Blkzeroout),
                    Target::File { .. } => wipe_target(t, Method::Overwrite),
                },
                |t| {
                    let p = install(snap, &images.key, t, ZeroPolicy::SkipKnownZeroed, false)?;
                    phases
                        .borrow_mut()
                        .push((format!("{label}, skips zeros, {}", img.name), p));
                    Ok(())
                },
            )?);
        }
    }

    // Wipes of the whole 2 GiB target, verification (ends + 256 random blocks) included.
    let methods: &[Method] = match target {
        Target::Loop { .. } => &[Method::Blkzeroout, Method::Blkdiscard, Method::Overwrite],
        Target::File { .. } => &[Method::Overwrite],
    };
    for &m in methods {
        rows.push(b.row(
            &format!("installer::wipe {m:?} (+ verify)"),
            "-",
            &[],
            None,
            |t| wipe_target(t, m).map(|_| ()),
        )?);
    }

    // The dense target once more, as alternating pairs: on a shared host the disk's
    // bandwidth drifts by 20 % over minutes, so each installer run is compared with a
    // zero-fill run right before it.
    let mut paired = Vec::new();
    for alg in DigestAlgorithm::ALL {
        let label = alg_label(alg);
        let name = format!("paired: dd zero-fill, then installer {label} dense");
        if !selected(&name) {
            continue;
        }
        let snap = match alg {
            DigestAlgorithm::Sha256 => &images.dense.snap,
            DigestAlgorithm::Blake3 => &images.dense.snap_b3,
        };
        let inputs = [snap.join(DATA_FILE), snap.join(MANIFEST_FILE)];
        let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
        eprint!("{name}:");
        let mut ratios = Vec::new();
        for _ in 0..runs {
            let disk = b.sample(&[], &mut |_| Ok(()), &mut |_| {
                let mut c = Command::new("dd");
                c.arg("if=/dev/zero")
                    .args(dd_out(&dev))
                    .arg(format!("count={}", IMAGE_SIZE / (4 * MIB)));
                run(&mut c)
            })?;
            let inst = b.sample(&inputs, &mut |_| Ok(()), &mut |t| {
                install(snap, &images.key, t, ZeroPolicy::WriteZeros, false).map(|_| ())
            })?;
            eprint!(" {:.2}/{:.2}s", inst.wall, disk.wall);
            ratios.push(disk.wall / inst.wall);
        }
        eprintln!();
        paired.push((label, ratios));
    }

    print_table(&rows);
    print_ratios(&rows);
    print_paired(&paired);
    print_phases(&phases.borrow());
    if std::env::var("INSTALL_BENCH_ONLY").map_or(true, |o| o == "stages") {
        println!("\nwhere the installer's CPU goes (one thread, data in memory, no I/O):");
        for img in [&images.sparse, &images.dense] {
            stage_costs(img, &img.snap)?;
            stage_costs(img, &img.snap_b3)?;
        }
    }
    println!(
        "\n(*) after a verified BLKZEROOUT wipe of the target (not timed; see the wipe rows).\n\
         The machine is shared with other engineers' builds: figures are noisy, compare rows \
         of one run. Total bench time {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Measuring

#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: f64,
    cpu: f64,
}

#[derive(Debug)]
struct Row {
    method: String,
    variant: &'static str,
    samples: Vec<Sample>,
    note: String,
}

impl Row {
    fn median(&self) -> Option<Sample> {
        let mut w: Vec<Sample> = self.samples.clone();
        w.sort_by(|a, b| a.wall.total_cmp(&b.wall));
        w.get(w.len() / 2).copied()
    }

    fn mbs(&self) -> Option<f64> {
        self.median().map(|s| IMAGE_SIZE as f64 / 1e6 / s.wall)
    }
}

struct Bench<'a> {
    target: &'a Target,
    runs: usize,
    root: bool,
}

impl Bench<'_> {
    /// One timed run of `f` from a reset target (`pre` untimed after the reset, then the
    /// page cache dropped and the inputs read once).
    fn sample(
        &self,
        inputs: &[&Path],
        pre: &mut dyn FnMut(&Target) -> Result<()>,
        f: &mut dyn FnMut(&Target) -> Result<()>,
    ) -> Result<Sample> {
        self.target.reset()?;
        pre(self.target).context("preparation")?;
        settle(self.root)?;
        for input in inputs {
            read_through(input)?;
        }
        let c0 = cpu_seconds();
        let t0 = Instant::now();
        f(self.target)?;
        let wall = t0.elapsed().as_secs_f64();
        Ok(Sample {
            wall,
            cpu: cpu_seconds() - c0,
        })
    }

    fn row(
        &self,
        method: &str,
        variant: &'static str,
        inputs: &[&Path],
        expect: Option<&Path>,
        f: impl FnMut(&Target) -> Result<()>,
    ) -> Result<Row> {
        self.row_with(method, variant, inputs, expect, |_| Ok(()), f)
    }

    /// Runs `f` `runs` times from a reset target; `pre` runs untimed after the reset.
    fn row_with(
        &self,
        method: &str,
        variant: &'static str,
        inputs: &[&Path],
        expect: Option<&Path>,
        mut pre: impl FnMut(&Target) -> Result<()>,
        mut f: impl FnMut(&Target) -> Result<()>,
    ) -> Result<Row> {
        if !selected(&format!("{method} {variant}")) {
            return Ok(Row {
                method: method.to_owned(),
                variant,
                samples: Vec::new(),
                note: String::new(),
            });
        }
        eprint!("{method} [{variant}]:");
        let mut samples = Vec::new();
        let mut note = String::new();
        for i in 0..self.runs {
            let sample = self
                .sample(inputs, &mut pre, &mut f)
                .with_context(|| format!("{method} [{variant}]"))?;
            samples.push(sample);
            eprint!(" {:.2}s", sample.wall);
            if i == 0
                && let Some(raw) = expect
            {
                note = if same_prefix(raw, self.target.backing())? {
                    "cmp ok".to_owned()
                } else {
                    "CONTENT MISMATCH".to_owned()
                };
            }
        }
        eprintln!();
        Ok(Row {
            method: method.to_owned(),
            variant,
            samples,
            note,
        })
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<46} {:<7} {:>24} {:>8} {:>7}  check",
        "method (2 GiB image/target)", "image", "wall s median [min-max]", "MB/s", "CPU s"
    );
    println!("{}", "-".repeat(104));
    for r in rows {
        let Some(m) = r.median() else { continue };
        let min = r.samples.iter().map(|s| s.wall).fold(f64::MAX, f64::min);
        let max = r.samples.iter().map(|s| s.wall).fold(0.0, f64::max);
        println!(
            "{:<46} {:<7} {:>24} {:>8.0} {:>7.2}  {}",
            r.method,
            r.variant,
            format!("{:.2} [{:.2}-{:.2}]", m.wall, min, max),
            r.mbs().unwrap_or(0.0),
            m.cpu,
            r.note
        );
    }
}

fn find<'a>(rows: &'a [Row], method: &str, variant: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.method.starts_with(method) && r.variant == variant)
}

fn print_ratios(rows: &[Row]) {
    let mbs = |m: &str, v: &str| find(rows, m, v).and_then(Row::mbs);
    let disk = mbs("dd if=/dev/zero", "-");
    let zeroout = find(rows, "installer::wipe Blkzeroout", "-")
        .and_then(Row::median)
        .map(|s| s.wall);
    println!("\nratios (median MB/s / median MB/s; targets from issue 6, printed, not asserted):");
    let line = |what: &str, a: Option<f64>, b: Option<f64>, target: &str, ok: fn(f64) -> bool| {
        if let (Some(a), Some(b)) = (a, b) {
            let r = a / b;
            println!(
                "  {what:<64} {r:>5.2}x  (target {target}: {})",
                if ok(r) { "met" } else { "NOT met" }
            );
        }
    };
    for v in ["dense", "sparse"] {
        let pipe = mbs("zstd -dc", v);
        let qemu = mbs("qemu-img", v);
        for alg in DigestAlgorithm::ALL {
            let label = alg_label(alg);
            let inst = mbs(&format!("rackhand installer, {label} (writes"), v);
            let skip = mbs(&format!("rackhand installer, {label}, skips"), v);
            line(
                &format!("{v}, {label}: installer (writes zeros) vs zstd -dc | dd"),
                inst,
                pipe,
                ">= 0.95",
                |r| r >= 0.95,
            );
            line(
                &format!("{v}, {label}: installer (skips zeros) vs zstd -dc | dd"),
                skip,
                pipe,
                ">= 0.95",
                |r| r >= 0.95,
            );
            line(
                &format!("{v}, {label}: installer (writes zeros) vs qemu-img convert"),
                inst,
                qemu,
                "none",
                |_| true,
            );
            if v == "dense" {
                line(
                    &format!("dense, {label}: installer (writes zeros) vs disk (dd zero)"),
                    inst,
                    disk,
                    ">= 0.90",
                    |r| r >= 0.90,
                );
                continue;
            }
            line(
                &format!("sparse, {label}: installer (writes zeros) vs disk (dd zero)"),
                inst,
                disk,
                "none",
                |_| true,
            );
            line(
                &format!("sparse, {label}: installer (skips zeros) vs disk (dd zero)"),
                skip,
                disk,
                "> 1.0",
                |r| r > 1.0,
            );
            if let (Some(s), Some(z)) = (
                find(rows, &format!("rackhand installer, {label}, skips"), v),
                zeroout,
            ) && let Some(m) = s.median()
            {
                let total = IMAGE_SIZE as f64 / 1e6 / (m.wall + z);
                line(
                    &format!("sparse, {label}: BLKZEROOUT wipe + installer (skips) vs disk"),
                    Some(total),
                    disk,
                    "> 1.0",
                    |r| r > 1.0,
                );
            }
        }
    }
}

/// Whether `INSTALL_BENCH_ONLY` (unset: everything) selects the row called `name`.
fn selected(name: &str) -> bool {
    std::env::var("INSTALL_BENCH_ONLY")
        .map_or(true, |only| only.split('|').any(|part| name.contains(part)))
}

/// The alternating-pairs ratios: installer MB/s over the zero-fill MB/s measured just before.
fn print_paired(paired: &[(&str, Vec<f64>)]) {
    if paired.is_empty() {
        return;
    }
    println!(
        "\ndense image against disk bandwidth in alternating pairs (dd zero-fill, then the \
         installer, from the same reset; per-pair ratio):"
    );
    for (label, ratios) in paired {
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let Some(&median) = sorted.get(sorted.len() / 2) else {
            continue;
        };
        let list: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "  dense, {label}: median {median:.2}x [{}]  (target >= 0.90: {})",
            list.join(" "),
            if median >= 0.90 { "met" } else { "NOT met" }
        );
    }
}

/// "SHA-256" or "BLAKE3", as the rows name the snapshot's digest algorithm.
fn alg_label(alg: DigestAlgorithm) -> &'static str {
    match alg {
        DigestAlgorithm::Sha256 => "SHA-256",
        DigestAlgorithm::Blake3 => "BLAKE3",
    }
}

/// The verifier's per-stage CPU cost on one thread for the snapshot in `snap`: the digest of
/// the frames, zstd, the digest of the raw chunks (the three make `ChunkVerifier::verify`,
/// spread over the decoder threads), and the whole-image digest (one thread, only with
/// `WriteOptions::image_digest`).
fn stage_costs(img: &Image, snap: &Path) -> Result<()> {
    let manifest = Manifest::parse(&fs::read(snap.join(MANIFEST_FILE))?)?;
    let alg = manifest.digest_algorithm();
    let data = fs::read(snap.join(DATA_FILE))?;
    let mut verifier = ChunkVerifier::new(&manifest)?;
    let mut image = ImageVerifier::new(&manifest);
    let (mut t_frame, mut t_verify, mut t_raw, mut t_image) = (0.0, 0.0, 0.0, 0.0);
    let zeros = vec![0u8; manifest.geometry().chunk_size() as usize];
    for (i, e) in manifest.chunks().iter().enumerate() {
        let i = i as u64;
        let start = usize::try_from(e.data_offset)?;
        let frame = &data[start..start + e.compressed_len() as usize];
        let t = Instant::now();
        std::hint::black_box(alg.digest(frame));
        t_frame += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let raw = if e.is_zero() {
            &zeros[..e.raw_len as usize]
        } else {
            verifier.verify(i, e, frame)?
        };
        t_verify += t.elapsed().as_secs_f64();
        if !e.is_zero() {
            let t = Instant::now();
            std::hint::black_box(alg.digest(raw));
            t_raw += t.elapsed().as_secs_f64();
        }
        let t = Instant::now();
        image.update(i, raw)?;
        t_image += t.elapsed().as_secs_f64();
    }
    image.finish()?;
    let zstd = (t_verify - t_frame - t_raw).max(0.0);
    let label = alg_label(alg);
    println!(
        "  {:<7} {label:<7} frame digest {:.2} s, zstd {:.2} s, raw digest {:.2} s (verify \
         total {:.2} s = {:.0} MB/s on one core); whole-image digest (image_digest only) {:.2} s",
        img.name,
        t_frame,
        zstd,
        t_raw,
        t_verify,
        IMAGE_SIZE as f64 / 1e6 / t_verify.max(1e-9),
        t_image,
    );
    Ok(())
}

/// User + system CPU seconds of this process and its waited-for children.
fn cpu_seconds() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|s| s.parse().unwrap_or(0.0))
        .collect();
    // utime, stime, cutime, cstime are fields 14..=17, i.e. 11..=14 here.
    f.get(11..15).map_or(0.0, |v| v.iter().sum::<f64>()) / USER_HZ
}

/// `sync`, then (as root) drop the page cache.
fn settle(root: bool) -> Result<()> {
    run(&mut Command::new("sync"))?;
    if root {
        fs::write("/proc/sys/vm/drop_caches", "3").context("drop_caches")?;
    }
    Ok(())
}

/// Reads a file once (into the page cache).
fn read_through(path: &Path) -> Result<()> {
    let mut f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut buf = vec![0u8; 4 << 20];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

/// Whether the first `IMAGE_SIZE` bytes of `target` equal `raw`.
fn same_prefix(raw: &Path, target: &Path) -> Result<bool> {
    let st = Command::new("cmp")
        .arg("-s")
        .arg("-n")
        .arg(IMAGE_SIZE.to_string())
        .arg(raw)
        .arg(target)
        .status()?;
    Ok(st.success())
}

// ---------------------------------------------------------------------------------------
// The target

/// Where every method writes.
enum Target {
    /// A loop device over `backing`, detached on drop.
    Loop {
        dev: PathBuf,
        name: String,
        backing: PathBuf,
    },
    /// The file itself.
    File { backing: PathBuf },
}

impl Target {
    fn new(work: &Path, root: bool) -> Result<Self> {
        let backing = work.join("target.img");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&backing)?;
        f.set_len(IMAGE_SIZE)?;
        drop(f);
        run(Command::new("fallocate")
            .arg("-l")
            .arg(IMAGE_SIZE.to_string())
            .arg(&backing))?;
        if root {
            let out = Command::new("losetup")
                .args(["--find", "--show", "--direct-io=on"])
                .arg(&backing)
                .output()?;
            if out.status.success() {
                let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                let name = dev
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Ok(Self::Loop { dev, name, backing });
            }
            eprintln!(
                "losetup failed ({}); falling back to a file target",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Self::File { backing })
    }

    /// What the methods write to.
    fn path(&self) -> &Path {
        match self {
            Self::Loop { dev, .. } => dev,
            Self::File { backing } => backing,
        }
    }

    fn backing(&self) -> &Path {
        match self {
            Self::Loop { backing, .. } | Self::File { backing } => backing,
        }
    }

    /// The same starting state for every run: every block of the backing file deallocated
    /// and preallocated again (unwritten extents, reading as zeros).
    fn reset(&self) -> Result<()> {
        let size = IMAGE_SIZE.to_string();
        run(Command::new("fallocate")
            .args(["--punch-hole", "--offset", "0", "--length", &size])
            .arg(self.backing()))?;
        run(Command::new("fallocate")
            .args(["--length", &size])
            .arg(self.backing()))
    }

    fn disk(&self) -> Option<TargetDisk> {
        match self {
            Self::Loop { name, .. } => Some(TargetDisk {
                name: name.clone(),
                size_bytes: IMAGE_SIZE,
                logical_block_size: Some(512),
                serial: None,
                wwn: None,
                model: None,
                rule: DiskRule::Name(name.clone()),
            }),
            Self::File { .. } => None,
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Self::Loop { dev, .. } = self {
            let _ = Command::new("losetup").arg("-d").arg(&*dev).status();
        }
    }
}

/// Seconds spent in each part of one install: signature + manifest + preflight + zeroing
/// both ends and syncing; streaming every chunk; sync + read-back sample; first MiB + sync +
/// read-back of chunk 0 + partition-table re-read.
#[derive(Debug, Clone, Copy, Default)]
struct Phases {
    setup: f64,
    stream: f64,
    readback: f64,
    finish: f64,
}

fn print_phases(runs: &[(String, Phases)]) {
    if runs.is_empty() {
        return;
    }
    println!(
        "\ninstaller phases per run, s (setup = signature + preflight; stream includes zeroing both \
         ends + sync right before the first write):"
    );
    for (what, p) in runs {
        println!(
            "  {what:<20} setup {:.2}  stream {:.2}  sync+read-back {:.2}  first MiB+sync+check {:.2}  \
             = {:.2}; streaming alone {:.0} MB/s",
            p.setup,
            p.stream,
            p.readback,
            p.finish,
            p.setup + p.stream + p.readback + p.finish,
            IMAGE_SIZE as f64 / 1e6 / p.stream.max(1e-9),
        );
    }
}

/// The agent's path: signature, manifest, preflight, verified write with read-back
/// (`image_digest`: also the whole-image digest, which the agent leaves off).
fn install(
    snap: &Path,
    key: &PublicKey,
    target: &Target,
    zero_policy: ZeroPolicy,
    image_digest: bool,
) -> Result<Phases> {
    let t0 = Instant::now();
    let sig = read_capped(
        File::open(snap.join(SIGNATURE_FILE))?,
        MAX_SIGNATURE_FILE_LEN,
    )?;
    let sig = SignatureFile::parse(&sig)?;
    let bytes = read_capped(File::open(snap.join(MANIFEST_FILE))?, MAX_MANIFEST_LEN)?;
    verify_signature_any(&bytes, &sig, std::slice::from_ref(key))?;
    let manifest = Manifest::parse(&bytes)?;
    let options = WriteOptions {
        zero_policy,
        image_digest,
        ..WriteOptions::default()
    };
    let writer = match target.disk() {
        Some(disk) => {
            let checked = check(
                &disk,
                &SystemPaths::live(),
                manifest.image_size(),
                ExistingPartitions::Overwrite,
            )?;
            ImageWriter::to_disk(checked, &manifest, options)?
        }
        None => ImageWriter::to_file(target.path(), &manifest, options)?,
    };
    let data = snap.join(DATA_FILE);
    let streaming = Instant::now();
    let mut marks: [Option<Instant>; 2] = [None, None];
    let report = write_image(
        writer,
        3,
        |at| {
            let mut f = File::open(&data)?;
            f.seek(SeekFrom::Start(at.data_offset))?;
            Ok(f)
        },
        &mut |p| match p.phase {
            Phase::Writing => {}
            Phase::Verifying => {
                marks[0].get_or_insert_with(Instant::now);
            }
            Phase::Finishing => {
                marks[1].get_or_insert_with(Instant::now);
            }
        },
    )?;
    let end = Instant::now();
    if report.image_size != IMAGE_SIZE {
        bail!("wrote {} bytes", report.image_size);
    }
    if report.computed_image_digest.is_some() != image_digest {
        bail!(
            "whole-image digest computed: {:?}, asked: {image_digest}",
            report.computed_image_digest
        );
    }
    let verifying = marks[0].unwrap_or(end);
    let finishing = marks[1].unwrap_or(end);
    Ok(Phases {
        setup: (streaming - t0).as_secs_f64(),
        stream: (verifying - streaming).as_secs_f64(),
        readback: (finishing - verifying).as_secs_f64(),
        finish: (end - finishing).as_secs_f64(),
    })
}

/// Wipes the whole target with `method` (forced: no fallback) and checks the record.
fn wipe_target(target: &Target, method: Method) -> Result<()> {
    let discard = method == Method::Blkdiscard;
    // Through the hardware-report constructor, so facts added to `DiskFacts` later keep
    // their defaults here.
    let disk: pxe_api::hardware::Disk = serde_json::from_value(serde_json::json!({
        "name": target.disk().map_or_else(|| "file".to_owned(), |d| d.name),
        "size_bytes": IMAGE_SIZE,
        "logical_block_size": 512,
        "rotational": false,
        "transport": "loop",
        "discard": discard,
    }))?;
    let mut facts = DiskFacts::from_report(&disk);
    facts.block_device = target.disk().is_some();
    // Known to have no purge capability, so `execute` does not probe and re-plan: the bench
    // times exactly the method asked for.
    facts.purge = Some(PurgeFacts::default());
    // A loop device punches holes in its backing file on discard: reads are zeros (and the
    // wipe's verification checks it).
    facts.discard_zeroes_proven = discard;
    let mut plan = wipe::plan_disk(&facts);
    plan.method = method;
    plan.fallbacks.clear();
    let verify = VerifyOptions {
        time_seed: 7,
        ..VerifyOptions::default()
    };
    let record = match target.disk() {
        Some(disk) => {
            let checked = check(
                &disk,
                &SystemPaths::live(),
                0,
                ExistingPartitions::Overwrite,
            )?;
            wipe::execute(checked, &plan, &verify, &mut |_| {})
        }
        None => wipe::execute_file(target.path(), &plan, &verify, &mut |_| {}),
    };
    if record.outcome != WipeOutcome::Success || record.method != method {
        bail!(
            "wipe {method:?} failed: {:?} {:?} (method {:?})",
            record.code,
            record.message,
            record.method
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Images

struct Image {
    name: &'static str,
    raw: PathBuf,
    zst: PathBuf,
    qcow2: PathBuf,
    /// The SHA-256 snapshot (format version 1, the default).
    snap: PathBuf,
    /// The same image as a BLAKE3 snapshot (format version 2).
    snap_b3: PathBuf,
    chunks: u64,
    stored: u64,
    data_len: u64,
}

struct Images {
    key: PublicKey,
    sparse: Image,
    dense: Image,
}

fn image_paths(work: &Path, name: &'static str) -> Result<Image> {
    let snap = work.join("snapshots").join(name);
    let (chunks, stored, data_len) = match fs::read(snap.join(MANIFEST_FILE)) {
        Ok(bytes) => {
            let m = Manifest::parse(&bytes)?;
            (m.chunks().len() as u64, m.stored_chunks(), m.data_len())
        }
        Err(_) => (0, 0, 0),
    };
    Ok(Image {
        name,
        raw: work.join(format!("{name}.raw")),
        zst: work.join(format!("{name}.raw.zst")),
        qcow2: work.join(format!("{name}.qcow2")),
        snap_b3: work.join("snapshots").join(format!("{name}-blake3")),
        snap,
        chunks,
        stored,
        data_len,
    })
}

/// Builds (or reuses) both images and their three encodings.
fn prepare(work: &Path) -> Result<Images> {
    let ready = work.join("ready");
    if fs::read_to_string(&ready).is_ok_and(|s| s.trim() == RECIPE) {
        let key = PublicKey::parse(&fs::read(work.join("bench.pub"))?)?;
        return Ok(Images {
            key,
            sparse: image_paths(work, "sparse")?,
            dense: image_paths(work, "dense")?,
        });
    }
    if work.exists() {
        fs::remove_dir_all(work)?;
    }
    fs::create_dir_all(work.join("snapshots"))?;
    eprintln!("building images in {} (once)", work.display());

    let stage = work.join("stage");
    fs::create_dir_all(&stage)?;
    let mut budget = FS_CONTENT;
    for dir in ["bin", "sbin", "lib", "share"] {
        let to = stage.join("usr").join(dir);
        fs::create_dir_all(&to)?;
        copy_tree(&Path::new("/usr").join(dir), &to, &mut budget);
    }
    let staged = FS_CONTENT - budget;
    eprintln!("  staged {} MiB of /usr", staged / MIB);
    mkfs(&stage, &work.join("sparse.raw"))?;

    let filler = stage.join("var/lib/filler");
    fs::create_dir_all(&filler)?;
    let pool = compressed_pool(256 * MIB)?;
    let mut want = DENSE_CONTENT - staged;
    loop {
        write_filler(&filler, &pool, want)?;
        match mkfs(&stage, &work.join("dense.raw")) {
            Ok(()) => break,
            Err(e) if want > 600 * MIB => {
                eprintln!(
                    "  mkfs with {} MiB of filler failed ({e:#}); less",
                    want / MIB
                );
                want -= 150 * MIB;
                fs::remove_dir_all(&filler)?;
                fs::create_dir_all(&filler)?;
            }
            Err(e) => return Err(e),
        }
    }
    eprintln!("  dense filler {} MiB", want / MIB);
    fs::remove_dir_all(&stage)?;

    let mut seed = [0u8; 32];
    File::open("/dev/urandom")?.read_exact(&mut seed)?;
    let key = SecretKey::from_seed(&seed);
    fs::write(work.join("bench.pub"), key.public().to_file())?;
    for name in ["sparse", "dense"] {
        let img = image_paths(work, name)?;
        for (digest, dir) in [
            (DigestAlgorithm::Sha256, &img.snap),
            (DigestAlgorithm::Blake3, &img.snap_b3),
        ] {
            let t = Instant::now();
            let snap_name = dir.file_name().and_then(|n| n.to_str()).unwrap_or(name);
            build_dir(
                File::open(&img.raw)?,
                IMAGE_SIZE,
                &BuildOptions {
                    digest,
                    ..BuildOptions::default()
                },
                &work.join("snapshots"),
                snap_name,
                Some(&key),
                &mut |_| {},
            )?;
            eprintln!(
                "  {snap_name}: snapshot built in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
        run(Command::new("zstd")
            .args(["-3", "-T0", "-q", "-f"])
            .arg(&img.raw)
            .arg("-o")
            .arg(&img.zst))?;
        run(Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&img.raw)
            .arg(&img.qcow2))?;
    }
    fs::write(&ready, RECIPE)?;
    Ok(Images {
        key: key.public(),
        sparse: image_paths(work, "sparse")?,
        dense: image_paths(work, "dense")?,
    })
}

/// Copies regular files (and symlinks) from `src` into `dst` in name order until `budget`
/// bytes are used. Unreadable entries are skipped.
fn copy_tree(src: &Path, dst: &Path, budget: &mut u64) {
    let Ok(rd) = fs::read_dir(src) else { return };
    let mut entries: Vec<_> = rd.filter_map(Result::ok).collect();
    entries.sort_by_key(fs::DirEntry::file_name);
    for e in entries {
        if *budget < 4096 {
            return;
        }
        let Ok(ft) = e.file_type() else { continue };
        let to = dst.join(e.file_name());
        if ft.is_dir() {
            if fs::create_dir_all(&to).is_ok() {
                copy_tree(&e.path(), &to, budget);
            }
        } else if ft.is_symlink() {
            if let Ok(link) = fs::read_link(e.path()) {
                let _ = std::os::unix::fs::symlink(link, &to);
            }
        } else if ft.is_file() {
            let len = e.metadata().map_or(u64::MAX, |m| m.len());
            if len <= *budget && fs::copy(e.path(), &to).is_ok() {
                *budget -= len;
            }
        }
    }
}

/// A 2 GiB ext4 image of `stage`, built without root or mounting.
fn mkfs(stage: &Path, out: &Path) -> Result<()> {
    let _ = fs::remove_file(out);
    File::create(out)?.set_len(IMAGE_SIZE)?;
    run(Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-L",
            "rootfs",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0",
            "-d",
        ])
        .arg(stage)
        .arg(out))
}

/// Up to `cap` bytes of already-compressed real files from `/usr`, concatenated.
fn compressed_pool(cap: u64) -> Result<Vec<u8>> {
    let mut files = Vec::new();
    collect_compressed(Path::new("/usr"), &mut files, 0);
    files.sort();
    let mut pool = Vec::new();
    for f in files {
        if pool.len() as u64 >= cap {
            break;
        }
        if let Ok(bytes) = fs::read(&f) {
            pool.extend_from_slice(&bytes);
        }
    }
    // Too little on a minimal host: top up with pseudo-random bytes (xorshift).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while (pool.len() as u64) < 64 * MIB {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pool.extend_from_slice(&x.to_le_bytes());
    }
    pool.truncate(cap as usize);
    Ok(pool)
}

fn collect_compressed(dir: &Path, out: &mut Vec<PathBuf>, depth: u32) {
    if depth > 12 {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.filter_map(Result::ok) {
        let Ok(ft) = e.file_type() else { continue };
        let p = e.path();
        if ft.is_dir() {
            collect_compressed(&p, out, depth + 1);
        } else if ft.is_file()
            && p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| COMPRESSED_EXT.contains(&x))
            && e.metadata().is_ok_and(|m| m.len() >= 4096)
        {
            out.push(p);
        }
    }
}

/// `want` bytes of filler in 64 MiB files, cycling through `pool`.
fn write_filler(dir: &Path, pool: &[u8], want: u64) -> Result<()> {
    let mut left = want;
    let mut at = 0usize;
    let mut n = 0;
    while left > 0 {
        let mut f = File::create(dir.join(format!("fill-{n:03}.bin")))?;
        let mut file_left = left.min(64 * MIB);
        left -= file_left;
        while file_left > 0 {
            let take = (pool.len() - at).min(file_left as usize);
            f.write_all(&pool[at..at + take])?;
            file_left -= take as u64;
            at = (at + take) % pool.len();
        }
        n += 1;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Small helpers

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("spawn {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn have(tool: &str) -> bool {
    ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"]
        .iter()
        .any(|d| Path::new(d).join(tool).exists())
}

fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).map_or(0, |m| m.len())
}

/// Bytes allocated on disk (qcow2 files are sparse).
fn allocated(p: &Path) -> u64 {
    fs::metadata(p).map_or(0, |m| m.blocks() * 512)
}
