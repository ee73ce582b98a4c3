//! A small blocking TFTP client for tests and the benchmark, written independently of the
//! server's codec so that a bug shared by both sides cannot hide. It supports blksize, tsize,
//! timeout and windowsize (RFC 7440), which none of the Debian clients offer all together
//! (curl and tftp-hpa have no windowsize).

#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

/// Options to request.
#[derive(Debug, Clone, Default)]
pub struct Fetch {
    /// `blksize` to ask for.
    pub blksize: Option<u16>,
    /// `windowsize` to ask for.
    pub windowsize: Option<u16>,
    /// Ask for `tsize`.
    pub tsize: bool,
    /// Client-side receive timeout (default 1 s).
    pub timeout: Option<Duration>,
    /// Give up after this long in total (default 120 s).
    pub deadline: Option<Duration>,
}

/// Result of a successful fetch.
#[derive(Debug)]
pub struct Fetched {
    /// File contents.
    pub data: Vec<u8>,
    /// The server's transfer ID.
    pub server_tid: SocketAddr,
    /// OACK options as received (lower-cased names).
    pub oack: Vec<(String, String)>,
    /// DATA packets received, duplicates included.
    pub data_packets: u64,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Builds an RRQ (or WRQ with `opcode` 2).
pub fn request(opcode: u16, file: &[u8], mode: &str, opts: &[(&str, String)]) -> Vec<u8> {
    let mut v = opcode.to_be_bytes().to_vec();
    v.extend_from_slice(file);
    v.push(0);
    v.extend_from_slice(mode.as_bytes());
    v.push(0);
    for (k, val) in opts {
        v.extend_from_slice(k.as_bytes());
        v.push(0);
        v.extend_from_slice(val.as_bytes());
        v.push(0);
    }
    v
}

/// Builds an ACK.
pub fn ack(block: u16) -> Vec<u8> {
    let mut v = 4u16.to_be_bytes().to_vec();
    v.extend_from_slice(&block.to_be_bytes());
    v
}

/// Builds an ERROR.
pub fn error(code: u16, msg: &str) -> Vec<u8> {
    let mut v = 5u16.to_be_bytes().to_vec();
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(msg.as_bytes());
    v.push(0);
    v
}

/// Decodes an ERROR packet into (code, message).
pub fn parse_error(p: &[u8]) -> Option<(u16, String)> {
    if be16(p, 0)? != 5 {
        return None;
    }
    let code = be16(p, 2)?;
    let msg = p.get(4..).unwrap_or_default();
    let msg = msg.split(|&b| b == 0).next().unwrap_or_default();
    Some((code, String::from_utf8_lossy(msg).into_owned()))
}

/// Decodes OACK options.
pub fn parse_oack(p: &[u8]) -> Option<Vec<(String, String)>> {
    if be16(p, 0)? != 6 {
        return None;
    }
    let body = p.get(2..)?;
    let body = body.strip_suffix(&[0]).unwrap_or(body);
    let parts: Vec<String> = body
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).to_lowercase())
        .collect();
    Some(
        parts
            .chunks(2)
            .map(|c| {
                (
                    c.first().cloned().unwrap_or_default(),
                    c.get(1).cloned().unwrap_or_default(),
                )
            })
            .collect(),
    )
}

/// Fetches `file` from `server`. `on_tid` learns the server's transfer ID as soon as it is known.
pub fn fetch(
    server: SocketAddr,
    file: &str,
    opts: &Fetch,
    on_tid: Option<Sender<SocketAddr>>,
) -> Result<Fetched, String> {
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let timeout = opts.timeout.unwrap_or(Duration::from_secs(1));
    sock.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let give_up = Instant::now() + opts.deadline.unwrap_or(Duration::from_secs(120));
    let mut ropts = Vec::new();
    if let Some(b) = opts.blksize {
        ropts.push(("blksize", b.to_string()));
    }
    if let Some(w) = opts.windowsize {
        ropts.push(("windowsize", w.to_string()));
    }
    if opts.tsize {
        ropts.push(("tsize", "0".to_string()));
    }
    let rrq = request(1, file.as_bytes(), "octet", &ropts);
    sock.send_to(&rrq, server).map_err(|e| e.to_string())?;

    let mut blksize = 512usize;
    let mut windowsize = 1u64;
    let mut tid: Option<SocketAddr> = None;
    let mut oack = Vec::new();
    let mut data = Vec::new();
    let mut expected: u64 = 1; // absolute number of the next block wanted
    let mut in_window = 0u64;
    let mut last_ack: Vec<u8> = rrq.clone(); // what to resend on timeout
    let mut gap_acked = false;
    let mut timeouts = 0;
    let mut data_packets = 0;
    let mut buf = vec![0u8; 70_000];
    loop {
        if Instant::now() > give_up {
            return Err(format!("deadline passed after {} bytes", data.len()));
        }
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                timeouts += 1;
                if timeouts > 5 {
                    return Err(format!("timed out after {} bytes", data.len()));
                }
                sock.send_to(&last_ack, tid.unwrap_or(server))
                    .map_err(|e| e.to_string())?;
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        let pkt = buf.get(..n).unwrap_or_default();
        match tid {
            None if from.ip() == server.ip() => {
                tid = Some(from);
                if let Some(tx) = &on_tid {
                    let _ = tx.send(from);
                }
            }
            Some(t) if t == from => {}
            _ => continue, // foreign transfer ID: ignore
        }
        let tid_addr = from;
        if let Some((code, msg)) = parse_error(pkt) {
            return Err(format!("ERROR {code}: {msg}"));
        }
        if let Some(o) = parse_oack(pkt) {
            if expected != 1 || !data.is_empty() {
                continue;
            }
            for (k, v) in &o {
                match k.as_str() {
                    "blksize" => blksize = v.parse().map_err(|_| format!("bad blksize {v}"))?,
                    "windowsize" => windowsize = v.parse().map_err(|_| format!("bad ws {v}"))?,
                    _ => {}
                }
            }
            oack = o;
            last_ack = ack(0);
            sock.send_to(&last_ack, tid_addr)
                .map_err(|e| e.to_string())?;
            continue;
        }
        if be16(pkt, 0) != Some(3) {
            continue;
        }
        let Some(block) = be16(pkt, 2) else { continue };
        let payload = pkt.get(4..).unwrap_or_default();
        data_packets += 1;
        if u64::from(block) == expected % 65536 {
            timeouts = 0;
            gap_acked = false;
            if payload.len() > blksize {
                return Err(format!("DATA {block} longer than blksize"));
            }
            data.extend_from_slice(payload);
            expected += 1;
            in_window += 1;
            let last = payload.len() < blksize;
            if last || in_window >= windowsize {
                in_window = 0;
                last_ack = ack(block);
                sock.send_to(&last_ack, tid_addr)
                    .map_err(|e| e.to_string())?;
            }
            if last {
                return Ok(Fetched {
                    data,
                    server_tid: tid_addr,
                    oack,
                    data_packets,
                });
            }
        } else if !gap_acked {
            // Out of order or repeated: acknowledge the last in-order block once (RFC 7440 §4).
            gap_acked = true;
            in_window = 0;
            last_ack = ack(((expected - 1) % 65536) as u16);
            sock.send_to(&last_ack, tid_addr)
                .map_err(|e| e.to_string())?;
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), so tests need no fixture files.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Counts datagrams arriving on `sock` during `dur`.
pub fn count_arrivals(sock: &UdpSocket, dur: Duration) -> usize {
    let end = Instant::now() + dur;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        if sock.recv_from(&mut buf).is_ok() {
            n += 1;
        }
    }
    n
}
