//! TFTP throughput over loopback (no assertions; prints figures).
//!
//! Fetches a 64 MiB file at blksize 1468 with windowsize 1 and 16 from rackhand's server using
//! the test client in `tests/tftp/client.rs`, best of three runs each. Peers are measured the
//! same way when found: tftpd-hpa (`in.tftpd`, ignores windowsize, so both of its columns are
//! lock-step) and atftpd (implements windowsize). They are looked for in `/usr/sbin` or taken
//! from `TFTP_BENCH_TFTPD_HPA` / `TFTP_BENCH_ATFTPD` (e.g. binaries unpacked with
//! `apt-get download tftpd-hpa atftpd libwrap0; dpkg -x`, with `LD_LIBRARY_PATH` pointing at
//! the unpacked libwrap), and run in the foreground on a free loopback port.
//! Run with `cargo bench -p pxe-server --bench tftp`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/tftp/client.rs"]
mod client;

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use client::{Fetch, fetch, pattern};
use pxe_server::tftp::{TftpConfig, serve};
use tokio_util::sync::CancellationToken;

const SIZE: usize = 64 * 1024 * 1024;
const RUNS: usize = 3;

fn measure(server: SocketAddr, want: &[u8], ws: u16) -> Option<f64> {
    let mut best: Option<f64> = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        let got = fetch(
            server,
            "big.bin",
            &Fetch {
                blksize: Some(1468),
                windowsize: Some(ws),
                deadline: Some(Duration::from_secs(300)),
                ..Fetch::default()
            },
            None,
        );
        let secs = t.elapsed().as_secs_f64();
        match got {
            Ok(f) if f.data == want => {}
            Ok(_) => {
                eprintln!("  content mismatch");
                return None;
            }
            Err(e) => {
                eprintln!("  fetch failed: {e}");
                return None;
            }
        }
        let mbs = SIZE as f64 / 1e6 / secs;
        best = Some(best.map_or(mbs, |b: f64| b.max(mbs)));
    }
    best
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Finds a peer server binary: the env var first, then `/usr/sbin/<name>`.
fn peer_bin(var: &str, name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os(var)
        .map(std::path::PathBuf::from)
        .or_else(|| Some(std::path::Path::new("/usr/sbin").join(name)))
        .filter(|p| p.exists())
}

/// A peer server child process, killed on drop.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a peer server on a free loopback port in the foreground.
fn start_peer(kind: &str, root: &std::path::Path) -> Option<(Peer, SocketAddr)> {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
    let mut cmd = match kind {
        "tftpd-hpa" => {
            let mut c = Command::new(peer_bin("TFTP_BENCH_TFTPD_HPA", "in.tftpd")?);
            c.args(["--foreground", "--listen", "--address"])
                .arg(addr.to_string())
                .args(["--user", "root", "--secure"])
                .arg(root);
            c
        }
        _ => {
            let mut c = Command::new(peer_bin("TFTP_BENCH_ATFTPD", "atftpd")?);
            c.args(["--daemon", "--no-fork", "--user", "root.root"])
                .args(["--bind-address", "127.0.0.1", "--port"])
                .arg(port.to_string())
                .args(["--logfile", "/dev/null"])
                .arg(root);
            c
        }
    };
    let child = cmd.spawn().ok()?;
    // Wait until the peer answers (a request for a missing file gets an ERROR).
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
    probe
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok()?;
    let rrq = client::request(1, b"no-such-file", "octet", &[]);
    let mut buf = [0u8; 600];
    for _ in 0..25 {
        probe.send_to(&rrq, addr).ok()?;
        if probe.recv_from(&mut buf).is_ok() {
            return Some((Peer(child), addr));
        }
    }
    drop(Peer(child));
    None
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(SIZE, 42);
    std::fs::write(dir.path().join("big.bin"), &data).unwrap();

    let token = CancellationToken::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let cfg = TftpConfig::new(dir.path());
    let tok = token.clone();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            tx.send(sock.local_addr().unwrap()).unwrap();
            serve(sock, cfg, tok).await
        })
    });
    let addr = rx.recv().unwrap();

    println!("TFTP 64 MiB fetch over loopback, blksize 1468, best of {RUNS} (MB/s = 10^6 B/s)");
    println!("{:<12} {:>10} {:>10}", "server", "ws=1", "ws=16");
    let row = |name: &str, addr: SocketAddr| {
        let a = measure(addr, &data, 1);
        let b = measure(addr, &data, 16);
        let f = |v: Option<f64>| v.map_or("failed".to_string(), |x| format!("{x:.1}"));
        println!("{name:<12} {:>10} {:>10}", f(a), f(b));
    };
    row("rackhand", addr);
    token.cancel();
    server.join().unwrap().unwrap();

    for kind in ["tftpd-hpa", "atftpd"] {
        match start_peer(kind, dir.path()) {
            Some((_peer, addr)) => row(kind, addr),
            None => println!("{kind:<12} not found or did not start (see the doc comment)"),
        }
    }
}
