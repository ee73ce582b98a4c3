//! Issue 3's TFTP acceptance against the real `pxe-server serve --tftp` binary, run in a
//! server namespace joined by one veth pair to a client namespace (both created here;
//! 10.99.0.0/24 exists only there), with Debian's clients and hand-made packets sent from the
//! client namespace:
//!
//! - atftp blksize 512/1468/8192 × windowsize 1/16/64, curl blksize 512/1468/8192 and
//!   tftp-hpa (no options) fetch byte-exact; blksize 8192 is negotiated down to 1468 (the
//!   server's cap: one unfragmented datagram on a 1500-byte MTU);
//! - a 100 MiB file at blksize 512 (block numbers wrap past 65535) arrives byte-exact;
//! - a client that answers the OACK (or a window of DATA) with ERROR 8 gets no further packet;
//! - write requests get ERROR 2 (raw WRQ, `atftp --put`, tftp-hpa `put`) and write nothing;
//! - the shared traversal corpus (`services/traversal.rs`, > 200 names) reads nothing outside
//!   the root: the root's parent holds a canary no reply contains, and each request gets
//!   ERROR 1 or 2.
//!
//! Needs root (namespaces); without it each test prints why and returns. Client binaries come
//! from `cargo xtask setup`; a test whose client is missing prints SKIP and returns. Namespaces
//! and processes are removed on success, failure and panic (drop guards; processes are killed
//! by PID). Every loop is bounded in count and time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "tftp/client.rs"]
mod client;
mod services;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use client::{ack, count_arrivals, error, parse_error, parse_oack, pattern, request};
use services::appliance::{self, Dirs, Opts, SERVER_IP};
use services::netns::{Netns, Proc, in_ns, is_root};
use services::traversal;

const BIN: &str = env!("CARGO_BIN_EXE_pxe-server");
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 250);
/// The server's listening address, as the clients see it.
const SERVER: SocketAddrV4 = SocketAddrV4::new(SERVER_IP, 69);
/// The server's blksize cap.
const MAX_BLKSIZE: u32 = 1468;

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipping: creating network namespaces needs root");
            return;
        }
    };
}

/// True when `bin` is installed; prints a SKIP line otherwise.
fn have(bin: &str) -> bool {
    let found = ["/usr/bin", "/bin", "/usr/sbin"]
        .iter()
        .any(|d| Path::new(d).join(bin).exists());
    if !found {
        eprintln!("SKIP: `{bin}` is not installed (run `cargo xtask setup`)");
    }
    found
}

/// The appliance serving TFTP in the server namespace. Field order is drop order: the process
/// goes before its namespaces and directories.
struct Tftp {
    srv: Proc,
    ns: Netns,
    dirs: Dirs,
}

impl Tftp {
    /// Creates the namespaces, writes `files` into the assets directory (the TFTP root),
    /// starts `pxe-server serve --tftp 10.99.0.1:69` (DHCP off) and waits until it answers.
    fn start(tag: &str, files: &[(&str, &[u8])]) -> Tftp {
        let ns = Netns::create(tag, "10.99.0.1/24", "10.99.0.250/24");
        let dirs = Dirs::new();
        for (name, data) in files {
            let p = dirs.assets.join(name);
            std::fs::create_dir_all(p.parent().expect("asset parent")).expect("asset dir");
            std::fs::write(p, data).expect("asset");
        }
        let opts = Opts {
            dhcp_mode: "off",
            dhcp_range: None,
            tftp: true,
            ..Opts::default()
        };
        let srv = appliance::start(&ns, Path::new(BIN), &dirs, &opts);
        let t = Tftp { srv, ns, dirs };
        t.wait_ready();
        t
    }

    /// Polls with an RRQ for a missing file until the server answers (ERROR 1), up to 30 s.
    fn wait_ready(&self) {
        let probe = request(1, b"readiness-probe.missing", "octet", &[]);
        let ready = Instant::now();
        let answered = self.in_cli(|| {
            let sock = client_socket();
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut buf = [0u8; 1024];
            for _ in 0..150 {
                if ready.elapsed() > Duration::from_secs(30) {
                    break;
                }
                // Sending fails (ENETUNREACH/ECONNREFUSED) until the server is up: retry.
                let _ = sock.send_to(&probe, SERVER);
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    return parse_error(buf.get(..n).unwrap_or_default()).map(|e| e.0);
                }
            }
            None
        });
        assert_eq!(
            answered,
            Some(1),
            "TFTP not answering within 30 s\n{}",
            self.dirs.log_tail(3000)
        );
    }

    /// Runs `f` on a thread inside the client namespace.
    fn in_cli<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_ns(&self.ns.cli, f)
    }

    /// Runs `argv` in the client namespace, killed after `limit`; (success, output).
    fn run(&self, argv: &[&str], limit: Duration) -> (bool, String) {
        self.ns.run(&self.ns.cli, argv, limit)
    }

    /// SIGTERM; the server must exit cleanly within 10 s.
    fn stop(mut self) {
        assert!(
            self.srv.terminate(Duration::from_secs(10)),
            "clean exit on SIGTERM\n{}",
            self.dirs.log_tail(3000)
        );
    }
}

/// A UDP socket on the client address (call inside the client namespace).
fn client_socket() -> UdpSocket {
    UdpSocket::bind(SocketAddrV4::new(CLIENT_IP, 0)).expect("bind the client address")
}

/// Sends `pkt` to the server from a fresh client socket, up to 3 times, and returns the first
/// reply with its source (call inside the client namespace).
fn exchange(pkt: &[u8], wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let sock = client_socket();
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = vec![0u8; 70_000];
    for _ in 0..3 {
        sock.send_to(pkt, SERVER).unwrap();
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            return Some((buf.get(..n).unwrap_or_default().to_vec(), from));
        }
    }
    None
}

/// UDP datagrams the calling thread's network namespace has received so far, on any port
/// (`InDatagrams + NoPorts + InErrors` of `/proc/thread-self/net/snmp`).
fn udp_received_in_this_ns() -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("read snmp");
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let names: Vec<&str> = udp.next().expect("Udp header").split_whitespace().collect();
    let values: Vec<&str> = udp.next().expect("Udp values").split_whitespace().collect();
    ["InDatagrams", "NoPorts", "InErrors"]
        .iter()
        .map(|want| {
            let i = names.iter().position(|n| n == want).expect("Udp counter");
            values
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .expect("Udp value")
        })
        .sum()
}

/// A raw IPv4/UDP socket in the client namespace: the kernel hands it a copy of every UDP
/// datagram the namespace receives, on any port, so a test can see what the server sent to a
/// Debian client.
struct Sniffer(socket2::Socket);

impl Sniffer {
    fn open(t: &Tftp) -> Sniffer {
        let sock = t.in_cli(|| {
            socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::RAW,
                Some(socket2::Protocol::UDP),
            )
            .expect("raw UDP socket")
        });
        sock.set_nonblocking(true).expect("nonblocking");
        Sniffer(sock)
    }

    /// UDP payloads from the server queued since the last call (at most 10,000).
    fn server_datagrams(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 70_000];
        for _ in 0..10_000 {
            let Ok(n) = std::io::Read::read(&mut &self.0, &mut buf) else {
                break;
            };
            let pkt = buf.get(..n).unwrap_or_default();
            if let Some(payload) = udp_payload_from(pkt, SERVER_IP) {
                out.push(payload.to_vec());
            }
        }
        out
    }
}

/// The UDP payload of IPv4 packet `pkt` when its source is `from`.
fn udp_payload_from(pkt: &[u8], from: Ipv4Addr) -> Option<&[u8]> {
    let ihl = usize::from(pkt.first()? & 0x0f) * 4;
    let src: [u8; 4] = pkt.get(12..16)?.try_into().ok()?;
    (Ipv4Addr::from(src) == from).then_some(())?;
    pkt.get(ihl + 8..)
}

/// The code of a TFTP ERROR packet.
fn error_code(p: &[u8]) -> Option<u16> {
    parse_error(p).map(|e| e.0)
}

fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length differs");
    assert!(got == want, "{what}: content differs");
}

// ------------------------------------------------------------------ interop matrix

/// Debian's atftp (blksize × windowsize), curl (blksize) and tftp-hpa (no options) fetch from
/// the real binary's `--tftp` across the veth; every file arrives byte-exact and atftp's trace
/// shows the OACK granting windowsize as asked and blksize capped at 1468.
#[test]
fn tftp_with_atftp_and_curl_in_namespaces() {
    require_root!();
    if !have("atftp") || !have("curl") {
        return;
    }
    let hpa = have("tftp");
    let t = Instant::now();
    // 2 MiB is a multiple of every block size (the transfer ends with an empty block);
    // the other file ends mid-block for all of them.
    let files = [
        ("exact.bin", pattern(2 << 20, 7)),
        ("odd.bin", pattern((1 << 20) + 777, 9)),
    ];
    let srv = Tftp::start(
        "tftpmx",
        &[(files[0].0, &files[0].1), (files[1].0, &files[1].1)],
    );
    let out = tempfile::tempdir().expect("tempdir");
    let limit = Duration::from_secs(60);
    let mut timings = Vec::new();
    // One download: `args(dest)` is the client's command line writing to `dest`; the file
    // must come out byte-identical. Returns the client's output.
    let mut get = |label: String, file: &str, data: &[u8], args: &dyn Fn(&str) -> Vec<String>| {
        let dest = out.path().join(format!("{file}.out"));
        let args = args(&dest.display().to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let t1 = Instant::now();
        let (ok, text) = srv.run(&args, limit);
        assert!(ok, "{label}:\n{text}");
        assert_same(&std::fs::read(&dest).expect("client output"), data, &label);
        timings.push(format!("{label} {:.2}s", t1.elapsed().as_secs_f64()));
        let _ = std::fs::remove_file(&dest);
        text
    };
    let own = |v: &[&str]| v.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    for (name, data) in &files {
        for blk in [512u32, 1468, 8192] {
            for ws in [1u32, 16, 64] {
                let (b, w) = (format!("blksize {blk}"), format!("windowsize {ws}"));
                let text = get(format!("atftp {name} {blk}x{ws}"), name, data, &|d| {
                    own(&[
                        "atftp",
                        "--trace",
                        "--option",
                        &b,
                        "--option",
                        &w,
                        "-g",
                        "-r",
                        name,
                        "-l",
                        d,
                        "10.99.0.1",
                        "69",
                    ])
                });
                let oack = text
                    .lines()
                    .find(|l| l.contains("OACK"))
                    .unwrap_or_else(|| panic!("no OACK traced:\n{text}"));
                assert!(
                    oack.contains(&format!("blksize: {}", blk.min(MAX_BLKSIZE)))
                        && oack.contains(&format!("windowsize: {ws}")),
                    "blksize {blk} windowsize {ws}: {oack}"
                );
            }
            let (url, b) = (format!("tftp://10.99.0.1/{name}"), blk.to_string());
            get(format!("curl {name} {blk}"), name, data, &|d| {
                own(&[
                    "curl",
                    "-sS",
                    "--max-time",
                    "60",
                    "--tftp-blksize",
                    &b,
                    "-o",
                    d,
                    &url,
                ])
            });
        }
        if hpa {
            // tftp-hpa's client sends no options: plain RFC 1350 at 512 bytes, lockstep.
            get(format!("tftp-hpa {name}"), name, data, &|d| {
                own(&[
                    "tftp",
                    "-m",
                    "binary",
                    "10.99.0.1",
                    "69",
                    "-c",
                    "get",
                    name,
                    d,
                ])
            });
        }
    }
    srv.stop();
    eprintln!("{}", timings.join(", "));
    eprintln!("tftp matrix test {:.1} s", t.elapsed().as_secs_f64());
}

// ------------------------------------------------------------------ 100 MiB at blksize 512

/// 100 MiB at blksize 512 = 204,801 DATA blocks: the 16-bit block number wraps three times.
/// atftp (windowsize 64) and curl (lockstep) fetch it byte-exact from the client namespace.
#[test]
fn hundred_mib_at_blksize_512_in_namespaces() {
    require_root!();
    if !have("atftp") {
        return;
    }
    let t = Instant::now();
    let data = pattern(100 * 1024 * 1024, 17);
    let srv = Tftp::start("tftpbig", &[("initrd.img", &data)]);
    let out = tempfile::tempdir().expect("tempdir");
    let limit = Duration::from_secs(300);

    let dest = out.path().join("atftp-100m");
    let d = dest.display().to_string();
    let t1 = Instant::now();
    let (ok, text) = srv.run(
        &[
            "atftp",
            "--option",
            "blksize 512",
            "--option",
            "windowsize 64",
            "--option",
            "tsize enable",
            "-g",
            "-r",
            "initrd.img",
            "-l",
            &d,
            "10.99.0.1",
            "69",
        ],
        limit,
    );
    assert!(ok, "atftp 100 MiB: {text}");
    assert_same(
        &std::fs::read(&dest).expect("atftp output"),
        &data,
        "atftp 100 MiB / 512 / ws 64",
    );
    let atftp_secs = t1.elapsed().as_secs_f64();
    std::fs::remove_file(&dest).expect("remove output");

    let mut curl_secs = None;
    if have("curl") {
        let dest = out.path().join("curl-100m");
        let d = dest.display().to_string();
        let t1 = Instant::now();
        let (ok, text) = srv.run(
            &[
                "curl",
                "-sS",
                "--max-time",
                "280",
                "--tftp-blksize",
                "512",
                "-o",
                &d,
                "tftp://10.99.0.1/initrd.img",
            ],
            limit,
        );
        assert!(ok, "curl 100 MiB: {text}");
        assert_same(
            &std::fs::read(&dest).expect("curl output"),
            &data,
            "curl 100 MiB / 512",
        );
        curl_secs = Some(t1.elapsed().as_secs_f64());
    }
    srv.stop();
    eprintln!(
        "100 MiB / 512: atftp ws 64 {atftp_secs:.1} s, curl lockstep {curl_secs:.1?} s; \
         test {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------------------------ ERROR 8 ends everything

/// What one abort scenario observed in the client namespace.
#[derive(Debug)]
struct Silence {
    /// Datagrams on the aborting client's socket after its ERROR.
    on_socket: usize,
    /// UDP datagrams the whole client namespace received after the ERROR (any port).
    in_namespace: u64,
}

/// `tsize` and a 1 s `timeout`, then `extra`.
fn opts(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut v = vec![("tsize", "0".to_string()), ("timeout", "1".to_string())];
    v.extend(extra.iter().cloned());
    v
}

/// How long to listen after an abort: 3.5 × the negotiated 1 s timeout, so that at least
/// three retransmissions would be seen if the session were still alive.
const LISTEN: Duration = Duration::from_millis(3500);

/// A client answers the OACK with ERROR 8 (the UEFI tsize probe), another aborts after a
/// window of DATA: neither, nor any other port in the client namespace, gets another packet.
/// Control: a client that goes silent after the OACK does get it again within the same
/// listening time, so the listening would see retransmissions if there were any.
#[test]
fn client_error_8_stops_everything_in_namespaces() {
    require_root!();
    let t = Instant::now();
    let small = pattern(50_000, 8);
    let big = pattern(1 << 20, 18);
    let srv = Tftp::start("tftpe8", &[("ipxe.efi", &small), ("big.bin", &big)]);
    let probe_rrq = request(
        1,
        b"ipxe.efi",
        "octet",
        &opts(&[("blksize", "1468".into())]),
    );
    let window_rrq = request(
        1,
        b"big.bin",
        "octet",
        &opts(&[("blksize", "512".into()), ("windowsize", "16".into())]),
    );

    let (probe, window, control) = srv.in_cli(|| {
        let mut buf = [0u8; 2048];

        // 1. RRQ → OACK → ERROR 8.
        let sock = client_socket();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.send_to(&probe_rrq, SERVER).unwrap();
        let (n, tid) = sock.recv_from(&mut buf).expect("OACK");
        assert_eq!(tid.ip(), SERVER_IP);
        let oack = parse_oack(&buf[..n]).expect("an OACK");
        assert!(
            oack.contains(&("tsize".to_string(), small.len().to_string())),
            "{oack:?}"
        );
        sock.send_to(&error(8, "tsize probe"), tid).unwrap();
        let before = udp_received_in_this_ns();
        let on_socket = count_arrivals(&sock, LISTEN);
        let probe = Silence {
            on_socket,
            in_namespace: udp_received_in_this_ns() - before,
        };

        // 2. RRQ → OACK → ACK 0 → 16 DATA → ERROR 8.
        let sock = client_socket();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.send_to(&window_rrq, SERVER).unwrap();
        let (n, tid) = sock.recv_from(&mut buf).expect("OACK");
        let oack = parse_oack(&buf[..n]).expect("an OACK");
        assert!(
            oack.contains(&("windowsize".to_string(), "16".to_string())),
            "{oack:?}"
        );
        sock.send_to(&ack(0), tid).unwrap();
        let mut blocks = Vec::new();
        for _ in 0..16 {
            let (n, from) = sock.recv_from(&mut buf).expect("DATA");
            assert_eq!(from, tid);
            assert_eq!(
                buf.get(..2),
                Some(&[0u8, 3][..]),
                "not DATA: {:?}",
                &buf[..n]
            );
            blocks.push(u16::from_be_bytes([buf[2], buf[3]]));
        }
        assert_eq!(blocks, (1..=16).collect::<Vec<u16>>());
        sock.send_to(&error(8, "changed my mind"), tid).unwrap();
        let before = udp_received_in_this_ns();
        let on_socket = count_arrivals(&sock, LISTEN);
        let window = Silence {
            on_socket,
            in_namespace: udp_received_in_this_ns() - before,
        };

        // 3. Control: RRQ → OACK, then silence.
        let sock = client_socket();
        sock.send_to(&probe_rrq, SERVER).unwrap();
        let control = count_arrivals(&sock, LISTEN);
        (probe, window, control)
    });
    eprintln!(
        "after ERROR 8: OACK probe {probe:?}, mid-window {window:?}; silent control got {control} packets"
    );
    assert_eq!(probe.on_socket, 0, "packets after ERROR 8 on the OACK");
    assert_eq!(probe.in_namespace, 0, "UDP into the client namespace");
    assert_eq!(window.on_socket, 0, "packets after ERROR 8 mid-transfer");
    assert_eq!(window.in_namespace, 0, "UDP into the client namespace");
    assert!(
        control >= 3,
        "a silent client got the OACK only {control} times in {LISTEN:?}"
    );
    srv.stop();
    eprintln!("ERROR 8 test {:.1} s", t.elapsed().as_secs_f64());
}

// ------------------------------------------------------------------ WRQ refused

/// Write requests, raw and from atftp and tftp-hpa, get ERROR 2 and create nothing.
#[test]
fn write_requests_refused_with_error_2_in_namespaces() {
    require_root!();
    let t = Instant::now();
    let srv = Tftp::start("tftpwrq", &[("existing.bin", b"keep me")]);
    let listing = |dir: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("read assets")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = listing(&srv.dirs.assets);

    let codes = srv.in_cli(|| {
        [
            request(2, b"upload.bin", "octet", &[]),
            request(2, b"existing.bin", "octet", &[]),
            request(
                2,
                b"big.bin",
                "octet",
                &[("blksize", "1468".into()), ("tsize", "9".into())],
            ),
            request(2, b"../escape.bin", "octet", &[]),
        ]
        .iter()
        .map(|p| {
            exchange(p, Duration::from_millis(500))
                .map(|(reply, from)| (from.ip(), parse_error(&reply).map(|e| e.0)))
        })
        .collect::<Vec<_>>()
    });
    for c in &codes {
        assert_eq!(
            *c,
            Some((std::net::IpAddr::V4(SERVER_IP), Some(2))),
            "{codes:?}"
        );
    }

    let local = tempfile::tempdir().expect("tempdir");
    let up = local.path().join("up.bin");
    std::fs::write(&up, b"should never arrive").expect("local file");
    let up = up.display().to_string();
    let limit = Duration::from_secs(30);
    let sniffer = Sniffer::open(&srv);
    if have("atftp") {
        let (ok, text) = srv.run(
            &[
                "atftp",
                "--trace",
                "-p",
                "-r",
                "atftp-up.bin",
                "-l",
                &up,
                "10.99.0.1",
                "69",
            ],
            limit,
        );
        assert!(!ok, "atftp --put succeeded: {text}");
        assert!(
            text.contains("error received from server"),
            "atftp saw no ERROR: {text}"
        );
        // atftp does not print the code: read it off the wire.
        let got = sniffer.server_datagrams();
        assert!(
            !got.is_empty() && got.iter().all(|d| error_code(d) == Some(2)),
            "atftp --put: the server sent {got:?}"
        );
    }
    if have("tftp") {
        let (_, text) = srv.run(
            &[
                "tftp",
                "-m",
                "binary",
                "10.99.0.1",
                "69",
                "-c",
                "put",
                &up,
                "hpa-up.bin",
            ],
            limit,
        );
        assert!(text.contains("Error code 2"), "tftp-hpa put said: {text}");
        let got = sniffer.server_datagrams();
        assert!(
            !got.is_empty() && got.iter().all(|d| error_code(d) == Some(2)),
            "tftp-hpa put: the server sent {got:?}"
        );
    }
    assert_eq!(listing(&srv.dirs.assets), before, "the root changed");
    assert_eq!(
        std::fs::read(srv.dirs.assets.join("existing.bin")).expect("existing"),
        b"keep me"
    );
    srv.stop();
    eprintln!("WRQ test {:.1} s", t.elapsed().as_secs_f64());
}

// ------------------------------------------------------------------ traversal

/// The shared traversal corpus from the client namespace: every request gets ERROR 1 or 2
/// (or, for the few the codec drops as malformed, nothing), no reply is DATA or carries the
/// canary planted in the root's parent; a file inside the root is served to the same harness.
#[test]
fn traversal_corpus_reads_nothing_outside_the_root_in_namespaces() {
    require_root!();
    let t = Instant::now();
    let srv = Tftp::start("tftptrv", &[]);
    let root = srv.dirs.assets.clone();
    traversal::plant(&root).expect("plant the canary layout");
    let corpus = traversal::corpus(&root);
    assert!(corpus.len() >= 200, "{} payloads", corpus.len());

    let (refused, unanswered, violations, control) = srv.in_cli(|| {
        let (mut refused, mut unanswered, mut violations) = (0usize, 0usize, Vec::new());
        let started = Instant::now();
        for name in &corpus {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "corpus too slow"
            );
            let shown = String::from_utf8_lossy(name).into_owned();
            let pkt = request(1, name, "octet", &[("tsize", "0".into())]);
            match exchange(&pkt, Duration::from_millis(500)) {
                Some((reply, from)) => {
                    if traversal::leaks_canary(&reply) {
                        violations.push(format!("{shown:?}: reply carries the canary"));
                    }
                    match parse_error(&reply) {
                        Some((1 | 2, _)) if from.ip() == SERVER_IP => refused += 1,
                        other => violations.push(format!(
                            "{shown:?}: from {from}: {other:?} / {:?}",
                            reply.get(..reply.len().min(32))
                        )),
                    }
                }
                None if traversal::may_go_unanswered(&pkt, name) => unanswered += 1,
                None => violations.push(format!("{shown:?}: no reply")),
            }
        }
        // Control: the same harness fetches a file inside the root (DATA 1, then ACK 1).
        let sock = client_socket();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.send_to(&request(1, b"/sub/ok", "octet", &[]), SERVER)
            .unwrap();
        let mut buf = [0u8; 1024];
        let control = sock.recv_from(&mut buf).ok().map(|(n, from)| {
            let _ = sock.send_to(&ack(1), from);
            buf.get(..n).unwrap_or_default().to_vec()
        });
        (refused, unanswered, violations, control)
    });
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    assert!(refused >= 200, "only {refused} ERRORs");
    let mut want = vec![0u8, 3, 0, 1];
    want.extend_from_slice(traversal::INSIDE);
    assert_eq!(control, Some(want), "the control file inside the root");
    srv.stop();
    eprintln!(
        "traversal: {} payloads, {refused} ERROR 1/2, {unanswered} dropped as malformed; {:.1} s",
        corpus.len(),
        t.elapsed().as_secs_f64()
    );
}
