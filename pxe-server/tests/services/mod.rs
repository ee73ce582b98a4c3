//! Helpers for `services_netns.rs` and `tftp_netns.rs`: namespaces and processes ([`netns`]),
//! the DHCP client side ([`dhcp`]), the real appliance binary ([`appliance`]), the TFTP
//! path-traversal corpus ([`traversal`]), a tiny HTTP client and a seeded RNG.

#![allow(dead_code, unreachable_pub)]

pub mod appliance;
pub mod dhcp;
pub mod netns;
pub mod traversal;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// xorshift64*: reproducible random choices without extra dependencies.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// Next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// An HTTP response: status code and body.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Body (headers stripped).
    pub body: String,
}

/// `GET path` from source address `from` (in namespace `ns`) to `to`, with `Connection: close`.
pub fn http_get(
    ns: &str,
    from: Ipv4Addr,
    to: SocketAddrV4,
    path: &str,
) -> Result<HttpResponse, String> {
    netns::in_ns(ns, || {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| format!("socket: {e}"))?;
        s.bind(&SocketAddrV4::new(from, 0).into())
            .map_err(|e| format!("bind {from}: {e}"))?;
        s.connect_timeout(&to.into(), Duration::from_secs(5))
            .map_err(|e| format!("connect {to} from {from}: {e}"))?;
        let mut tcp = std::net::TcpStream::from(s);
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw)
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no header end in {text:?}"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        Ok(HttpResponse {
            status,
            body: body.to_owned(),
        })
    })
}
