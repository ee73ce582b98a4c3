//! The three rtnetlink requests the agent needs, and the acknowledgement they get. **Pure**:
//! bytes in, bytes out; [`crate::net`] owns the socket.
//!
//! Layouts from `<linux/netlink.h>`, `<linux/rtnetlink.h>`, `<linux/if_link.h>`,
//! `<linux/if_addr.h>` (all native-endian, 4-byte aligned):
//!
//! ```text
//! nlmsghdr  (16): len u32 | type u16 | flags u16 | seq u32 | pid u32
//! ifinfomsg (16): family u8 | pad u8 | type u16 | index i32 | flags u32 | change u32
//! ifaddrmsg  (8): family u8 | prefixlen u8 | flags u8 | scope u8 | index u32
//! rtmsg     (12): family u8 | dst_len u8 | src_len u8 | tos u8 | table u8 | protocol u8
//!                 | scope u8 | type u8 | flags u32
//! rtattr     (4): len u16 | type u16, then the payload padded to 4 bytes
//! nlmsgerr      : error i32 (0 = ACK, else -errno) | the request's nlmsghdr …
//! ```

use std::net::Ipv4Addr;

/// `RTM_NEWLINK`.
pub const RTM_NEWLINK: u16 = 16;
/// `RTM_NEWADDR`.
pub const RTM_NEWADDR: u16 = 20;
/// `RTM_NEWROUTE`.
pub const RTM_NEWROUTE: u16 = 24;
/// `NLMSG_ERROR`: the kernel's reply carrying an errno (0 = acknowledgement).
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`.
pub const NLMSG_DONE: u16 = 3;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;

const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const IFF_UP: u32 = 0x1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
/// `RTPROT_BOOT`: "route installed during boot".
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

const NLMSG_HDRLEN: usize = 16;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A request under construction.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(kind: u16, flags: u16, seq: u32) -> Msg {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: 0 = addressed to the kernel
        Msg { buf }
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = 4 + payload.len();
        // attribute payloads here are at most 4 bytes
        let len16 = u16::try_from(len).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        if let Some(head) = self.buf.get_mut(0..4) {
            head.copy_from_slice(&len.to_ne_bytes());
        }
        std::mem::take(&mut self.buf)
    }
}

/// `ip link set dev <ifindex> up`.
pub fn link_up(seq: u32, ifindex: u32) -> Vec<u8> {
    let index = ifindex.to_ne_bytes();
    Msg::new(RTM_NEWLINK, 0, seq)
        .bytes(&[AF_UNSPEC, 0])
        .bytes(&0u16.to_ne_bytes()) // device type: unchanged
        .bytes(&index)
        .bytes(&IFF_UP.to_ne_bytes()) // flags
        .bytes(&IFF_UP.to_ne_bytes()) // change mask: only IFF_UP
        .finish()
}

/// `ip addr replace <addr>/<prefix> broadcast + dev <ifindex>` (idempotent).
pub fn add_address(seq: u32, ifindex: u32, addr: Ipv4Addr, prefix_len: u8) -> Vec<u8> {
    let host_mask = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
    let broadcast = Ipv4Addr::from(u32::from(addr) | host_mask);
    let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, seq);
    m.bytes(&[AF_INET, prefix_len, 0, RT_SCOPE_UNIVERSE])
        .bytes(&ifindex.to_ne_bytes())
        .attr(IFA_LOCAL, &addr.octets())
        .attr(IFA_ADDRESS, &addr.octets());
    if prefix_len < 31 {
        m.attr(IFA_BROADCAST, &broadcast.octets());
    }
    m.finish()
}

/// `ip route replace default via <gateway> dev <ifindex> proto boot`.
pub fn add_default_route(seq: u32, ifindex: u32, gateway: Ipv4Addr) -> Vec<u8> {
    Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, seq)
        .bytes(&[
            AF_INET,
            0, // dst_len: default route
            0, // src_len
            0, // tos
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
        ])
        .bytes(&0u32.to_ne_bytes()) // rtm_flags
        .attr(RTA_GATEWAY, &gateway.octets())
        .attr(RTA_OIF, &ifindex.to_ne_bytes())
        .finish()
}

/// What the kernel said about request `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Done.
    Ok,
    /// Refused with this errno (positive).
    Errno(i32),
}

/// Why a reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// A header or length field is inconsistent.
    #[error("truncated or malformed netlink reply")]
    Malformed,
    /// The buffer holds no error/ack message for our sequence number.
    #[error("no acknowledgement for request {0} in the reply")]
    NoAck(u32),
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Finds the `NLMSG_ERROR` for `seq` among the messages in `buf`. Messages for other sequence
/// numbers are skipped.
pub fn parse_ack(buf: &[u8], seq: u32) -> Result<Ack, AckError> {
    let mut at = 0usize;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, at).ok_or(AckError::Malformed)? as usize;
        let kind = u16_at(buf, at + 4).ok_or(AckError::Malformed)?;
        let msg_seq = u32_at(buf, at + 8).ok_or(AckError::Malformed)?;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return Err(AckError::Malformed);
        }
        if kind == NLMSG_ERROR && msg_seq == seq {
            let raw = u32_at(buf, at + NLMSG_HDRLEN).ok_or(AckError::Malformed)?;
            let err = i32::from_ne_bytes(raw.to_ne_bytes());
            return Ok(if err == 0 {
                Ack::Ok
            } else {
                Ack::Errno(err.saturating_neg())
            });
        }
        at += align4(len);
    }
    Err(AckError::NoAck(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(b: &[u8]) -> (u32, u16, u16, u32) {
        (
            u32_at(b, 0).unwrap(),
            u16_at(b, 4).unwrap(),
            u16_at(b, 6).unwrap(),
            u32_at(b, 8).unwrap(),
        )
    }

    #[test]
    fn link_up_layout() {
        let m = link_up(7, 3);
        assert_eq!(m.len(), 32);
        assert_eq!(hdr(&m), (32, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, 7));
        assert_eq!(u32_at(&m, 20), Some(3), "ifi_index");
        assert_eq!(u32_at(&m, 24), Some(IFF_UP), "ifi_flags");
        assert_eq!(u32_at(&m, 28), Some(IFF_UP), "ifi_change");
    }

    #[test]
    fn address_layout() {
        let m = add_address(8, 2, Ipv4Addr::new(10, 99, 0, 100), 24);
        // header 16 + ifaddrmsg 8 + 3 attributes of 8
        assert_eq!(m.len(), 48);
        assert_eq!(
            hdr(&m),
            (
                48,
                RTM_NEWADDR,
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
                8
            )
        );
        assert_eq!(&m[16..20], &[AF_INET, 24, 0, 0]);
        assert_eq!(u32_at(&m, 20), Some(2));
        assert_eq!((u16_at(&m, 24), u16_at(&m, 26)), (Some(8), Some(IFA_LOCAL)));
        assert_eq!(&m[28..32], &[10, 99, 0, 100]);
        assert_eq!(u16_at(&m, 34), Some(IFA_ADDRESS));
        assert_eq!(u16_at(&m, 42), Some(IFA_BROADCAST));
        assert_eq!(&m[44..48], &[10, 99, 0, 255]);
        // /31 and /32 have no broadcast address
        assert_eq!(add_address(1, 2, Ipv4Addr::new(10, 0, 0, 1), 32).len(), 40);
    }

    #[test]
    fn route_layout() {
        let m = add_default_route(9, 4, Ipv4Addr::new(10, 99, 0, 1));
        assert_eq!(m.len(), 16 + 12 + 8 + 8);
        assert_eq!(hdr(&m).1, RTM_NEWROUTE);
        assert_eq!(
            &m[16..24],
            &[
                AF_INET,
                0,
                0,
                0,
                RT_TABLE_MAIN,
                RTPROT_BOOT,
                RT_SCOPE_UNIVERSE,
                RTN_UNICAST
            ]
        );
        assert_eq!(u16_at(&m, 30), Some(RTA_GATEWAY));
        assert_eq!(&m[32..36], &[10, 99, 0, 1]);
        assert_eq!(u16_at(&m, 38), Some(RTA_OIF));
        assert_eq!(u32_at(&m, 40), Some(4));
    }

    fn error_msg(seq: u32, errno: i32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&36u32.to_ne_bytes());
        b.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&(-errno).to_ne_bytes());
        b.extend_from_slice(&[0u8; 16]); // echoed request header
        b
    }

    #[test]
    fn acks_and_errors() {
        assert_eq!(parse_ack(&error_msg(5, 0), 5), Ok(Ack::Ok));
        assert_eq!(parse_ack(&error_msg(5, 17), 5), Ok(Ack::Errno(17)));
        let mut two = error_msg(4, 1);
        two.extend(error_msg(5, 0));
        assert_eq!(
            parse_ack(&two, 5),
            Ok(Ack::Ok),
            "skips other sequence numbers"
        );
        assert_eq!(parse_ack(&error_msg(4, 0), 5), Err(AckError::NoAck(5)));
        let mut bad = error_msg(5, 0);
        bad[0] = 200;
        assert_eq!(parse_ack(&bad, 5), Err(AckError::Malformed));
        bad[0] = 3;
        assert_eq!(parse_ack(&bad, 5), Err(AckError::Malformed));
        assert_eq!(parse_ack(&[1, 2, 3], 5), Err(AckError::NoAck(5)));
    }
}
