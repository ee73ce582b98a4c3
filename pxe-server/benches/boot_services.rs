//! Boot network services side by side with their usual peers, over ONE veth pair between two
//! network namespaces this benchmark creates (198.18.0.1/15 ↔ 198.18.0.2/15, RFC 2544 range,
//! static neighbour entries). Prints figures; asserts nothing about speed.
//!
//! Method (as in `/work/shared/research/baselines.md`): servers pinned to CPU 0, load
//! generators and clients to CPU 1 (`taskset`).
//!
//! * DHCP: `perfdhcp -g single -R 100000000` as a relay (giaddr set) at each offered rate of
//!   `BOOT_BENCH_DHCP_RATES` (default `1000,4000,max`; `max` = no `-r`) for
//!   `BOOT_BENCH_DHCP_SECS` (default 4) against, each time freshly started with an empty lease
//!   store and one pool 198.18.1.0–198.19.255.254 (130,815 addresses): ISC Kea (memfile,
//!   `persist: true`: one write per lease, no fsync), then pxe-server (full mode, SQLite
//!   leases fsynced before every ACK; the bindings that arrive during one commit share the
//!   next) at the same rates plus one more point offered at Kea's measured flood rate, then
//!   dnsmasq (`--no-ping`, lease file on disk, fsync per change). Loggers at WARN.
//!   perfdhcp waits 1 s after the sending period for replies in flight (`-W`), so an
//!   exchange still in flight at the end is not a drop. Printed: completed DORA/s (ACKs
//!   received ÷ the sending period), drop % = 1 − ACKs/DISCOVERs,
//!   average DISCOVER→OFFER and REQUEST→ACK delays, server CPU µs per lease; then the
//!   flood ratio pxe-server/Kea and pxe-server's drops at Kea's flood rate.
//!   perfdhcp's 100M MACs are all unknown to pxe-server and each DISCOVER comes from a new
//!   one: the default policy gives unknown clients at most half the pool and refuses new
//!   unknown MACs past 65,536 per 10 s (a MAC-spoofing flood). The bench lifts both
//!   (`--dhcp-unknown-max`, `--dhcp-rate-limit-macs`) so that points measure speed, not
//!   that policy, which the namespace tests check separately.
//! * TFTP: a 64 MiB file at blksize 1468 from pxe-server, tftpd-hpa (`in.tftpd -L`), atftpd
//!   (`--daemon --no-fork`) and dnsmasq (`--enable-tftp`), with curl (lock-step) and atftp at
//!   windowsize 1 and 16 (tftpd-hpa and dnsmasq ignore windowsize); median of
//!   `BOOT_BENCH_RUNS` (default 3), every copy compared byte for byte. Then a boot storm:
//!   20 concurrent `curl --tftp-blksize 1468` fetching 30 MiB each, each from its own
//!   address like 20 machines (pxe-server also from one address: it admits at most 8
//!   sessions per client address, the rest wait for their RRQ retransmission). Server CPU
//!   is that of every process in the server namespace (tftpd-hpa forks per transfer),
//!   sampled from `/proc` every 100 ms. `cargo bench … -- dhcp` or `-- tftp` runs one half.
//!
//! Every process is bounded in time and killed by PID; the namespaces go away at the end.
//! Peers come from Debian (`cargo xtask bench boot-services` installs them): `kea-admin`
//! (perfdhcp), `kea-dhcp4-server`, `tftpd-hpa`, `dnsmasq-base`; atftpd conflicts with
//! tftpd-hpa, so it is unpacked (`apt-get download atftpd; dpkg -x`) into
//! `target/bench-peers/atftpd` or taken from `BOOT_BENCH_ATFTPD`. A missing peer is reported
//! and skipped. Run as root: `cargo bench -p pxe-server --bench boot_services`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/services/netns.rs"]
mod netns;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netns::{Netns, Proc, SRV_IF, is_root, run_bounded};

const BIN: &str = env!("CARGO_BIN_EXE_pxe-server");
const SRV: &str = "198.18.0.1";
const CLI: &str = "198.18.0.2";
const POOL_START: &str = "198.18.1.0";
const POOL_END: &str = "198.19.255.254";
const BIG: usize = 64 << 20;
const STORM_FILE: usize = 30 << 20;
const STORM_CLIENTS: usize = 20;
const MIB: f64 = 1024.0 * 1024.0;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn find(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates.iter().find(|p| p.exists()).cloned()
}

fn sbin(name: &str) -> Option<PathBuf> {
    find(&[
        Path::new("/usr/sbin").join(name),
        Path::new("/usr/bin").join(name),
        Path::new("/sbin").join(name),
    ])
}

fn atftpd_bin() -> Option<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("BOOT_BENCH_ATFTPD") {
        c.push(PathBuf::from(p));
    }
    c.push(PathBuf::from("/usr/sbin/atftpd"));
    // target/bench-peers, next to this build's target directory.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    if let Some(target) = tmp.parent() {
        c.push(target.join("bench-peers/atftpd/usr/sbin/atftpd"));
    }
    find(&c)
}

/// True once some socket in `pid`'s network namespace listens on UDP `port`.
fn udp_listening(pid: u32, port: u16) -> bool {
    let want = format!(":{port:04X} ");
    std::fs::read_to_string(format!("/proc/{pid}/net/udp")).is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| format!("{a} ").contains(&want))
        })
    })
}

/// Waits (bounded) until the server `p` listens on UDP `port`.
fn wait_udp(p: &mut Proc, port: u16, log: &Path) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if !p.running() {
            eprintln!(
                "  {} exited during start-up:\n{}",
                p.name,
                std::fs::read_to_string(log).unwrap_or_default()
            );
            return false;
        }
        if udp_listening(p.pid(), port) {
            // The socket exists; give the server a moment to enter its receive loop.
            std::thread::sleep(Duration::from_millis(300));
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("  {} did not listen on UDP {port} within 30 s", p.name);
    false
}

/// CPU seconds used by every process in one network namespace (the server and any children
/// it forks per transfer, as tftpd-hpa does), sampled from `/proc` every 100 ms on a thread.
struct NsCpu {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<f64>>,
}

fn proc_cpu(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime + stime, in USER_HZ (100 on x86 Linux).
    Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
}

impl NsCpu {
    /// Starts sampling the namespace that process `pid` lives in.
    fn start(pid: u32) -> NsCpu {
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // pid → (CPU when first seen, CPU when last seen); first sample is the baseline.
            let mut seen: std::collections::HashMap<String, (f64, f64)> = Default::default();
            let mut first = true;
            let t = Instant::now();
            loop {
                let done = flag.load(std::sync::atomic::Ordering::Relaxed);
                for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !name.bytes().all(|b| b.is_ascii_digit()) {
                        continue;
                    }
                    if ns.is_none() || std::fs::read_link(format!("/proc/{name}/ns/net")).ok() != ns
                    {
                        continue;
                    }
                    if let Some(c) = proc_cpu(&name) {
                        let base = if first { c } else { 0.0 };
                        seen.entry(name).or_insert((base, c)).1 = c;
                    }
                }
                first = false;
                if done || t.elapsed() > Duration::from_secs(900) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            seen.values().map(|(a, b)| (b - a).max(0.0)).sum()
        });
        NsCpu {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; CPU seconds used since [`NsCpu::start`].
    fn finish(mut self) -> Option<f64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take()?.join().ok()
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(len);
    v
}

// ------------------------------------------------------------------------------------ DHCP

/// One perfdhcp point.
#[derive(Debug, Default)]
struct DhcpPoint {
    rate: f64,
    discovers: u64,
    acks: u64,
    offer_ms: f64,
    ack_ms: f64,
    cpu_us_per_lease: Option<f64>,
}

/// The number after `key` on the first line that starts with it.
fn field(section: &str, key: &str) -> Option<f64> {
    section.lines().find_map(|l| {
        l.trim()
            .strip_prefix(key)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    })
}

fn parse_perfdhcp(out: &str) -> Option<DhcpPoint> {
    let (_, rest) = out.split_once("***Statistics for: DISCOVER-OFFER***")?;
    let (do_, ra) = rest.split_once("***Statistics for: REQUEST-ACK***")?;
    Some(DhcpPoint {
        rate: field(out, "Rate:")?,
        discovers: field(do_, "sent packets:")? as u64,
        acks: field(ra, "received packets:")? as u64,
        offer_ms: field(do_, "avg delay:").unwrap_or(f64::NAN),
        ack_ms: field(ra, "avg delay:").unwrap_or(f64::NAN),
        cpu_us_per_lease: None,
    })
}

/// Starts DHCP server `kind` in a fresh directory; returns it and its log.
fn start_dhcp(ns: &Netns, kind: &str, dir: &Path) -> Option<(Proc, PathBuf)> {
    let log = dir.join(format!("{kind}.log"));
    let d = dir.display().to_string();
    let pin = ["taskset", "-c", "0"];
    let p = match kind {
        "pxe-server" => {
            let assets = dir.join("assets");
            std::fs::create_dir_all(&assets).ok()?;
            let a = assets.display().to_string();
            let range = format!("{POOL_START}-{POOL_END}");
            let http = format!("{SRV}:8080");
            let url = format!("http://{SRV}:8080");
            let data = format!("{d}/data");
            let argv = [
                &pin[..],
                &[
                    BIN,
                    "serve",
                    "--data-dir",
                    &data,
                    "--assets",
                    &a,
                    "--interface",
                    SRV_IF,
                    "--dhcp-mode",
                    "full",
                    "--dhcp-range",
                    &range,
                    // perfdhcp's MACs are all unknown to the inventory: lift the unknown-client
                    // share so long points measure speed, not the pool-protection policy.
                    "--dhcp-unknown-max",
                    "4000000000",
                    // … and every one of its DISCOVERs comes from a new MAC, which past
                    // 65,536 MACs in 10 s the default policy refuses as a spoofing flood.
                    "--dhcp-rate-limit-macs",
                    "4000000000",
                    "--http",
                    &http,
                    "--public-url",
                    &url,
                ],
            ]
            .concat();
            ns.spawn(
                &ns.srv,
                &argv,
                &[("RUST_LOG", "warn"), ("NO_COLOR", "1")],
                &log,
            )
        }
        "kea" => {
            let bin = sbin("kea-dhcp4")?;
            let conf = dir.join("kea-dhcp4.json");
            let json = format!(
                r#"{{"Dhcp4": {{
  "interfaces-config": {{"interfaces": ["{SRV_IF}"], "dhcp-socket-type": "udp"}},
  "lease-database": {{"type": "memfile", "persist": true, "name": "{d}/kea-leases4.csv", "lfc-interval": 0}},
  "valid-lifetime": 3600,
  "subnet4": [{{"id": 1, "subnet": "198.18.0.0/15", "pools": [{{"pool": "{POOL_START} - {POOL_END}"}}]}}],
  "loggers": [{{"name": "kea-dhcp4", "output_options": [{{"output": "stdout"}}], "severity": "WARN"}}]
}}}}"#
            );
            std::fs::write(&conf, json).ok()?;
            let b = bin.display().to_string();
            let c = conf.display().to_string();
            let argv = [&pin[..], &[b.as_str(), "-c", &c]].concat();
            ns.spawn(
                &ns.srv,
                &argv,
                &[("KEA_PIDFILE_DIR", &d), ("KEA_LOCKFILE_DIR", &d)],
                &log,
            )
        }
        _ => {
            let bin = sbin("dnsmasq")?;
            let b = bin.display().to_string();
            let range = format!("--dhcp-range={POOL_START},{POOL_END},255.254.0.0,1h");
            let leases = format!("--dhcp-leasefile={d}/dnsmasq.leases");
            let pid = format!("--pid-file={d}/dnsmasq.pid");
            let iface = format!("--interface={SRV_IF}");
            let argv = [
                &pin[..],
                &[
                    b.as_str(),
                    "-k",
                    "--conf-file=/dev/null",
                    "--port=0",
                    &iface,
                    "--bind-interfaces",
                    "--user=root",
                    &range,
                    &leases,
                    "--no-ping",
                    "--dhcp-lease-max=1000000",
                    "--quiet-dhcp",
                    "--log-facility=-",
                    &pid,
                ],
            ]
            .concat();
            ns.spawn(&ns.srv, &argv, &[], &log)
        }
    };
    Some((p, log))
}

fn dhcp_point(ns: &Netns, kind: &str, rate: Option<u32>, secs: u32) -> Result<DhcpPoint, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (mut srv, log) = start_dhcp(ns, kind, dir.path()).ok_or("not found")?;
    if !wait_udp(&mut srv, 67, &log) {
        return Err("did not start".into());
    }
    let perfdhcp = sbin("perfdhcp").ok_or("perfdhcp not found")?;
    let p = perfdhcp.display().to_string();
    let secs_s = secs.to_string();
    let rate_s = rate.map(|r| r.to_string());
    let mut argv = vec![
        "taskset",
        "-c",
        "1",
        &p,
        "-4",
        "-l",
        CLI,
        "-p",
        &secs_s,
        "-R",
        "100000000",
        "-g",
        "single",
        // After the sending period, wait 1 s for the replies still in flight instead of
        // counting them as drops (the rate below is then ACKs over the sending period).
        "-W",
        "1000000",
    ];
    if let Some(r) = &rate_s {
        argv.extend(["-r", r]);
    }
    argv.push(SRV);
    let cpu0 = srv.cpu_secs();
    let (_, out) = ns.run(&ns.cli, &argv, Duration::from_secs(u64::from(secs) + 30));
    let cpu1 = srv.cpu_secs();
    let alive = srv.running();
    srv.terminate(Duration::from_secs(10));
    let mut point = parse_perfdhcp(&out).ok_or_else(|| {
        format!(
            "perfdhcp output not understood:\n{out}\n--- server log\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    })?;
    if !alive {
        return Err(format!(
            "server died during the run\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        ));
    }
    if let (Some(a), Some(b)) = (cpu0, cpu1)
        && point.acks > 0
    {
        point.cpu_us_per_lease = Some((b - a) * 1e6 / point.acks as f64);
    }
    // perfdhcp's own rate divides by the run time including the exit wait.
    point.rate = point.acks as f64 / f64::from(secs.max(1));
    Ok(point)
}

fn bench_dhcp(ns: &Netns) {
    let secs: u32 = env_or("BOOT_BENCH_DHCP_SECS", "4").parse().unwrap_or(4);
    let rates: Vec<Option<u32>> = env_or("BOOT_BENCH_DHCP_RATES", "1000,4000,max")
        .split(',')
        .map(|r| r.trim().parse().ok())
        .collect();
    println!(
        "\n## DHCP: perfdhcp (relay, -g single, 100M MACs) {secs} s per point, fresh server and \
         empty lease store per point"
    );
    if sbin("perfdhcp").is_none() {
        println!("perfdhcp not found (Debian package kea-admin): DHCP skipped");
        return;
    }
    println!(
        "| server | offered/s | DORA/s | drop % | DISCOVER→OFFER ms | REQUEST→ACK ms | CPU µs/lease |"
    );
    println!("|---|---|---|---|---|---|---|");
    // Kea first: its flood rate is the offered rate of pxe-server's extra point.
    let mut kea_max: Option<f64> = None;
    let mut pxe_max: Option<f64> = None;
    let mut pxe_at_kea_max: Option<(u32, f64)> = None;
    for kind in ["kea", "pxe-server", "dnsmasq"] {
        let label = match kind {
            "pxe-server" => "pxe-server (SQLite, fsync before ACK)",
            "kea" => "kea (memfile, persist)",
            _ => "dnsmasq --no-ping (lease file)",
        };
        let mut points: Vec<Option<u32>> = rates.clone();
        let kea_rate = kea_max.map(|r| r.floor() as u32).filter(|r| *r > 0);
        if kind == "pxe-server"
            && let Some(r) = kea_rate
        {
            points.push(Some(r));
        }
        for rate in &points {
            let offered = rate.map_or("max".to_owned(), |r| r.to_string());
            match dhcp_point(ns, kind, *rate, secs) {
                Ok(p) => {
                    let drop = if p.discovers > 0 {
                        100.0 * (1.0 - p.acks as f64 / p.discovers as f64)
                    } else {
                        f64::NAN
                    };
                    println!(
                        "| {label} | {offered} | {:.1} | {drop:.2} | {:.2} | {:.2} | {} |",
                        p.rate,
                        p.offer_ms,
                        p.ack_ms,
                        p.cpu_us_per_lease
                            .map_or("-".to_owned(), |c| format!("{c:.0}"))
                    );
                    match (kind, rate) {
                        ("kea", None) => kea_max = Some(p.rate),
                        ("pxe-server", None) => pxe_max = Some(p.rate),
                        ("pxe-server", Some(r)) if Some(*r) == kea_rate => {
                            pxe_at_kea_max = Some((*r, drop));
                        }
                        _ => {}
                    }
                }
                Err(e) => println!(
                    "| {label} | {offered} | failed: {} |",
                    e.replace('\n', " / ")
                ),
            }
        }
    }
    match (pxe_max, kea_max) {
        (Some(p), Some(k)) if k > 0.0 => println!(
            "\nflood: pxe-server {p:.0} DORA/s vs Kea {k:.0} = {:.2}x (target >= 1.5x)",
            p / k
        ),
        _ => println!("\nflood: no pxe-server/Kea pair to compare (a point failed or was not run)"),
    }
    match pxe_at_kea_max {
        Some((r, d)) => {
            println!("pxe-server offered Kea's flood rate ({r}/s): {d:.2} % drops (target 0 %)")
        }
        None => println!("pxe-server was not run at Kea's flood rate (no `max` point for Kea)"),
    }
}

// ------------------------------------------------------------------------------------ TFTP

/// Starts TFTP server `kind` serving `root` on SRV:69.
fn start_tftp(ns: &Netns, kind: &str, root: &Path, dir: &Path) -> Option<(Proc, PathBuf)> {
    let log = dir.join(format!("{kind}-tftp.log"));
    let r = root.display().to_string();
    let pin = ["taskset", "-c", "0"];
    let p = match kind {
        "pxe-server" => {
            let data = dir.join("pxe-data").display().to_string();
            let tftp = format!("{SRV}:69");
            let http = format!("{SRV}:8080");
            let url = format!("http://{SRV}:8080");
            let argv = [
                &pin[..],
                &[
                    BIN,
                    "serve",
                    "--data-dir",
                    &data,
                    "--assets",
                    &r,
                    "--dhcp-mode",
                    "off",
                    "--tftp",
                    &tftp,
                    "--http",
                    &http,
                    "--public-url",
                    &url,
                ],
            ]
            .concat();
            ns.spawn(
                &ns.srv,
                &argv,
                &[("RUST_LOG", "warn"), ("NO_COLOR", "1")],
                &log,
            )
        }
        "tftpd-hpa" => {
            let b = sbin("in.tftpd")?.display().to_string();
            let addr = format!("{SRV}:69");
            let argv = [
                &pin[..],
                &[
                    b.as_str(),
                    "--foreground",
                    "--listen",
                    "--address",
                    &addr,
                    "--user",
                    "root",
                    "--secure",
                    &r,
                ],
            ]
            .concat();
            ns.spawn(&ns.srv, &argv, &[], &log)
        }
        "atftpd" => {
            let b = atftpd_bin()?.display().to_string();
            let argv = [
                &pin[..],
                &[
                    b.as_str(),
                    "--daemon",
                    "--no-fork",
                    "--user",
                    "root.root",
                    "--bind-address",
                    SRV,
                    "--port",
                    "69",
                    "--logfile",
                    "/dev/null",
                    &r,
                ],
            ]
            .concat();
            ns.spawn(&ns.srv, &argv, &[], &log)
        }
        _ => {
            let b = sbin("dnsmasq")?.display().to_string();
            let iface = format!("--interface={SRV_IF}");
            let root_opt = format!("--tftp-root={r}");
            let pid = format!("--pid-file={}/dnsmasq-tftp.pid", dir.display());
            let argv = [
                &pin[..],
                &[
                    b.as_str(),
                    "-k",
                    "--conf-file=/dev/null",
                    "--port=0",
                    &iface,
                    "--bind-interfaces",
                    "--user=root",
                    "--enable-tftp",
                    &root_opt,
                    "--log-facility=-",
                    &pid,
                ],
            ]
            .concat();
            ns.spawn(&ns.srv, &argv, &[], &log)
        }
    };
    Some((p, log))
}

/// One client fetch of `file` into `out`; seconds taken if it completed byte-exact.
fn fetch(
    ns: &Netns,
    client: &str,
    ws: u32,
    file: &str,
    out: &Path,
    want: &[u8],
) -> Result<f64, String> {
    let _ = std::fs::remove_file(out);
    let o = out.display().to_string();
    let url = format!("tftp://{SRV}/{file}");
    let w = format!("windowsize {ws}");
    let argv: Vec<&str> = if client == "curl" {
        vec![
            "taskset",
            "-c",
            "1",
            "curl",
            "-sS",
            "--max-time",
            "120",
            "--tftp-blksize",
            "1468",
            "-o",
            &o,
            &url,
        ]
    } else {
        vec![
            "taskset",
            "-c",
            "1",
            "atftp",
            "--option",
            "blksize 1468",
            "--option",
            &w,
            "-g",
            "-r",
            file,
            "-l",
            &o,
            SRV,
            "69",
        ]
    };
    let t = Instant::now();
    let (ok, text) = ns.run(&ns.cli, &argv, Duration::from_secs(150));
    let secs = t.elapsed().as_secs_f64();
    if !ok {
        return Err(text.lines().take(3).collect::<Vec<_>>().join(" / "));
    }
    let got = std::fs::read(out).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(out);
    if got != want {
        return Err(format!("content differs ({} bytes)", got.len()));
    }
    Ok(secs)
}

/// Source address of storm client `i` (each client is its own host, as in a real rack).
fn storm_addr(i: usize) -> String {
    format!("198.18.0.{}", 10 + i)
}

/// 20 concurrent curl fetches of the storm file, each from its own address (or all from the
/// client's one address when `!distinct`); (wall seconds, completed byte-exact).
fn storm(ns: &Netns, out_dir: &Path, want: &[u8], distinct: bool) -> (f64, usize) {
    let url = format!("tftp://{SRV}/storm.bin");
    let t = Instant::now();
    let outs: Vec<PathBuf> = (0..STORM_CLIENTS)
        .map(|i| out_dir.join(format!("storm-{i}")))
        .collect();
    let results: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = outs
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let url = &url;
                s.spawn(move || {
                    let _ = std::fs::remove_file(o);
                    let os = o.display().to_string();
                    let from = if distinct {
                        storm_addr(i)
                    } else {
                        CLI.to_owned()
                    };
                    let (ok, _) = ns.run(
                        &ns.cli,
                        &[
                            "taskset",
                            "-c",
                            "1",
                            "curl",
                            "-sS",
                            "--max-time",
                            "150",
                            "--interface",
                            &from,
                            "--tftp-blksize",
                            "1468",
                            "-o",
                            &os,
                            url,
                        ],
                        Duration::from_secs(180),
                    );
                    ok
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(false))
            .collect()
    });
    let wall = t.elapsed().as_secs_f64();
    let good = outs
        .iter()
        .zip(results)
        .filter(|(o, ok)| *ok && std::fs::read(o).is_ok_and(|g| g == want))
        .count();
    for o in &outs {
        let _ = std::fs::remove_file(o);
    }
    (wall, good)
}

fn bench_tftp(ns: &Netns) {
    let runs: usize = env_or("BOOT_BENCH_RUNS", "3").parse().unwrap_or(3).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&root).expect("root");
    std::fs::create_dir_all(&out).expect("out");
    let big = pattern(BIG, 42);
    let small = pattern(STORM_FILE, 43);
    std::fs::write(root.join("big.bin"), &big).expect("big.bin");
    std::fs::write(root.join("storm.bin"), &small).expect("storm.bin");
    let _ = run_bounded(
        std::process::Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(dir.path()),
        Duration::from_secs(10),
    );

    println!(
        "\n## TFTP: 64 MiB at blksize 1468, MiB/s median of {runs} [min–max]; server CPU s/GiB \
         over all fetches of the row"
    );
    println!("| server | curl ws=1 | atftp ws=1 | atftp ws=16 | srvCPU s/GiB |");
    println!("|---|---|---|---|---|");
    let mut storms = Vec::new();
    for kind in ["pxe-server", "tftpd-hpa", "atftpd", "dnsmasq"] {
        let Some((mut srv, log)) = start_tftp(ns, kind, &root, dir.path()) else {
            println!("| {kind} | not found | | | |");
            continue;
        };
        if !wait_udp(&mut srv, 69, &log) {
            println!("| {kind} | did not start | | | |");
            continue;
        }
        let sampler = NsCpu::start(srv.pid());
        let mut bytes = 0usize;
        let mut cells = Vec::new();
        for (client, ws) in [("curl", 1u32), ("atftp", 1), ("atftp", 16)] {
            let mut rates = Vec::new();
            let mut err = None;
            for _ in 0..runs {
                match fetch(ns, client, ws, "big.bin", &out.join("big"), &big) {
                    Ok(secs) => {
                        rates.push(BIG as f64 / MIB / secs);
                        bytes += BIG;
                    }
                    Err(e) => err = Some(e),
                }
            }
            let ignored = ws > 1 && matches!(kind, "tftpd-hpa" | "dnsmasq");
            cells.push(match (median(rates.clone()), err) {
                (Some(m), None) => format!(
                    "{m:.1} [{:.1}–{:.1}]{}",
                    rates.iter().copied().fold(f64::INFINITY, f64::min),
                    rates.iter().copied().fold(0.0, f64::max),
                    if ignored { " (ws ignored)" } else { "" }
                ),
                (_, Some(e)) => format!("failed: {e}"),
                (None, None) => "-".into(),
            });
        }
        let cpu = match sampler.finish() {
            Some(c) if bytes > 0 => format!("{:.1}", c / (bytes as f64 / MIB / 1024.0)),
            _ => "-".into(),
        };
        println!(
            "| {kind} | {} | {} | {} | {cpu} |",
            cells[0], cells[1], cells[2]
        );
        // pxe-server caps sessions per client address (8 by default): also show the storm
        // as it looks from a single address.
        let variants: &[bool] = if kind == "pxe-server" {
            &[true, false]
        } else {
            &[true]
        };
        for &distinct in variants {
            let sampler = NsCpu::start(srv.pid());
            let (wall, good) = storm(ns, &out, &small, distinct);
            let total = (STORM_CLIENTS * STORM_FILE) as f64;
            let scpu = match sampler.finish() {
                Some(c) => format!("{:.1}", c / (total / MIB / 1024.0)),
                None => "-".into(),
            };
            let label = if distinct {
                kind.to_owned()
            } else {
                format!("{kind} (all 20 from one address)")
            };
            storms.push(format!(
                "| {label} | {wall:.2} | {:.0} | {scpu} | {good}/{STORM_CLIENTS} |",
                total / MIB / wall
            ));
        }
        srv.terminate(Duration::from_secs(10));
    }
    println!(
        "\n## TFTP boot storm: {STORM_CLIENTS} concurrent curl --tftp-blksize 1468 × 30 MiB, \
         each client from its own address"
    );
    println!("| server | wall s | aggregate MiB/s | srvCPU s/GiB | complete byte-exact |");
    println!("|---|---|---|---|---|");
    for s in storms {
        println!("{s}");
    }
}

fn main() {
    if !is_root() {
        println!("boot_services bench: skipped (creating network namespaces needs root)");
        return;
    }
    // `cargo bench` passes `--bench`; a filter argument selects `dhcp` or `tftp` only.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |k: &str| filter.is_empty() || filter.iter().any(|f| f == k);
    let t = Instant::now();
    let ns = Netns::create("bench", &format!("{SRV}/15"), &format!("{CLI}/15"));
    ns.static_neighbours(SRV, CLI);
    for i in 0..STORM_CLIENTS {
        let a = storm_addr(i);
        ns.add_client_addr(&format!("{a}/15"));
        ns.static_neighbours(SRV, &a);
    }
    println!(
        "# boot services: pxe-server vs peers over one veth pair (servers on CPU 0, clients on CPU 1)"
    );
    if want("dhcp") {
        bench_dhcp(&ns);
    }
    if want("tftp") {
        bench_tftp(&ns);
    }
    println!("\n(total {:.0} s)", t.elapsed().as_secs_f64());
}
