//! TFTP service tests on loopback (127.0.0.1, port 0): interop with the Debian clients atftp,
//! tftp-hpa and curl, our own windowsize client, block rollover, client aborts, WRQ refusal,
//! a path-traversal corpus and a malformed-packet storm.
//!
//! A client-specific test prints a SKIP line and returns when its binary is missing
//! (`cargo xtask setup` installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "tftp/client.rs"]
mod client;
#[path = "services/traversal.rs"]
mod traversal;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use client::{Fetch, ack, count_arrivals, error, fetch, parse_error, parse_oack, pattern, request};
use pxe_server::tftp::{TftpConfig, TftpStats, serve};
use tokio_util::sync::CancellationToken;

/// A server running on its own runtime thread; stopped and joined on drop.
struct Server {
    addr: SocketAddr,
    stats: Arc<TftpStats>,
    token: CancellationToken,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    fn start(root: &Path, tweak: impl FnOnce(&mut TftpConfig)) -> Server {
        let mut cfg = TftpConfig::new(root);
        tweak(&mut cfg);
        let stats = Arc::clone(&cfg.stats);
        let token = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let tok = token.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
                tx.send(sock.local_addr()?).ok();
                serve(sock, cfg, tok).await
            })
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server did not start");
        Server {
            addr,
            stats,
            token,
            thread: Some(thread),
        }
    }

    /// Stops the server and asserts that `serve` returned `Ok` within a bounded time.
    fn stop(mut self) {
        self.token.cancel();
        let t = self.thread.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !t.is_finished() {
            assert!(
                Instant::now() < deadline,
                "serve did not return after shutdown"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        t.join().unwrap().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.token.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls `cond` every 10 ms for up to 10 s.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn have(bin: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    if !found {
        eprintln!("SKIP: `{bin}` is not installed (run `cargo xtask setup`)");
    }
    found
}

/// A temp dir with `root/` holding `files`.
fn root_with(files: &[(&str, &[u8])]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    for (name, data) in files {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    (dir, root)
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("spawn client");
    if !out.status.success() {
        eprintln!(
            "{cmd:?}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length differs");
    assert!(got == want, "{what}: content differs");
}

/// Sends `pkt` from a fresh socket and returns the first reply (retrying the send), if any.
fn exchange(server: SocketAddr, pkt: &[u8], wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = vec![0u8; 70_000];
    for _ in 0..3 {
        sock.send_to(pkt, server).unwrap();
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            return Some((buf[..n].to_vec(), from));
        }
    }
    None
}

// A file of 3 MiB + 123 bytes: many blocks at every size, and a short last block.
const INTEROP_LEN: usize = 3 * 1024 * 1024 + 123;

#[test]
fn atftp_blksize_and_windowsize_matrix() {
    if !have("atftp") {
        return;
    }
    let data = pattern(INTEROP_LEN, 1);
    let exact = pattern(1468 * 100, 2); // a multiple of blksize: ends with an empty block
    let (dir, root) = root_with(&[("boot/ipxe.efi", &data), ("exact.bin", &exact)]);
    let srv = Server::start(&root, |c| c.max_blksize = 8192);
    for blksize in [512u16, 1468, 8192] {
        for ws in [1u16, 16, 64] {
            let out = dir.path().join(format!("out-{blksize}-{ws}"));
            let o = run(Command::new("atftp")
                .args(["--option", &format!("blksize {blksize}")])
                .args(["--option", &format!("windowsize {ws}")])
                .args(["--option", "tsize enable"])
                .args(["-g", "-r", "/boot/ipxe.efi", "-l"])
                .arg(&out)
                .arg("127.0.0.1")
                .arg(srv.addr.port().to_string()));
            assert!(o.status.success(), "atftp blksize {blksize} ws {ws}");
            assert_same(
                &std::fs::read(&out).unwrap(),
                &data,
                &format!("atftp {blksize}/{ws}"),
            );
        }
    }
    let out = dir.path().join("exact");
    let o = run(Command::new("atftp")
        .args(["--option", "blksize 1468", "-g", "-r", "exact.bin", "-l"])
        .arg(&out)
        .arg("127.0.0.1")
        .arg(srv.addr.port().to_string()));
    assert!(o.status.success());
    assert_same(
        &std::fs::read(&out).unwrap(),
        &exact,
        "atftp exact multiple",
    );
    // The client may exit before the server has processed its last ACK: wait for it.
    wait_for("10 completed sessions", || {
        srv.stats.sessions_completed.load(Ordering::Relaxed) == 10
    });
    srv.stop();
}

#[test]
fn curl_blksize_matrix() {
    if !have("curl") {
        return;
    }
    let data = pattern(INTEROP_LEN, 3);
    let (dir, root) = root_with(&[("ipxe.efi", &data)]);
    let srv = Server::start(&root, |c| c.max_blksize = 8192);
    for blksize in [512u16, 1468, 8192] {
        let out = dir.path().join(format!("curl-{blksize}"));
        let o = run(Command::new("curl")
            .args(["-sS", "--max-time", "60", "--tftp-blksize"])
            .arg(blksize.to_string())
            .arg("-o")
            .arg(&out)
            .arg(format!("tftp://127.0.0.1:{}/ipxe.efi", srv.addr.port())));
        assert!(o.status.success(), "curl blksize {blksize}");
        assert_same(
            &std::fs::read(&out).unwrap(),
            &data,
            &format!("curl {blksize}"),
        );
    }
    // A missing file is a clean failure, not a hang.
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "/dev/null"])
        .arg(format!("tftp://127.0.0.1:{}/missing.efi", srv.addr.port()))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_eq!(srv.stats.rejected("not_found"), 1);
    srv.stop();
}

#[test]
fn tftp_hpa_get_and_put() {
    if !have("tftp") {
        return;
    }
    let data = pattern(1024 * 1024 + 7, 4);
    let (dir, root) = root_with(&[("undionly.kpxe", &data)]);
    let srv = Server::start(&root, |_| {});
    let out = dir.path().join("hpa-out");
    let o = run(Command::new("tftp")
        .args(["-m", "binary", "127.0.0.1"])
        .arg(srv.addr.port().to_string())
        .arg("-c")
        .arg("get")
        .arg("undionly.kpxe")
        .arg(&out));
    assert!(o.status.success());
    assert_same(&std::fs::read(&out).unwrap(), &data, "tftp-hpa get");
    // put: refused with ERROR 2 and nothing written into the root.
    let local = dir.path().join("upload.bin");
    std::fs::write(&local, b"should never arrive").unwrap();
    let o = Command::new("tftp")
        .args(["-m", "binary", "127.0.0.1"])
        .arg(srv.addr.port().to_string())
        .arg("-c")
        .arg("put")
        .arg(&local)
        .arg("upload.bin")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(text.contains("Error code 2"), "tftp-hpa put said: {text}");
    assert!(!root.join("upload.bin").exists());
    assert_eq!(srv.stats.rejected("wrq_refused"), 1);
    srv.stop();
}

#[test]
fn atftp_put_is_refused() {
    if !have("atftp") {
        return;
    }
    let (dir, root) = root_with(&[("a", b"x")]);
    let local = dir.path().join("up");
    std::fs::write(&local, b"payload").unwrap();
    let srv = Server::start(&root, |_| {});
    let o = Command::new("atftp")
        .args(["-p", "-r", "up", "-l"])
        .arg(&local)
        .arg("127.0.0.1")
        .arg(srv.addr.port().to_string())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(!root.join("up").exists());
    assert_eq!(srv.stats.rejected("wrq_refused"), 1);
    srv.stop();
}

#[test]
fn own_client_windowsize_matrix() {
    let data = pattern(INTEROP_LEN, 5);
    let (_dir, root) = root_with(&[("f", &data)]);
    let srv = Server::start(&root, |c| c.max_blksize = 8192);
    for blksize in [512u16, 1468, 8192] {
        for ws in [1u16, 16, 64] {
            let got = fetch(
                srv.addr,
                "f",
                &Fetch {
                    blksize: Some(blksize),
                    windowsize: Some(ws),
                    tsize: true,
                    ..Fetch::default()
                },
                None,
            )
            .unwrap();
            assert_same(&got.data, &data, &format!("own {blksize}/{ws}"));
            assert!(
                got.oack
                    .contains(&("tsize".to_string(), INTEROP_LEN.to_string()))
            );
            assert!(
                got.oack
                    .contains(&("windowsize".to_string(), ws.to_string()))
            );
        }
    }
    srv.stop();
}

#[test]
fn blksize_is_clamped_to_the_configured_maximum() {
    let data = pattern(100_000, 6);
    let (_dir, root) = root_with(&[("f", &data)]);
    let srv = Server::start(&root, |_| {}); // default max 1468
    let got = fetch(
        srv.addr,
        "f",
        &Fetch {
            blksize: Some(65464),
            windowsize: Some(1000),
            ..Fetch::default()
        },
        None,
    )
    .unwrap();
    assert_same(&got.data, &data, "clamped");
    assert_eq!(
        got.oack,
        vec![
            ("blksize".to_string(), "1468".to_string()),
            ("windowsize".to_string(), "64".to_string())
        ]
    );
    srv.stop();
}

/// 100 MiB at blksize 512 = 204,801 blocks: the block number wraps past 65535 three times.
#[test]
fn hundred_mib_at_blksize_512_rolls_over() {
    let data = pattern(100 * 1024 * 1024, 7);
    let (dir, root) = root_with(&[("initrd.img", &data)]);
    let srv = Server::start(&root, |_| {});
    let got = fetch(
        srv.addr,
        "initrd.img",
        &Fetch {
            windowsize: Some(64),
            deadline: Some(Duration::from_secs(300)),
            ..Fetch::default()
        },
        None,
    )
    .unwrap();
    assert_same(&got.data, &data, "own client 100 MiB / 512");
    if have("atftp") {
        let out = dir.path().join("atftp-100m");
        let o = run(Command::new("atftp")
            .args(["--option", "blksize 512", "--option", "windowsize 64"])
            .args(["-g", "-r", "initrd.img", "-l"])
            .arg(&out)
            .arg("127.0.0.1")
            .arg(srv.addr.port().to_string()));
        assert!(o.status.success());
        assert_same(&std::fs::read(&out).unwrap(), &data, "atftp 100 MiB / 512");
    }
    srv.stop();
}

#[test]
fn client_error_after_oack_stops_everything() {
    let (_dir, root) = root_with(&[("ipxe.efi", &pattern(50_000, 8))]);
    let srv = Server::start(&root, |c| c.default_timeout = Duration::from_millis(300));
    let rrq = request(
        1,
        b"ipxe.efi",
        "octet",
        &[("tsize", "0".into()), ("blksize", "1468".into())],
    );

    // Control: a client that goes silent after the OACK gets it again within two timeouts,
    // so the listening below does see retransmissions when there are any.
    let quiet = UdpSocket::bind("127.0.0.1:0").unwrap();
    quiet.send_to(&rrq, srv.addr).unwrap();
    assert!(count_arrivals(&quiet, Duration::from_millis(900)) >= 2);

    // The UEFI tsize probe: RRQ, OACK, ERROR 8.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(&rrq, srv.addr).unwrap();
    let mut buf = [0u8; 2048];
    let (n, tid) = sock.recv_from(&mut buf).unwrap();
    let oack = parse_oack(&buf[..n]).expect("OACK");
    assert!(oack.contains(&("tsize".to_string(), "50000".to_string())));
    sock.send_to(&error(8, "tsize probe"), tid).unwrap();
    assert_eq!(count_arrivals(&sock, Duration::from_millis(1000)), 0);
    assert_eq!(
        srv.stats.sessions_aborted_by_peer.load(Ordering::Relaxed),
        1
    );
    srv.stop();
}

#[test]
fn wrong_tid_gets_error_5_and_transfer_continues() {
    let data = pattern(4 * 1024 * 1024, 9);
    let (_dir, root) = root_with(&[("f", &data)]);
    let srv = Server::start(&root, |_| {});
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = srv.addr;
    let want = data.clone();
    let transfer = std::thread::spawn(move || {
        fetch(
            addr,
            "f",
            &Fetch {
                blksize: Some(512),
                ..Fetch::default()
            },
            Some(tx),
        )
    });
    let tid = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let stray = UdpSocket::bind("127.0.0.1:0").unwrap();
    stray
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 512];
    for pkt in [ack(1), error(0, "go away"), ack(60000)] {
        stray.send_to(&pkt, tid).unwrap();
        let (n, from) = stray.recv_from(&mut buf).unwrap();
        assert_eq!(from, tid);
        assert_eq!(parse_error(&buf[..n]).map(|e| e.0), Some(5));
    }
    // A burst of strays: ERROR 5 replies are limited to 20 per second per session.
    for _ in 0..200 {
        stray.send_to(&ack(7), tid).unwrap();
    }
    let replies = count_arrivals(&stray, Duration::from_millis(500));
    assert!(replies <= 40, "{replies} ERROR 5 replies to a burst of 200");
    let got = transfer.join().unwrap().unwrap();
    assert_same(&got.data, &want, "transfer beside a stray TID");
    assert!(srv.stats.rejected("stray_tid") >= 3);
    srv.stop();
}

#[test]
fn requests_refused_with_the_right_error() {
    let (_dir, root) = root_with(&[("f", b"hello")]);
    let srv = Server::start(&root, |_| {});
    let wait = Duration::from_secs(2);
    let code = |pkt: Vec<u8>| {
        exchange(srv.addr, &pkt, wait).and_then(|(p, _)| parse_error(&p).map(|e| e.0))
    };
    assert_eq!(code(request(2, b"f", "octet", &[])), Some(2), "WRQ");
    assert_eq!(code(request(2, b"new", "octet", &[])), Some(2), "WRQ new");
    assert_eq!(code(request(1, b"f", "netascii", &[])), Some(4), "netascii");
    assert_eq!(code(request(1, b"f", "mail", &[])), Some(4), "mail");
    assert_eq!(code(request(1, b"nope", "octet", &[])), Some(1), "missing");
    assert_eq!(
        code(request(1, b"../f", "octet", &[])),
        Some(2),
        "traversal"
    );
    // Malformed and non-request packets get no reply at all.
    for junk in [
        &b""[..],
        b"\x00",
        b"\x00\x01f",
        b"\x00\x01f\x00bogus\x00",
        b"\x00\x04\x00\x01",
        b"\x00\x03\x00\x01xx",
        b"\x00\x09",
    ] {
        assert!(
            exchange(srv.addr, junk, Duration::from_millis(200)).is_none(),
            "{junk:?} got a reply"
        );
    }
    assert_eq!(srv.stats.rejected("wrq_refused"), 2);
    assert_eq!(srv.stats.rejected("mode_refused"), 2);
    // Each junk packet was sent three times (`exchange` retries when there is no reply).
    assert_eq!(srv.stats.rejected("no_opcode"), 6);
    assert_eq!(srv.stats.rejected("missing_nul"), 3);
    assert_eq!(srv.stats.rejected("bad_mode"), 3);
    assert_eq!(srv.stats.rejected("unexpected_opcode"), 6);
    assert_eq!(srv.stats.rejected("unknown_opcode"), 3);
    srv.stop();
}

#[test]
fn session_caps_drop_silently() {
    let (_dir, root) = root_with(&[("f", &pattern(10_000, 10))]);
    let srv = Server::start(&root, |c| {
        c.max_sessions_per_client = 2;
        c.default_timeout = Duration::from_millis(300);
        c.max_retries = 1;
    });
    let rrq = request(1, b"f", "octet", &[]);
    let socks: Vec<UdpSocket> = (0..3)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut buf = [0u8; 2048];
    for s in &socks[..2] {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send_to(&rrq, srv.addr).unwrap();
        s.recv_from(&mut buf).unwrap(); // DATA 1
    }
    socks[2].send_to(&rrq, srv.addr).unwrap();
    assert_eq!(count_arrivals(&socks[2], Duration::from_millis(200)), 0);
    assert_eq!(srv.stats.rejected("busy_client"), 1);
    // Once the two silent sessions time out (300 ms × 2), the slot is free again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while srv.stats.sessions_timed_out.load(Ordering::Relaxed) < 2 {
        assert!(Instant::now() < deadline, "sessions did not time out");
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = fetch(srv.addr, "f", &Fetch::default(), None).unwrap();
    assert_eq!(got.data.len(), 10_000);
    srv.stop();
}

/// ≥ 200 traversal payloads (the shared corpus of `services/traversal.rs`): none yields a
/// DATA packet, every parsable one an ERROR 1 or 2, and a canary outside the root (plain, via
/// symlinks, and in a sibling-prefix directory) is never served.
#[test]
fn traversal_corpus_reads_nothing_outside_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    traversal::plant(&root).unwrap();
    let srv = Server::start(&root, |_| {});
    let corpus = traversal::corpus(&root);
    assert!(corpus.len() >= 200, "{} payloads", corpus.len());

    let mut refused = 0;
    for name in &corpus {
        let pkt = request(1, name, "octet", &[("tsize", "0".into())]);
        let reply = exchange(srv.addr, &pkt, Duration::from_millis(500));
        match reply {
            Some((p, _)) => {
                let (code, _) = parse_error(&p).unwrap_or_else(|| {
                    panic!("{:?}: not an ERROR: {p:?}", String::from_utf8_lossy(name))
                });
                assert!(code == 1 || code == 2, "{name:?}: ERROR {code}");
                assert!(!traversal::leaks_canary(&p));
                refused += 1;
            }
            None => assert!(
                traversal::may_go_unanswered(&pkt, name),
                "{:?}: no reply",
                String::from_utf8_lossy(name)
            ),
        }
    }
    assert!(refused >= 200);
    assert_eq!(srv.stats.data_sent.load(Ordering::Relaxed), 0);
    // Control: the same harness does fetch a file inside the root.
    let got = fetch(srv.addr, "/sub/ok", &Fetch::default(), None).unwrap();
    assert_eq!(got.data, traversal::INSIDE);
    srv.stop();
}

/// Tiny deterministic RNG for the storm.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut p = seeds[rng.below(seeds.len())].clone();
    match rng.below(6) {
        0 => {
            for _ in 0..=rng.below(4) {
                if !p.is_empty() {
                    let i = rng.below(p.len());
                    p[i] ^= 1 << rng.below(8);
                }
            }
        }
        1 => p.truncate(rng.below(p.len() + 1)),
        2 => p.extend((0..rng.below(600)).map(|_| rng.next() as u8)),
        3 => {
            if p.len() >= 2 {
                p[0] = rng.next() as u8;
                p[1] = rng.next() as u8;
            }
        }
        4 => p = (0..rng.below(40)).map(|_| rng.next() as u8).collect(),
        _ => {
            p.retain(|&b| b != 0);
        }
    }
    p
}

/// ≥ 100,000 mutated packets at the listener and at a live session's transfer ID, while that
/// transfer completes byte-exact; afterwards the server still serves.
#[test]
fn malformed_storm_does_not_disturb_a_transfer() {
    let data = pattern(8 * 1024 * 1024, 11);
    let (_dir, root) = root_with(&[("ipxe.efi", &data), ("small", b"tiny")]);
    let srv = Server::start(&root, |_| {});
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = srv.addr;
    let transfer = std::thread::spawn(move || {
        fetch(
            addr,
            "ipxe.efi",
            &Fetch {
                blksize: Some(512),
                deadline: Some(Duration::from_secs(120)),
                ..Fetch::default()
            },
            Some(tx),
        )
    });
    let tid = rx.recv_timeout(Duration::from_secs(10)).unwrap();

    let seeds = vec![
        request(
            1,
            b"ipxe.efi",
            "octet",
            &[("blksize", "1468".into()), ("windowsize", "8".into())],
        ),
        request(1, b"../etc/passwd", "octet", &[]),
        request(2, b"x", "octet", &[]),
        ack(1),
        ack(0),
        error(8, "abort"),
        b"\x00\x03\x00\x01data".to_vec(),
        b"\x00\x06blksize\x00512\x00".to_vec(),
    ];
    let storm = UdpSocket::bind("127.0.0.1:0").unwrap();
    storm.set_nonblocking(true).unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut sink = [0u8; 2048];
    while sent < 100_000 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "storm too slow"
        );
        let pkt = mutate(&mut rng, &seeds);
        let to = if sent.is_multiple_of(2) {
            srv.addr
        } else {
            tid
        };
        if storm.send_to(&pkt, to).is_ok() {
            sent += 1;
        }
        // Drain replies (ERROR 5 and the like) and pace the storm a little so loopback
        // buffers, not the server, decide what is dropped.
        while storm.recv_from(&mut sink).is_ok() {}
        if sent.is_multiple_of(500) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let storm_secs = started.elapsed().as_secs_f64();
    let overlapped = !transfer.is_finished();
    let got = transfer.join().unwrap().unwrap();
    assert_same(&got.data, &data, "transfer during the storm");
    let rejected = srv.stats.rejected_total();
    eprintln!(
        "storm: {sent} packets in {storm_secs:.1} s (transfer still running at its end: \
         {overlapped}); server counted {rejected} rejections: {:?}",
        srv.stats.rejected_snapshot()
    );
    assert!(
        rejected >= 10_000,
        "server saw only {rejected} of the storm"
    );
    // Still serving afterwards.
    let after = fetch(srv.addr, "small", &Fetch::default(), None).unwrap();
    assert_eq!(after.data, b"tiny");
    srv.stop();
}

#[test]
fn shutdown_ends_active_sessions() {
    let (_dir, root) = root_with(&[("f", &pattern(100_000, 12))]);
    let srv = Server::start(&root, |c| c.default_timeout = Duration::from_secs(30));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(&request(1, b"f", "octet", &[]), srv.addr)
        .unwrap();
    let mut buf = [0u8; 1024];
    sock.recv_from(&mut buf).unwrap(); // DATA 1, then we stay silent
    let stats = Arc::clone(&srv.stats);
    srv.stop(); // asserts serve returns within 10 s despite the 30 s timeout
    assert_eq!(stats.sessions_cancelled.load(Ordering::Relaxed), 1);
}

#[test]
fn retransmitted_rrq_and_invalid_options() {
    let data = pattern(3000, 13);
    let (_dir, root) = root_with(&[("f", &data)]);
    let srv = Server::start(&root, |_| {});
    // The same RRQ twice from one transfer ID: one session, one DATA 1 (no amplification).
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rrq = request(1, b"f", "octet", &[]);
    sock.send_to(&rrq, srv.addr).unwrap();
    sock.send_to(&rrq, srv.addr).unwrap();
    assert_eq!(count_arrivals(&sock, Duration::from_millis(500)), 1);
    wait_for("duplicate counted", || {
        srv.stats.rejected("duplicate_request") == 1
    });
    // Only invalid options (RFC 2348/2349/7440 ranges), unknown and duplicate ones: no OACK,
    // the transfer starts with DATA 1 at 512 bytes.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let bad = request(
        1,
        b"f",
        "OCTET",
        &[
            ("blksize", "7".into()),
            ("timeout", "256".into()),
            ("windowsize", "0".into()),
            ("multicast", "".into()),
            ("timeout", "0".into()),
        ],
    );
    sock.send_to(&bad, srv.addr).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(
        &buf[..4],
        b"\x00\x03\x00\x01",
        "expected DATA 1, got {:?}",
        &buf[..n]
    );
    assert_eq!(n, 4 + 512);
    assert_eq!(&buf[4..n], &data[..512]);
    for reason in [
        "blksize_out_of_range",
        "timeout_out_of_range",
        "windowsize_out_of_range",
        "option_unknown",
        "option_duplicate",
    ] {
        assert_eq!(srv.stats.rejected(reason), 1, "{reason}");
    }
    srv.stop();
}
