//! DHCP client side for the boot-service tests: captured firmware packets
//! (`tests/fixtures/dhcp/*.hex`) re-addressed to other MACs and xids, and a blocking client
//! socket on UDP 68 in the client namespace.

#![allow(dead_code, unreachable_pub)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use pxe_api::Mac;
use pxe_server::dhcp::wire;
use socket2::{Domain, Protocol, Socket, Type};

use super::netns::in_ns;

/// Which captured firmware a packet imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// OVMF's own PXE: BROADCAST flag, no client identifier.
    UefiPxe,
    /// SeaBIOS + iPXE ROM: no BROADCAST flag, client identifier (61) = 01 + MAC.
    BiosIpxe,
}

impl Firmware {
    fn prefix(self) -> &'static str {
        match self {
            Firmware::UefiPxe => "uefi-pxe",
            Firmware::BiosIpxe => "bios-ipxe-rom",
        }
    }
}

/// A fixture's bytes.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/dhcp/{name}.hex",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    hex::decode(text.trim()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Overwrites the body of option `code` (same length); panics if it is missing.
pub fn set_opt(raw: &mut [u8], code: u8, value: &[u8]) {
    let mut i = 240;
    while let Some(&c) = raw.get(i) {
        match c {
            0 => i += 1,
            255 => break,
            _ => {
                let len = usize::from(raw[i + 1]);
                if c == code {
                    assert_eq!(len, value.len(), "option {code} length");
                    raw[i + 2..i + 2 + len].copy_from_slice(value);
                    return;
                }
                i += 2 + len;
            }
        }
    }
    panic!("option {code} not in packet");
}

/// True if the packet carries option `code`.
fn has_opt(raw: &[u8], code: u8) -> bool {
    let mut i = 240;
    while let Some(&c) = raw.get(i) {
        match c {
            0 => i += 1,
            255 => return false,
            _ if c == code => return true,
            _ => i += 2 + usize::from(raw.get(i + 1).copied().unwrap_or(0)),
        }
    }
    false
}

/// Re-addresses a captured packet: chaddr, xid, and every option that carries the MAC.
fn readdress(raw: &mut [u8], mac: Mac, xid: u32) {
    raw[28..34].copy_from_slice(&mac.0);
    raw[4..8].copy_from_slice(&xid.to_be_bytes());
    if has_opt(raw, 61) {
        let mut id = vec![1u8];
        id.extend_from_slice(&mac.0);
        set_opt(raw, 61, &id);
    }
    // Option 97 (UUID) of the capture ends in the VM's MAC; give each client its own.
    let mut uuid = hex::decode("00edc71e5e000000408000525400990001").expect("hex");
    uuid[11..17].copy_from_slice(&mac.0);
    set_opt(raw, 97, &uuid);
}

/// A captured DISCOVER re-addressed to `mac`/`xid`.
pub fn discover(fw: Firmware, mac: Mac, xid: u32) -> Vec<u8> {
    let mut p = fixture(&format!("{}-discover", fw.prefix()));
    readdress(&mut p, mac, xid);
    p
}

/// A captured SELECTING-state REQUEST re-addressed to `mac`/`xid`, asking `server` for `ip`.
pub fn request(fw: Firmware, mac: Mac, xid: u32, ip: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
    let mut p = fixture(&format!("{}-request", fw.prefix()));
    readdress(&mut p, mac, xid);
    set_opt(&mut p, 50, &ip.octets());
    set_opt(&mut p, 54, &server.octets());
    p
}

/// Test MAC number `i` (locally administered, unicast).
pub fn mac_for(i: u32) -> Mac {
    let b = i.to_be_bytes();
    Mac([0x02, 0x99, b[0], b[1], b[2], b[3]])
}

/// The client hardware address of a reply.
pub fn reply_mac(m: &Message) -> Mac {
    let mut mac = [0u8; 6];
    if let Some(c) = m.chaddr().get(..6) {
        mac.copy_from_slice(c);
    }
    Mac(mac)
}

/// Option `code` of a reply as raw bytes, for the options these tests look at.
pub fn raw_opt(m: &Message, code: u8) -> Option<Vec<u8>> {
    match m.opts().get(OptionCode::from(code))? {
        DhcpOption::BootfileName(b)
        | DhcpOption::ClassIdentifier(b)
        | DhcpOption::VendorExtensions(b)
        | DhcpOption::ClientMachineIdentifier(b) => Some(b.clone()),
        DhcpOption::Unknown(u) => Some(u.data().to_vec()),
        DhcpOption::ServerIdentifier(a) => Some(a.octets().to_vec()),
        _ => None,
    }
}

/// The boot file name (option 67) of a reply.
pub fn bootfile(m: &Message) -> Option<String> {
    raw_opt(m, 67).map(|b| String::from_utf8_lossy(b.strip_suffix(&[0]).unwrap_or(&b)).into_owned())
}

/// Limited broadcast to the server port.
pub fn bcast() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::BROADCAST, 67)
}

/// A blocking UDP socket on port 68 (`SO_BINDTODEVICE`) in the client namespace.
#[derive(Debug)]
pub struct Client {
    sock: std::net::UdpSocket,
}

impl Client {
    /// Binds `0.0.0.0:68` on `iface` inside `ns`.
    pub fn new(ns: &str, iface: &str) -> Client {
        let sock = in_ns(ns, || {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
            s.set_reuse_address(true).expect("reuseaddr");
            s.set_broadcast(true).expect("broadcast");
            s.bind_device(Some(iface.as_bytes())).expect("bind device");
            let _ = s.set_recv_buffer_size(4 << 20);
            s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into())
                .expect("bind 68");
            std::net::UdpSocket::from(s)
        });
        Client { sock }
    }

    /// Sends `pkt` to `dest`.
    pub fn send(&self, pkt: &[u8], dest: SocketAddrV4) {
        self.sock.send_to(pkt, dest).expect("send DHCP packet");
    }

    /// The next decodable BOOTREPLY within `wait`.
    pub fn recv(&self, wait: Duration) -> Option<(Message, SocketAddr)> {
        let until = Instant::now() + wait;
        let mut buf = [0u8; 2048];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("timeout");
            let Ok((n, from)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            if let Some(m) = wire::decode_message(&buf[..n])
                && m.opcode() == dhcproto::v4::Opcode::BootReply
            {
                return Some((m, from));
            }
        }
    }

    /// Sends `pkt` up to `tries` times, `per_try` apart, until a reply of type `want` with
    /// the packet's xid arrives.
    pub fn exchange(
        &self,
        pkt: &[u8],
        dest: SocketAddrV4,
        want: MessageType,
        tries: u32,
        per_try: Duration,
    ) -> Option<(Message, SocketAddr)> {
        let xid = u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]);
        for _ in 0..tries {
            self.send(pkt, dest);
            let until = Instant::now() + per_try;
            while let Some((m, from)) = self.recv(until.saturating_duration_since(Instant::now())) {
                if m.xid() == xid && m.opts().msg_type() == Some(want) {
                    return Some((m, from));
                }
            }
        }
        None
    }

    /// A full DISCOVER→OFFER→REQUEST→ACK for `mac`; retries for up to `limit` (a server
    /// that is still starting). Returns the OFFER and the ACK.
    pub fn dora(
        &self,
        fw: Firmware,
        mac: Mac,
        xid: u32,
        server: Ipv4Addr,
        limit: Duration,
    ) -> Result<(Message, Message), String> {
        let t = Instant::now();
        let mut xid = xid;
        while t.elapsed() < limit {
            xid = xid.wrapping_add(2);
            let Some((offer, _)) = self.exchange(
                &discover(fw, mac, xid),
                bcast(),
                MessageType::Offer,
                1,
                Duration::from_millis(500),
            ) else {
                continue;
            };
            let req = request(fw, mac, xid.wrapping_add(1), offer.yiaddr(), server);
            if let Some((ack, _)) = self.exchange(
                &req,
                bcast(),
                MessageType::Ack,
                3,
                Duration::from_millis(500),
            ) {
                return Ok((offer, ack));
            }
        }
        Err(format!("no DORA for {mac} within {limit:?}"))
    }

    /// Drops everything queued on the socket.
    pub fn drain(&self) {
        while self.recv(Duration::from_millis(1)).is_some() {}
    }
}
