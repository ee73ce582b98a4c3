//! `cargo bench -p pxe-server --bench api` (or `cargo xtask bench api`): boot-script renders/s
//! and registrations/s against a store of 10,000 machines, and the server's peak RSS.
//!
//! Runs the real release binary on loopback with a real SQLite store (WAL, synchronous=FULL: every
//! registration and every boot script is a durable write). Prints figures; asserts nothing about
//! speed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const MACHINES: usize = 10_000;
const RENDERS: usize = 10_000;
const CLIENTS: usize = 8;

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn mac(i: usize) -> String {
    format!(
        "02:00:00:{:02x}:{:02x}:{:02x}",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    )
}

fn rss_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `total` jobs over `CLIENTS` threads; returns elapsed time.
fn parallel(total: usize, job: impl Fn(&ureq::Agent, usize) + Sync) -> Duration {
    let next = AtomicUsize::new(0);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                let a = agent();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    job(&a, i);
                }
            });
        }
    });
    t0.elapsed()
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(&assets).expect("assets");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_pxe-server"))
        .args(["serve", "--http", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(&data)
        .arg("--assets")
        .arg(&assets)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pxe-server");
    let pid = child.id();
    let _server = Server(child);
    let a = agent();
    let t0 = Instant::now();
    while a
        .get(&format!("{base}/healthz"))
        .call()
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let failures = AtomicUsize::new(0);

    // Registrations: netboot (script + token) then register, for 10,000 new machines.
    let reg = parallel(MACHINES, |a, i| {
        let m = mac(i);
        let script = a
            .get(&format!("{base}/boot.ipxe?mac={m}"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        let Some(tok) = script
            .split_whitespace()
            .find_map(|w| w.strip_prefix("rackhand.token="))
        else {
            failures.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let body = serde_json::json!({ "hardware": {
            "dmi": { "system_serial": format!("BENCH-{i:06}") },
            "nics": [{ "name": "eth0", "mac": m }],
            "disks": [{ "name": "sda", "size_bytes": 480_103_981_056u64, "model": "SSD 480GB" },
                      { "name": "sdb", "size_bytes": 480_103_981_056u64, "model": "SSD 480GB" }],
            "memory": { "total_bytes": 137_438_953_472u64 },
            "cpu": { "model": "Xeon", "sockets": 2, "cores": 32, "threads": 64 }
        }});
        let ok = a
            .post(&format!("{base}/api/v1/agent/register"))
            .header("Authorization", &format!("Bearer {tok}"))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_str())
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if !ok {
            failures.fetch_add(1, Ordering::Relaxed);
        }
    });
    let rss_after_reg = rss_kib(pid, "VmRSS:");

    // Boot-script renders for known machines (each a durable boot event + token).
    let render = parallel(RENDERS, |a, i| {
        let m = mac((i * 7919) % MACHINES);
        let ok = a
            .get(&format!("{base}/boot.ipxe?mac={m}&platform=pcbios"))
            .call()
            .map(|r| r.status() == 200)
            .unwrap_or(false);
        if !ok {
            failures.fetch_add(1, Ordering::Relaxed);
        }
    });

    // Listing 10,000 machines.
    let op = std::fs::read_to_string(data.join("operator.token")).expect("token");
    let t = Instant::now();
    let n = a
        .get(&format!("{base}/api/v1/machines"))
        .header("Authorization", &format!("Bearer {}", op.trim()))
        .call()
        .ok()
        .and_then(|mut r| {
            r.body_mut()
                .with_config()
                .limit(256 << 20)
                .read_to_string()
                .ok()
        })
        .map(|b| {
            serde_json::from_str::<Vec<serde_json::Value>>(&b)
                .map(|v| v.len())
                .unwrap_or(0)
        })
        .unwrap_or(0);
    let list = t.elapsed();
    let hwm = rss_kib(pid, "VmHWM:");

    println!(
        "rackhand API benchmark ({CLIENTS} concurrent clients, loopback, SQLite WAL synchronous=FULL)"
    );
    println!("{:<44} {:>12}", "metric", "pxe-server");
    println!(
        "{:<44} {:>12.0}",
        "registrations/s (boot script + register)",
        MACHINES as f64 / reg.as_secs_f64()
    );
    println!(
        "{:<44} {:>12.0}",
        "boot-script renders/s (10,000 machines)",
        RENDERS as f64 / render.as_secs_f64()
    );
    println!(
        "{:<44} {:>12.1}",
        "list 10,000 machines (ms)",
        list.as_secs_f64() * 1000.0
    );
    println!(
        "{:<44} {:>12.1}",
        "RSS after 10,000 registrations (MiB)",
        rss_after_reg as f64 / 1024.0
    );
    println!(
        "{:<44} {:>12.1}",
        "peak RSS (VmHWM, MiB; target <= 64)",
        hwm as f64 / 1024.0
    );
    println!("{:<44} {:>12}", "machines listed", n);
    println!(
        "{:<44} {:>12}",
        "failed requests",
        failures.load(Ordering::Relaxed)
    );
}
