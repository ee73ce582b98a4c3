//! Wire format: strict validation of received DHCPv4 packets, the decoded [`RequestView`], and
//! encoding of [`Reply`]s. Decoding and encoding go through `dhcproto`; this module adds the
//! structural checks dhcproto does not make (it stops at the first bad option without an error,
//! accepts a missing END option and panics on `chaddr()` when `hlen` > 16).
//!
//! Pure: no sockets, no clock.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{
    self, DhcpOption, Flags, Message, MessageType, Opcode, OptionCode, UnknownOption,
};
use dhcproto::{Decodable, Encodable};
use pxe_api::Mac;

/// Fixed BOOTP header length before the magic cookie.
const HEADER_LEN: usize = 236;
/// The DHCP magic cookie.
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Largest packet accepted (an Ethernet MTU).
pub const MAX_PACKET: usize = 1500;

/// Why a received packet was dropped before any decision. Each has a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MalformedReason {
    /// Shorter than the 240-byte BOOTP header plus magic cookie.
    TruncatedHeader,
    /// Larger than [`MAX_PACKET`].
    Oversized,
    /// The magic cookie is not 99.130.83.99.
    BadMagicCookie,
    /// `op` is not BOOTREQUEST.
    WrongOp,
    /// `hlen` is 0 or larger than 16.
    BadHlen,
    /// Hardware type is not Ethernet with a 6-byte address.
    UnsupportedHardware,
    /// An option code is the last byte, with no length byte.
    OptionTruncated,
    /// An option's length runs past the end of the packet.
    OptionOverrun,
    /// The options end without an END (255) option.
    MissingEnd,
    /// Option overload (52) into `sname`/`file` is not supported.
    OptionOverloadUnsupported,
    /// A fixed-length option (50, 53, 54, 57, 93, 61) has the wrong length.
    BadOptionLength,
    /// No DHCP message type (53): a plain BOOTP request.
    MissingMessageType,
    /// Message type value not defined by any RFC.
    UnknownMessageType,
    /// A message type a server must not receive on this port (OFFER, ACK, NAK, …).
    UnexpectedMessageType,
    /// `chaddr` is all-zero, broadcast or multicast.
    UnusableChaddr,
    /// dhcproto rejected the packet.
    DecodeFailed,
    /// dhcproto silently dropped options our own walk found (an option body it cannot parse).
    OptionUndecodable,
}

impl MalformedReason {
    /// Every reason, in a fixed order (for counters).
    pub const ALL: [MalformedReason; 17] = [
        MalformedReason::TruncatedHeader,
        MalformedReason::Oversized,
        MalformedReason::BadMagicCookie,
        MalformedReason::WrongOp,
        MalformedReason::BadHlen,
        MalformedReason::UnsupportedHardware,
        MalformedReason::OptionTruncated,
        MalformedReason::OptionOverrun,
        MalformedReason::MissingEnd,
        MalformedReason::OptionOverloadUnsupported,
        MalformedReason::BadOptionLength,
        MalformedReason::MissingMessageType,
        MalformedReason::UnknownMessageType,
        MalformedReason::UnexpectedMessageType,
        MalformedReason::UnusableChaddr,
        MalformedReason::DecodeFailed,
        MalformedReason::OptionUndecodable,
    ];

    /// Stable snake_case code for logs, metrics and the API.
    pub fn code(self) -> &'static str {
        match self {
            MalformedReason::TruncatedHeader => "truncated_header",
            MalformedReason::Oversized => "oversized",
            MalformedReason::BadMagicCookie => "bad_magic_cookie",
            MalformedReason::WrongOp => "wrong_op",
            MalformedReason::BadHlen => "bad_hlen",
            MalformedReason::UnsupportedHardware => "unsupported_hardware",
            MalformedReason::OptionTruncated => "option_truncated",
            MalformedReason::OptionOverrun => "option_overrun",
            MalformedReason::MissingEnd => "missing_end",
            MalformedReason::OptionOverloadUnsupported => "option_overload_unsupported",
            MalformedReason::BadOptionLength => "bad_option_length",
            MalformedReason::MissingMessageType => "missing_message_type",
            MalformedReason::UnknownMessageType => "unknown_message_type",
            MalformedReason::UnexpectedMessageType => "unexpected_message_type",
            MalformedReason::UnusableChaddr => "unusable_chaddr",
            MalformedReason::DecodeFailed => "decode_failed",
            MalformedReason::OptionUndecodable => "option_undecodable",
        }
    }

    /// Index into [`MalformedReason::ALL`].
    pub fn index(self) -> usize {
        MalformedReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(0)
    }
}

impl std::fmt::Display for MalformedReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// The client message types the server acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMessage {
    /// DHCPDISCOVER.
    Discover,
    /// DHCPREQUEST.
    Request,
    /// DHCPDECLINE.
    Decline,
    /// DHCPRELEASE.
    Release,
    /// DHCPINFORM.
    Inform,
}

/// Where a packet arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Local UDP port it arrived on (67 or 4011).
    pub local_port: u16,
    /// Source address and port.
    pub src: SocketAddrV4,
}

/// A validated, decoded client request: everything `decide` looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestView {
    /// Message type.
    pub msg: ClientMessage,
    /// Transaction id.
    pub xid: u32,
    /// Client hardware address.
    pub mac: Mac,
    /// BROADCAST flag.
    pub broadcast: bool,
    /// `ciaddr`.
    pub ciaddr: Ipv4Addr,
    /// `giaddr` (non-zero when relayed).
    pub giaddr: Ipv4Addr,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 61, raw.
    pub client_id: Option<Vec<u8>>,
    /// Option 12, raw.
    pub hostname: Option<Vec<u8>>,
    /// Option 60, raw.
    pub vendor_class: Option<Vec<u8>>,
    /// Option 77, raw.
    pub user_class: Option<Vec<u8>>,
    /// Option 93, first architecture type.
    pub client_arch: Option<u16>,
    /// Option 97, raw (type byte + GUID).
    pub client_uuid: Option<Vec<u8>>,
    /// Option 175 (iPXE encapsulated options) was present.
    pub ipxe_options: bool,
    /// Option 55.
    pub param_request: Vec<u8>,
    /// Option 82, raw, echoed back to the relay (RFC 3046).
    pub relay_agent_info: Option<Vec<u8>>,
    /// Arrival information.
    pub arrival: Arrival,
}

impl RequestView {
    /// True if the client asked for option `code` in its parameter request list.
    pub fn wants(&self, code: u8) -> bool {
        self.param_request.contains(&code)
    }
}

/// The options of a packet: per-code total length, and each instance's byte span in the
/// option area.
#[derive(Debug, Default)]
struct OptionMap {
    lens: BTreeMap<u8, usize>,
    spans: Vec<(u8, usize, usize)>,
}

/// Walk the option area and check the TLV structure.
fn walk_options(opts: &[u8]) -> Result<OptionMap, MalformedReason> {
    let mut seen = OptionMap::default();
    let mut i = 0usize;
    loop {
        let Some(&code) = opts.get(i) else {
            return Err(MalformedReason::MissingEnd);
        };
        match code {
            0 => i += 1,
            255 => return Ok(seen),
            _ => {
                let Some(&len) = opts.get(i + 1) else {
                    return Err(MalformedReason::OptionTruncated);
                };
                let end = i + 2 + usize::from(len);
                if end > opts.len() {
                    return Err(MalformedReason::OptionOverrun);
                }
                *seen.lens.entry(code).or_insert(0) += usize::from(len);
                seen.spans.push((code, i, end));
                i = end;
            }
        }
    }
}

fn check_lengths<'a>(
    lens: impl Iterator<Item = (&'a u8, &'a usize)>,
) -> Result<(), MalformedReason> {
    for (&code, &len) in lens {
        let ok = match code {
            53 => len == 1,
            50 | 54 => len == 4,
            57 => len == 2,
            93 => len >= 2 && len % 2 == 0,
            61 => len >= 2,
            // dhcproto debug-asserts or subtracts on these lengths; refuse them first.
            80 => len == 0,
            94 => len == 3,
            81 => len >= 3,
            151 => len >= 1,
            152..=155 => len == 4,
            _ => true,
        };
        if !ok {
            return Err(MalformedReason::BadOptionLength);
        }
    }
    Ok(())
}

/// Validate and decode a packet received on a server port.
pub fn parse_request(raw: &[u8], arrival: Arrival) -> Result<RequestView, MalformedReason> {
    let msg = validate_and_decode(raw, Some(REQUEST_OPTIONS))?;
    if msg.opcode() != Opcode::BootRequest {
        return Err(MalformedReason::WrongOp);
    }
    let kind = match msg.opts().msg_type() {
        Some(MessageType::Discover) => ClientMessage::Discover,
        Some(MessageType::Request) => ClientMessage::Request,
        Some(MessageType::Decline) => ClientMessage::Decline,
        Some(MessageType::Release) => ClientMessage::Release,
        Some(MessageType::Inform) => ClientMessage::Inform,
        Some(MessageType::Unknown(_)) => return Err(MalformedReason::UnknownMessageType),
        Some(_) => return Err(MalformedReason::UnexpectedMessageType),
        None => return Err(MalformedReason::MissingMessageType),
    };
    if u8::from(msg.htype()) != 1 || msg.hlen() != 6 {
        return Err(MalformedReason::UnsupportedHardware);
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(
        msg.chaddr()
            .get(..6)
            .ok_or(MalformedReason::UnsupportedHardware)?,
    );
    if mac == [0; 6] || mac[0] & 1 == 1 {
        return Err(MalformedReason::UnusableChaddr);
    }
    let o = msg.opts();
    let bytes = |code: OptionCode| -> Option<Vec<u8>> {
        match o.get(code)? {
            DhcpOption::ClassIdentifier(b)
            | DhcpOption::ClientIdentifier(b)
            | DhcpOption::UserClass(b)
            | DhcpOption::ClientMachineIdentifier(b) => Some(b.clone()),
            DhcpOption::Hostname(s) => Some(s.as_bytes().to_vec()),
            DhcpOption::Unknown(u) => Some(u.data().to_vec()),
            _ => None,
        }
    };
    let ip = |code: OptionCode| -> Option<Ipv4Addr> {
        match o.get(code)? {
            DhcpOption::RequestedIpAddress(a) | DhcpOption::ServerIdentifier(a) => Some(*a),
            _ => None,
        }
    };
    let client_arch = match o.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(u16::from(*a)),
        _ => None,
    };
    let param_request = match o.get(OptionCode::ParameterRequestList) {
        Some(DhcpOption::ParameterRequestList(l)) => l.iter().map(|c| u8::from(*c)).collect(),
        _ => Vec::new(),
    };
    // Option 82 is typed in dhcproto; keep the raw bytes from the packet instead.
    let relay_agent_info = raw_option(raw, 82);
    Ok(RequestView {
        msg: kind,
        xid: msg.xid(),
        mac: Mac(mac),
        broadcast: msg.flags().broadcast(),
        ciaddr: msg.ciaddr(),
        giaddr: msg.giaddr(),
        requested_ip: ip(OptionCode::RequestedIpAddress),
        server_id: ip(OptionCode::ServerIdentifier),
        client_id: bytes(OptionCode::ClientIdentifier),
        // Raw: dhcproto would insist on UTF-8; sanitising happens before persisting.
        hostname: raw_option(raw, 12),
        vendor_class: bytes(OptionCode::ClassIdentifier),
        user_class: bytes(OptionCode::UserClass),
        client_arch,
        client_uuid: bytes(OptionCode::ClientMachineIdentifier),
        ipxe_options: o.get(OptionCode::Unknown(175)).is_some(),
        param_request,
        relay_agent_info,
        arrival,
    })
}

/// Concatenated body of option `code` (RFC 3396), from a packet already validated.
fn raw_option(raw: &[u8], code: u8) -> Option<Vec<u8>> {
    let opts = raw.get(HEADER_LEN + 4..)?;
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0usize;
    while let Some(&c) = opts.get(i) {
        match c {
            0 => i += 1,
            255 => break,
            _ => {
                let len = usize::from(*opts.get(i + 1)?);
                let body = opts.get(i + 2..i + 2 + len)?;
                if c == code {
                    out.get_or_insert_with(Vec::new).extend_from_slice(body);
                }
                i += 2 + len;
            }
        }
    }
    out
}

/// Options a request is decoded with through dhcproto. Every other option is blanked to PAD
/// before decoding, so a harmless option dhcproto cannot parse (a non-UTF-8 host name, an odd
/// FQDN) does not cost the client its answer. Options 12 and 82 are read raw instead.
const REQUEST_OPTIONS: &[u8] = &[50, 53, 54, 55, 57, 60, 61, 77, 93, 94, 97, 175];
/// Options a foreign server reply is decoded with (rogue detection).
const REPLY_OPTIONS: &[u8] = &[53, 54, 60];

/// Structural validation shared by server-port and client-port (rogue detection) parsing.
/// With `keep`, only those options are handed to dhcproto (and length-checked).
fn validate_and_decode(raw: &[u8], keep: Option<&[u8]>) -> Result<Message, MalformedReason> {
    if raw.len() > MAX_PACKET {
        return Err(MalformedReason::Oversized);
    }
    if raw.len() < HEADER_LEN + 4 {
        return Err(MalformedReason::TruncatedHeader);
    }
    let hlen = raw.get(2).copied().unwrap_or(0);
    if hlen == 0 || hlen > 16 {
        return Err(MalformedReason::BadHlen);
    }
    if raw.get(HEADER_LEN..HEADER_LEN + 4) != Some(&MAGIC[..]) {
        return Err(MalformedReason::BadMagicCookie);
    }
    let opts = raw.get(HEADER_LEN + 4..).unwrap_or(&[]);
    let seen = walk_options(opts)?;
    if seen.lens.contains_key(&52) {
        return Err(MalformedReason::OptionOverloadUnsupported);
    }
    let kept = |code: u8| keep.is_none_or(|k| k.contains(&code));
    check_lengths(seen.lens.iter().filter(|(c, _)| kept(**c)))?;
    let msg = if keep.is_some() {
        let mut clean = raw.to_vec();
        for &(code, start, end) in &seen.spans {
            if !kept(code)
                && let Some(span) = clean.get_mut(HEADER_LEN + 4 + start..HEADER_LEN + 4 + end)
            {
                span.fill(0);
            }
        }
        Message::from_bytes(&clean)
    } else {
        Message::from_bytes(raw)
    }
    .map_err(|_| MalformedReason::DecodeFailed)?;
    // dhcproto stops decoding at the first option body it cannot parse, without an error.
    for code in seen.lens.keys().filter(|c| kept(**c)) {
        if !msg.opts().contains(OptionCode::from(*code)) {
            return Err(MalformedReason::OptionUndecodable);
        }
    }
    Ok(msg)
}

/// A server reply seen on the client port (UDP 68), for rogue-server detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenReply {
    /// OFFER or ACK.
    pub is_ack: bool,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// `yiaddr` (0 for proxyDHCP offers).
    pub yiaddr: Ipv4Addr,
    /// Option 60 started with `PXEClient` (a proxyDHCP-style offer).
    pub pxe: bool,
}

/// Parse an OFFER/ACK seen on UDP 68; anything else is `None`.
pub fn parse_server_reply(raw: &[u8]) -> Option<SeenReply> {
    let msg = validate_and_decode(raw, Some(REPLY_OPTIONS)).ok()?;
    if msg.opcode() != Opcode::BootReply {
        return None;
    }
    let is_ack = match msg.opts().msg_type()? {
        MessageType::Offer => false,
        MessageType::Ack => true,
        _ => return None,
    };
    let server_id = match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(a)) => Some(*a),
        _ => None,
    };
    let pxe = matches!(msg.opts().get(OptionCode::ClassIdentifier),
        Some(DhcpOption::ClassIdentifier(v)) if v.starts_with(b"PXEClient"));
    Some(SeenReply {
        is_ack,
        server_id,
        yiaddr: msg.yiaddr(),
        pxe,
    })
}

/// Reply message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// DHCPOFFER.
    Offer,
    /// DHCPACK.
    Ack,
    /// DHCPNAK.
    Nak,
}

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:68 on the provisioning interface.
    Broadcast,
    /// A unicast address and port (ciaddr:68, a relay's giaddr:67, or a 4011 client).
    Unicast(SocketAddrV4),
}

/// A fully described reply: everything the encoder needs, nothing it has to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// OFFER, ACK or NAK.
    pub kind: ReplyKind,
    /// Copied from the request.
    pub xid: u32,
    /// Client MAC.
    pub mac: Mac,
    /// BROADCAST flag copied from the request.
    pub broadcast: bool,
    /// `ciaddr` (copied for ACKs to RENEW/INFORM).
    pub ciaddr: Ipv4Addr,
    /// `yiaddr` (0 for proxy, INFORM and NAK).
    pub yiaddr: Ipv4Addr,
    /// `siaddr` (next server; our address when a TFTP boot file is handed out).
    pub siaddr: Ipv4Addr,
    /// `giaddr` copied from the request.
    pub giaddr: Ipv4Addr,
    /// `file` field contents.
    pub file: Option<String>,
    /// Options other than 53, in code order (the encoder adds 53 and END).
    pub options: Vec<(u8, Vec<u8>)>,
    /// Where to send it.
    pub dest: Destination,
}

impl Reply {
    /// The body of option `code`, if present.
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }
}

/// Why a reply could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// dhcproto failed.
    #[error("encoding DHCP reply failed")]
    Codec(#[source] dhcproto::error::EncodeError),
    /// An option body longer than 255 bytes (never split here).
    #[error("DHCP option {0} is longer than 255 bytes")]
    OptionTooLong(u8),
    /// The `file` field holds at most 127 bytes plus NUL.
    #[error("boot file name longer than 127 bytes")]
    FileTooLong,
}

/// Encode a reply into packet bytes.
pub fn encode_reply(r: &Reply) -> Result<Vec<u8>, EncodeError> {
    let mut m = Message::new_with_id(r.xid, r.ciaddr, r.yiaddr, r.siaddr, r.giaddr, &r.mac.0);
    m.set_opcode(Opcode::BootReply);
    let flags = if r.broadcast {
        Flags::default().set_broadcast()
    } else {
        Flags::default()
    };
    m.set_flags(flags);
    if let Some(f) = &r.file {
        if f.len() > 127 {
            return Err(EncodeError::FileTooLong);
        }
        m.set_fname_str(f);
    }
    let mt = match r.kind {
        ReplyKind::Offer => MessageType::Offer,
        ReplyKind::Ack => MessageType::Ack,
        ReplyKind::Nak => MessageType::Nak,
    };
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(mt));
    for (code, body) in &r.options {
        if body.len() > 255 {
            return Err(EncodeError::OptionTooLong(*code));
        }
        opts.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(*code),
            body.clone(),
        )));
    }
    // Sized for a typical reply up front: growing from empty costs several reallocations
    // per packet on the hot path.
    let mut buf = Vec::with_capacity(REPLY_CAPACITY);
    m.encode(&mut dhcproto::Encoder::new(&mut buf))
        .map_err(EncodeError::Codec)?;
    Ok(buf)
}

/// Initial buffer size of an encoded reply (BOOTP's 300-byte minimum plus typical options).
const REPLY_CAPACITY: usize = 576;

/// Build a client DISCOVER (used by the rogue-server probe and by tests).
pub fn encode_discover(xid: u32, mac: Mac, broadcast: bool) -> Result<Vec<u8>, EncodeError> {
    let mut m = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac.0,
    );
    if broadcast {
        m.set_flags(Flags::default().set_broadcast());
    }
    m.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
    ]));
    m.to_vec().map_err(EncodeError::Codec)
}

/// Decode a reply this server produced (tests and tools): returns the dhcproto message.
pub fn decode_message(raw: &[u8]) -> Option<v4::Message> {
    validate_and_decode(raw, None).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival() -> Arrival {
        Arrival {
            local_port: 67,
            src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        }
    }

    fn base() -> Vec<u8> {
        encode_discover(0x1234, Mac([0x52, 0x54, 0, 1, 2, 3]), false).expect("encode")
    }

    #[test]
    fn accepts_own_discover() {
        let v = parse_request(&base(), arrival()).expect("valid");
        assert_eq!(v.msg, ClientMessage::Discover);
        assert_eq!(v.xid, 0x1234);
        assert_eq!(v.mac, Mac([0x52, 0x54, 0, 1, 2, 3]));
    }

    #[test]
    fn structural_errors_have_reasons() {
        let b = base();
        assert_eq!(
            parse_request(&b[..200], arrival()),
            Err(MalformedReason::TruncatedHeader)
        );
        let mut big = b.clone();
        big.resize(2000, 0);
        assert_eq!(
            parse_request(&big, arrival()),
            Err(MalformedReason::Oversized)
        );
        let mut m = b.clone();
        m[2] = 17;
        assert_eq!(parse_request(&m, arrival()), Err(MalformedReason::BadHlen));
        let mut m = b.clone();
        m[236] = 0;
        assert_eq!(
            parse_request(&m, arrival()),
            Err(MalformedReason::BadMagicCookie)
        );
        let mut m = b.clone();
        m[0] = 2;
        assert_eq!(parse_request(&m, arrival()), Err(MalformedReason::WrongOp));
        // Drop END: last byte of our encoding is 255.
        let mut m = b.clone();
        assert_eq!(m.pop(), Some(255));
        assert_eq!(
            parse_request(&m, arrival()),
            Err(MalformedReason::MissingEnd)
        );
        // Option length past the end.
        let mut m = b[..240].to_vec();
        m.extend_from_slice(&[53, 1, 1, 12, 40, b'a']);
        assert_eq!(
            parse_request(&m, arrival()),
            Err(MalformedReason::OptionOverrun)
        );
        let mut m = b[..240].to_vec();
        m.extend_from_slice(&[53, 1, 1, 12]);
        assert_eq!(
            parse_request(&m, arrival()),
            Err(MalformedReason::OptionTruncated)
        );
        let mut m = b[..240].to_vec();
        m.extend_from_slice(&[53, 2, 1, 1, 255]);
        assert_eq!(
            parse_request(&m, arrival()),
            Err(MalformedReason::BadOptionLength)
        );
        let mut m = b[..240].to_vec();
        m.extend_from_slice(&[53, 1, 1, 52, 1, 3, 255]);
        assert_eq!(
            parse_request(&m, arrival()),
            Err(MalformedReason::OptionOverloadUnsupported)
        );
        let mut m = b[..240].to_vec();
        m.extend_from_slice(&[12, 1, b'x', 255]);
        assert_eq!(
            parse_request(&m, arrival()),
            Err(MalformedReason::MissingMessageType)
        );
        let mut m = b[..240].to_vec();
        m.extend_from_slice(&[53, 1, 2, 255]);
        assert_eq!(
            parse_request(&m, arrival()),
            Err(MalformedReason::UnexpectedMessageType)
        );
        let mut m = b[..240].to_vec();
        m.extend_from_slice(&[53, 1, 200, 255]);
        assert_eq!(
            parse_request(&m, arrival()),
            Err(MalformedReason::UnknownMessageType)
        );
        let mut m = b.clone();
        m[28] = 0x01; // multicast bit
        assert_eq!(
            parse_request(&m, arrival()),
            Err(MalformedReason::UnusableChaddr)
        );
        // An empty client-arch list.
        let mut m = b[..240].to_vec();
        m.extend_from_slice(&[53, 1, 1, 93, 0, 255]);
        assert_eq!(
            parse_request(&m, arrival()),
            Err(MalformedReason::BadOptionLength)
        );
        // Options the server does not use cannot spoil a request: a non-UTF-8 host name, a
        // subnet mask with a 0-byte body, a short FQDN.
        let mut m = b[..240].to_vec();
        m.extend_from_slice(&[53, 1, 1, 12, 3, 0xff, b'\n', 0, 1, 0, 81, 1, 0, 255]);
        let v = parse_request(&m, arrival()).expect("accepted");
        assert_eq!(v.hostname.as_deref(), Some(&[0xff, b'\n', 0][..]));
    }

    /// Every option code with every short length and a few bodies: no panic in validation
    /// or in dhcproto's decoder behind it (it has debug assertions on some lengths).
    #[test]
    fn every_option_code_and_short_length() {
        let b = base();
        for code in 1u8..=254 {
            for len in 0u8..=9 {
                for fill in [0u8, 1, 0x3f, 0xc0, 0xff] {
                    let mut m = b[..240].to_vec();
                    m.extend_from_slice(&[53, 1, 1, code, len]);
                    m.extend(std::iter::repeat_n(fill, usize::from(len)));
                    m.push(255);
                    let _ = parse_request(&m, arrival());
                    let _ = parse_server_reply(&m);
                    let _ = decode_message(&m);
                }
            }
        }
    }

    #[test]
    fn codes_are_unique() {
        let mut codes: Vec<_> = MalformedReason::ALL.iter().map(|r| r.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), MalformedReason::ALL.len());
        for (i, r) in MalformedReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn reply_roundtrip() {
        let r = Reply {
            kind: ReplyKind::Offer,
            xid: 7,
            mac: Mac([2, 0, 0, 0, 0, 1]),
            broadcast: true,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::new(10, 99, 0, 100),
            siaddr: Ipv4Addr::new(10, 99, 0, 1),
            giaddr: Ipv4Addr::UNSPECIFIED,
            file: Some("undionly.kpxe".into()),
            options: vec![(54, vec![10, 99, 0, 1]), (175, vec![176, 1, 1])],
            dest: Destination::Broadcast,
        };
        let raw = encode_reply(&r).expect("encode");
        let m = decode_message(&raw).expect("decode");
        assert_eq!(m.opcode(), Opcode::BootReply);
        assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 99, 0, 100));
        // dhcproto keeps the terminating NUL of the 128-byte field.
        assert_eq!(m.fname(), Some(&b"undionly.kpxe\0"[..]));
        assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(raw_option(&raw, 175), Some(vec![176, 1, 1]));
        assert_eq!(raw_option(&raw, 54), Some(vec![10, 99, 0, 1]));
        let mut long = r.clone();
        long.options.push((67, vec![b'a'; 256]));
        assert!(matches!(
            encode_reply(&long),
            Err(EncodeError::OptionTooLong(67))
        ));
        let mut long = r;
        long.file = Some("f".repeat(128));
        assert!(matches!(encode_reply(&long), Err(EncodeError::FileTooLong)));
    }
}
