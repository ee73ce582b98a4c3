//! The install path over real HTTP on 127.0.0.1: a signed snapshot built with `snapshot-tool`,
//! served by a small `std::net` server with `Range` support (and faults on demand: a cut
//! connection, a tampered manifest, a missing signature, an ignored `Range`, a flipped data
//! byte), installed by `pxeimage::install::install` into a file standing in for a disk.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pxe_api::agent::{Outcome, ProgressReport};
use pxeimage::cmdline::BaseUrl;
use pxeimage::install::{self, HttpSnapshot, Target};
use snapshot_tool::build::{BuildOptions, build_dir};
use snapshot_tool::format::{Manifest, PublicKey, SecretKey};

const MIB: usize = 1 << 20;
/// The server gives up after this, whatever happens.
const SERVER_DEADLINE: Duration = Duration::from_secs(30);

/// What the server does wrong.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    /// Close the first `data.zst` response after this many body bytes.
    cut_first_data_after: Option<usize>,
    /// Answer `Range` requests with the whole file (HTTP 200).
    ignore_range: bool,
    /// Flip a byte of `manifest.bin` as served.
    tamper_manifest: bool,
    /// Flip this byte of `data.zst` as served.
    flip_data_byte: Option<usize>,
    /// Serve no `manifest.sig`.
    no_signature: bool,
    /// Serve `data.zst` without its last this many bytes.
    truncate_data: Option<usize>,
}

/// A request as the server saw it: path and `Range` header.
type Seen = (String, Option<String>);

struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_head(stream: &TcpStream) -> Option<(String, Option<String>)> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split(' ');
    let method = words.next()?;
    let path = words.next()?.to_owned();
    // HEAD requests are recorded as "HEAD <path>", GETs as the bare path.
    let path = if method == "HEAD" {
        format!("HEAD {path}")
    } else {
        path
    };
    let mut range = None;
    for _ in 0..100 {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_owned());
        }
    }
    Some((path, range))
}

fn serve_one(
    mut stream: TcpStream,
    dir: &Path,
    faults: Faults,
    data_requests: &mut usize,
    seen: &Mutex<Vec<Seen>>,
) -> Option<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let (path, range) = read_head(&stream)?;
    // Recorded before answering: the client may be done before the body is fully sent.
    seen.lock().unwrap().push((path.clone(), range.clone()));
    let head_only = path.starts_with("HEAD ");
    let name = path
        .trim_start_matches("HEAD ")
        .strip_prefix("/assets/snapshots/test/")
        .unwrap_or("");
    let file = match name {
        "manifest.sig" if faults.no_signature => None,
        "manifest.bin" | "manifest.sig" | "data.zst" => std::fs::read(dir.join(name)).ok(),
        _ => None,
    };
    let Some(mut body) = file else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        return Some(());
    };
    if name == "manifest.bin" && faults.tamper_manifest {
        body[100] ^= 1;
    }
    if name == "data.zst"
        && let Some(i) = faults.flip_data_byte
    {
        body[i] ^= 0x40;
    }
    if name == "data.zst"
        && let Some(n) = faults.truncate_data
    {
        body.truncate(body.len().saturating_sub(n));
    }
    let total = body.len();
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok());
    let (status, part) = match start {
        Some(s) if !faults.ignore_range && s < total => (206, &body[s..]),
        _ => (200, &body[..]),
    };
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        part.len()
    );
    if status == 206 {
        head.push_str(&format!(
            "content-range: bytes {}-{}/{total}\r\n",
            total - part.len(),
            total - 1
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    if head_only {
        return Some(());
    }
    let mut send = part;
    if name == "data.zst" {
        *data_requests += 1;
        if *data_requests == 1
            && let Some(n) = faults.cut_first_data_after
        {
            send = &part[..n.min(part.len())];
        }
    }
    let _ = stream.write_all(send);
    let _ = stream.flush();
    Some(())
}

fn start(dir: PathBuf, faults: Faults) -> Server {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (seen2, stop2) = (seen.clone(), stop.clone());
    let thread = std::thread::spawn(move || {
        let deadline = Instant::now() + SERVER_DEADLINE;
        let mut data_requests = 0;
        while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    let _ = serve_one(stream, &dir, faults, &mut data_requests, &seen2);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Server {
        port,
        seen,
        stop,
        thread: Some(thread),
    }
}

/// 6.5 MiB: distinct, partly compressible chunks, an all-zero chunk, a short last chunk.
fn image() -> Vec<u8> {
    let mut img = vec![0u8; 6 * MIB + MIB / 2];
    let mut x: u32 = 0x1234_5678;
    for (i, b) in img.iter_mut().enumerate() {
        if (3 * MIB..4 * MIB).contains(&i) {
            continue;
        }
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = if i % 3 == 0 {
            (i / 4096) as u8
        } else {
            x as u8
        };
    }
    img[510] = 0x55;
    img[511] = 0xAA;
    img
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    image: Vec<u8>,
    key: SecretKey,
    target: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let image = image();
    let key = SecretKey::from_seed(&[9; 32]);
    let options = BuildOptions {
        chunk_size: 1 << 20,
        threads: 1,
        ..BuildOptions::default()
    };
    let built = build_dir(
        &image[..],
        image.len() as u64,
        &options,
        tmp.path(),
        "test",
        Some(&key),
        &mut |_| {},
    )
    .unwrap();
    let target = tmp.path().join("disk.img");
    std::fs::write(&target, vec![0xEEu8; 8 * MIB]).unwrap();
    Fixture {
        dir: built.dir,
        _tmp: tmp,
        image,
        key,
        target,
    }
}

fn base(port: u16) -> BaseUrl {
    BaseUrl {
        host: Ipv4Addr::LOCALHOST,
        port,
        prefix: String::new(),
    }
}

fn run(
    fx: &Fixture,
    faults: Faults,
    keys: &[PublicKey],
) -> (
    Result<install::Installed, install::InstallError>,
    Vec<Seen>,
    Vec<ProgressReport>,
) {
    let server = start(fx.dir.clone(), faults);
    let http = HttpSnapshot::new(base(server.port), None);
    let mut progress = Vec::new();
    let result = install::install(
        &http,
        keys,
        "test",
        "/assets/snapshots/test/",
        Target::File(fx.target.clone()),
        &mut |p| progress.push(p),
    );
    let seen = server.seen.lock().unwrap().clone();
    (result, seen, progress)
}

fn manifest(fx: &Fixture) -> Manifest {
    Manifest::parse(&std::fs::read(fx.dir.join("manifest.bin")).unwrap()).unwrap()
}

fn head_is_zero(path: &Path) -> bool {
    std::fs::read(path).unwrap()[..MIB].iter().all(|&b| b == 0)
}

#[test]
fn installs_and_resumes_a_cut_download_with_a_range_request() {
    let fx = fixture();
    let m = manifest(&fx);
    // Cut inside chunk 2's frame: chunks 0 and 1 are written, the resume starts at chunk 2.
    let cut = m.resume_offset(2).unwrap() as usize + 100;
    let faults = Faults {
        cut_first_data_after: Some(cut),
        ..Faults::default()
    };
    let (result, seen, progress) = run(&fx, faults, &[fx.key.public()]);
    let done = result.unwrap();
    assert_eq!(done.report.attempts, 2);
    let disk = std::fs::read(&fx.target).unwrap();
    assert_eq!(&disk[..fx.image.len()], &fx.image[..]);
    assert!(disk[fx.image.len()..].iter().all(|&b| b == 0xEE || b == 0));

    let paths: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "/assets/snapshots/test/manifest.sig",
            "/assets/snapshots/test/manifest.bin",
            "HEAD /assets/snapshots/test/data.zst",
            "/assets/snapshots/test/data.zst",
            "/assets/snapshots/test/data.zst",
        ]
    );
    assert_eq!(seen[3].1, None);
    assert_eq!(
        seen[4].1.as_deref(),
        Some(format!("bytes={}-", m.resume_offset(2).unwrap()).as_str())
    );

    let stages: Vec<&str> = progress.iter().map(|p| p.stage.as_str()).collect();
    assert_eq!(stages.first(), Some(&"fetch-manifest"));
    assert!(stages.contains(&"verify-signature"));
    assert!(stages.contains(&"write"));
    assert!(stages.contains(&"finish"));
    assert!(progress.iter().all(|p| p.order == "install"));
    // The agent relies on the signed per-chunk digests; the report says the whole-image
    // digest was not recomputed.
    assert_eq!(done.report.computed_image_digest, None);
    let report = install::result_report("test", &Ok(done));
    assert_eq!(report.outcome, Outcome::Success);
    let detail = report.detail.unwrap();
    assert_eq!(detail["image_digest"], m.image_digest().to_hex());
    assert_eq!(detail["digest_algorithm"], m.digest_algorithm().name());
    assert_eq!(detail["image_digest_computed"], false);
}

/// (what, faults, trusted keys, expected code, `data.zst` asked for, disk touched: some image
/// byte was written, so both ends were zeroed first; untouched: byte-for-byte unchanged)
type Case<'a> = (&'a str, Faults, &'a [PublicKey], &'a str, bool, bool);

#[test]
fn refusals_carry_their_reason_codes_and_leave_no_boot_sector() {
    let fx = fixture();
    let trusted = [fx.key.public()];
    let stranger = [SecretKey::from_seed(&[10; 32]).public()];
    let m = manifest(&fx);
    // A cut past chunk 1, so the resume needs a Range request.
    let cut = m.resume_offset(2).unwrap() as usize + 100;
    // Chunk 0 (the first stored chunk, exactly the held-back MiB) and chunk 2 (after chunk
    // 1 was written).
    let in_chunk_0 = 3000;
    assert!(in_chunk_0 < m.resume_offset(1).unwrap() as usize);
    let in_chunk_2 = m.resume_offset(2).unwrap() as usize + 100;
    assert!(!m.chunk(2).unwrap().is_zero());
    let cases: Vec<Case<'_>> = vec![
        (
            "tampered manifest",
            Faults {
                tamper_manifest: true,
                ..Faults::default()
            },
            &trusted,
            "bad_signature",
            false,
            false,
        ),
        (
            "unsigned",
            Faults {
                no_signature: true,
                ..Faults::default()
            },
            &trusted,
            "unsigned",
            false,
            false,
        ),
        (
            "untrusted key",
            Faults::default(),
            &stranger,
            "bad_signature",
            false,
            false,
        ),
        (
            "no keys at all",
            Faults::default(),
            &[],
            "no_trusted_keys",
            false,
            false,
        ),
        (
            "range ignored on resume",
            Faults {
                cut_first_data_after: Some(cut),
                ignore_range: true,
                ..Faults::default()
            },
            &trusted,
            "range_not_honoured",
            true,
            true,
        ),
        (
            "flipped data byte in the first stored chunk (nothing written yet)",
            Faults {
                flip_data_byte: Some(in_chunk_0),
                ..Faults::default()
            },
            &trusted,
            "chunk_digest_mismatch",
            true,
            false,
        ),
        (
            "flipped data byte in chunk 2 (chunk 1 written)",
            Faults {
                flip_data_byte: Some(in_chunk_2),
                ..Faults::default()
            },
            &trusted,
            "chunk_digest_mismatch",
            true,
            true,
        ),
        (
            "truncated data (or a manifest claiming more than the file holds)",
            Faults {
                truncate_data: Some(100),
                ..Faults::default()
            },
            &trusted,
            "data_length_mismatch",
            true,
            false,
        ),
    ];
    for (what, faults, keys, code, fetched_data, touched) in cases {
        std::fs::write(&fx.target, vec![0xEEu8; 8 * MIB]).unwrap();
        let (result, seen, _) = run(&fx, faults, keys);
        let err = result.err().unwrap_or_else(|| panic!("{what}: installed"));
        assert_eq!(err.code(), code, "{what}: {}", err.describe());
        let data = seen.iter().any(|(p, _)| p.ends_with("data.zst"));
        assert_eq!(data, fetched_data, "{what}: data fetched? {seen:?}");
        if touched {
            assert!(head_is_zero(&fx.target), "{what}: boot sector left");
        } else {
            // Nothing was written (the disk may have been opened, not changed).
            assert!(
                std::fs::read(&fx.target)
                    .unwrap()
                    .iter()
                    .all(|&b| b == 0xEE),
                "{what}"
            );
        }
    }
}

#[test]
fn a_missing_snapshot_is_reported_as_not_found() {
    let fx = fixture();
    let server = start(fx.dir.clone(), Faults::default());
    let http = HttpSnapshot::new(base(server.port), None);
    let err = install::install(
        &http,
        &[fx.key.public()],
        "other",
        "/assets/snapshots/other/",
        Target::File(fx.target.clone()),
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(err.code(), "snapshot_not_found");
}
