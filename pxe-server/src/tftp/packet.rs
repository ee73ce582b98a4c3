//! TFTP packet codec (pure): parse and encode RRQ, WRQ, DATA, ACK, ERROR and OACK.
//!
//! Wire formats (RFC 1350 §5 and appendix, RFC 2347 §2–3):
//!
//! ```text
//!  RRQ/WRQ  | 01/02 | filename | 0 | mode | 0 | opt1 | 0 | value1 | 0 | ... |
//!  DATA     | 03    | block (2 bytes) | data (0..=blksize bytes)          |
//!  ACK      | 04    | block (2 bytes)                                    |
//!  ERROR    | 05    | code (2 bytes)  | message | 0                      |
//!  OACK     | 06    | opt1 | 0 | value1 | 0 | ...                        |
//! ```
//!
//! Every field is found by length: the parser never indexes past the end of the buffer and never
//! trusts a terminator that is not there (atftp CVE-2019-11365 and 9cf799c were both reads past
//! a missing NUL or a too-short ERROR). A malformed packet yields a [`PacketError`] whose
//! [`PacketError::reason`] is a stable string used for counters and logs.

use std::fmt;

/// Largest RRQ/WRQ we accept. RFC 2347 §2: "the request packet [...] must not exceed 512
/// octets". Capping here also caps the work done per option list.
pub const MAX_REQUEST_LEN: usize = 512;

/// Largest number of options we parse in one request. A 512-byte request cannot hold more
/// than ~128 one-character pairs; 32 is far above the five options any client sends and
/// bounds the allocation per request.
pub const MAX_OPTIONS: usize = 32;

/// TFTP opcodes (RFC 1350 §5, RFC 2347 §2 for OACK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Opcode {
    /// Read request.
    Rrq = 1,
    /// Write request.
    Wrq = 2,
    /// Data block.
    Data = 3,
    /// Acknowledgement.
    Ack = 4,
    /// Error.
    Error = 5,
    /// Option acknowledgement (RFC 2347).
    Oack = 6,
}

/// Transfer mode of a request (RFC 1350 §5; names are case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// "netascii": text with CR LF line ends.
    Netascii,
    /// "octet": raw bytes.
    Octet,
    /// "mail": obsolete (RFC 1350 says it should not be implemented).
    Mail,
}

impl Mode {
    /// The mode's wire name, lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Netascii => "netascii",
            Mode::Octet => "octet",
            Mode::Mail => "mail",
        }
    }
}

/// TFTP error codes (RFC 1350 appendix; 8 from RFC 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// Not defined, see error message.
    NotDefined = 0,
    /// File not found.
    FileNotFound = 1,
    /// Access violation.
    AccessViolation = 2,
    /// Disk full or allocation exceeded.
    DiskFull = 3,
    /// Illegal TFTP operation.
    IllegalOperation = 4,
    /// Unknown transfer ID.
    UnknownTid = 5,
    /// File already exists.
    FileExists = 6,
    /// No such user.
    NoSuchUser = 7,
    /// Option negotiation refused (RFC 2347 §4).
    OptionRefused = 8,
}

impl ErrorCode {
    /// The numeric wire value.
    pub fn code(self) -> u16 {
        self as u16
    }
}

/// One option name/value pair of a request or OACK, as raw bytes (not yet validated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawOption<'a> {
    /// Option name (compare case-insensitively, RFC 2347 §2).
    pub name: &'a [u8],
    /// Option value.
    pub value: &'a [u8],
}

/// A read or write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The requested file name, raw bytes (sanitised later, see `path`).
    pub filename: &'a [u8],
    /// Transfer mode.
    pub mode: Mode,
    /// Options in the order sent.
    pub options: Vec<RawOption<'a>>,
}

/// A decoded TFTP packet borrowing from the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Read request.
    Rrq(Request<'a>),
    /// Write request.
    Wrq(Request<'a>),
    /// Data block.
    Data {
        /// Block number (wraps at 65535 → 0).
        block: u16,
        /// Payload.
        data: &'a [u8],
    },
    /// Acknowledgement.
    Ack {
        /// Acknowledged block number.
        block: u16,
    },
    /// Error.
    Error {
        /// Numeric error code (kept raw: peers send codes outside 0..=8).
        code: u16,
        /// Message bytes without the terminator.
        message: &'a [u8],
    },
    /// Option acknowledgement.
    Oack {
        /// Options in the order sent.
        options: Vec<RawOption<'a>>,
    },
}

/// Why a packet could not be decoded. Each variant has a stable [`reason`](Self::reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Fewer than two bytes: no opcode.
    #[error("packet too short for an opcode")]
    NoOpcode,
    /// Opcode 0 or above 6.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// A fixed-size field (block number, error code) is cut off.
    #[error("packet truncated")]
    Truncated,
    /// A request is longer than [`MAX_REQUEST_LEN`].
    #[error("request longer than {MAX_REQUEST_LEN} bytes")]
    RequestTooLong,
    /// A string field is not NUL-terminated.
    #[error("string field without NUL terminator")]
    MissingNul,
    /// The filename is empty.
    #[error("empty filename")]
    EmptyFilename,
    /// The mode is not netascii, octet or mail.
    #[error("unknown transfer mode")]
    BadMode,
    /// An option name has no value, or a name is empty.
    #[error("malformed option list")]
    BadOption,
    /// More than [`MAX_OPTIONS`] options.
    #[error("more than {MAX_OPTIONS} options")]
    TooManyOptions,
}

impl PacketError {
    /// Stable, machine-readable reason, used as a counter key and in logs.
    pub fn reason(self) -> &'static str {
        match self {
            PacketError::NoOpcode => "no_opcode",
            PacketError::UnknownOpcode(_) => "unknown_opcode",
            PacketError::Truncated => "truncated",
            PacketError::RequestTooLong => "request_too_long",
            PacketError::MissingNul => "missing_nul",
            PacketError::EmptyFilename => "empty_filename",
            PacketError::BadMode => "bad_mode",
            PacketError::BadOption => "bad_option",
            PacketError::TooManyOptions => "too_many_options",
        }
    }
}

/// Reads a big-endian u16 at the start of `buf`, if there are two bytes.
fn be16(buf: &[u8]) -> Option<u16> {
    match buf {
        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

/// Splits `buf` at the first NUL: returns the string before it and the rest after it.
fn take_cstr(buf: &[u8]) -> Result<(&[u8], &[u8]), PacketError> {
    let nul = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or(PacketError::MissingNul)?;
    let (s, rest) = buf.split_at(nul);
    // `rest` starts with the NUL found above, so it is not empty.
    Ok((s, rest.get(1..).unwrap_or_default()))
}

/// Parses a NUL-separated list of name/value pairs filling the whole of `buf`.
fn parse_options(mut buf: &[u8]) -> Result<Vec<RawOption<'_>>, PacketError> {
    let mut options = Vec::new();
    while !buf.is_empty() {
        let (name, rest) = take_cstr(buf)?;
        if name.is_empty() {
            return Err(PacketError::BadOption);
        }
        let (value, rest) = take_cstr(rest).map_err(|_| PacketError::BadOption)?;
        if options.len() == MAX_OPTIONS {
            return Err(PacketError::TooManyOptions);
        }
        options.push(RawOption { name, value });
        buf = rest;
    }
    Ok(options)
}

fn parse_request(body: &[u8], total_len: usize) -> Result<Request<'_>, PacketError> {
    if total_len > MAX_REQUEST_LEN {
        return Err(PacketError::RequestTooLong);
    }
    let (filename, rest) = take_cstr(body)?;
    if filename.is_empty() {
        return Err(PacketError::EmptyFilename);
    }
    let (mode, rest) = take_cstr(rest)?;
    let mode = if mode.eq_ignore_ascii_case(b"octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case(b"netascii") {
        Mode::Netascii
    } else if mode.eq_ignore_ascii_case(b"mail") {
        Mode::Mail
    } else {
        return Err(PacketError::BadMode);
    };
    let options = parse_options(rest)?;
    Ok(Request {
        filename,
        mode,
        options,
    })
}

/// Decodes one datagram.
///
/// Leniencies, each chosen so that a peer that wants to stop is never kept talking to:
/// an ERROR without a terminating NUL is accepted (its message is the rest of the packet), and
/// bytes after the block number of an ACK are ignored.
pub fn parse(buf: &[u8]) -> Result<Packet<'_>, PacketError> {
    let opcode = be16(buf).ok_or(PacketError::NoOpcode)?;
    let body = buf.get(2..).unwrap_or_default();
    match opcode {
        1 => parse_request(body, buf.len()).map(Packet::Rrq),
        2 => parse_request(body, buf.len()).map(Packet::Wrq),
        3 => {
            let block = be16(body).ok_or(PacketError::Truncated)?;
            Ok(Packet::Data {
                block,
                data: body.get(2..).unwrap_or_default(),
            })
        }
        4 => {
            let block = be16(body).ok_or(PacketError::Truncated)?;
            Ok(Packet::Ack { block })
        }
        5 => {
            let code = be16(body).ok_or(PacketError::Truncated)?;
            let rest = body.get(2..).unwrap_or_default();
            let message = match take_cstr(rest) {
                Ok((m, _)) => m,
                Err(_) => rest,
            };
            Ok(Packet::Error { code, message })
        }
        6 => Ok(Packet::Oack {
            options: parse_options(body)?,
        }),
        other => Err(PacketError::UnknownOpcode(other)),
    }
}

/// Appends a DATA header; the caller appends the payload.
pub fn encode_data_header(block: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&(Opcode::Data as u16).to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
}

/// Appends a whole DATA packet.
pub fn encode_data(block: u16, data: &[u8], out: &mut Vec<u8>) {
    encode_data_header(block, out);
    out.extend_from_slice(data);
}

/// Appends an ACK packet.
pub fn encode_ack(block: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&(Opcode::Ack as u16).to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
}

/// Appends an ERROR packet. NUL bytes in `message` are dropped so the packet stays well formed.
pub fn encode_error(code: ErrorCode, message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(Opcode::Error as u16).to_be_bytes());
    out.extend_from_slice(&code.code().to_be_bytes());
    out.extend(message.bytes().filter(|&b| b != 0));
    out.push(0);
}

/// Appends an OACK packet with the given name/value pairs (names and values must not contain
/// NUL; they are produced by the server, never copied from the client).
pub fn encode_oack<'a>(options: impl IntoIterator<Item = (&'a str, String)>, out: &mut Vec<u8>) {
    out.extend_from_slice(&(Opcode::Oack as u16).to_be_bytes());
    for (name, value) in options {
        out.extend(name.bytes().filter(|&b| b != 0));
        out.push(0);
        out.extend(value.bytes().filter(|&b| b != 0));
        out.push(0);
    }
}

/// Appends a request (RRQ or WRQ). Used by tests and tools; the server never sends requests.
pub fn encode_request(
    opcode: Opcode,
    filename: &[u8],
    mode: Mode,
    options: &[(&str, &str)],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&(opcode as u16).to_be_bytes());
    out.extend_from_slice(filename);
    out.push(0);
    out.extend_from_slice(mode.as_str().as_bytes());
    out.push(0);
    for (name, value) in options {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
}

/// Shows packet bytes safely in logs: printable ASCII as is, the rest as `\xNN`, cut at 64 bytes.
#[derive(Debug)]
pub struct Printable<'a>(pub &'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 64;
        for &b in self.0.iter().take(SHOWN) {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", char::from(b))?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        if self.0.len() > SHOWN {
            write!(f, "…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rrq_with_options() {
        let pkt = b"\x00\x01ipxe.efi\x00OCTET\x00blksize\x001468\x00tsize\x000\x00";
        let Packet::Rrq(req) = parse(pkt).unwrap() else {
            panic!("not an RRQ");
        };
        assert_eq!(req.filename, b"ipxe.efi");
        assert_eq!(req.mode, Mode::Octet);
        assert_eq!(
            req.options,
            vec![
                RawOption {
                    name: b"blksize",
                    value: b"1468"
                },
                RawOption {
                    name: b"tsize",
                    value: b"0"
                }
            ]
        );
    }

    #[test]
    fn malformed_packets_have_stable_reasons() {
        let mut long = b"\x00\x01".to_vec();
        long.extend(std::iter::repeat_n(b'a', 600));
        long.extend_from_slice(b"\x00octet\x00");
        let table: &[(&[u8], &str)] = &[
            (b"", "no_opcode"),
            (b"\x00", "no_opcode"),
            (b"\x00\x00", "unknown_opcode"),
            (b"\x00\x07abc", "unknown_opcode"),
            (b"\xff\xff", "unknown_opcode"),
            (b"\x00\x03\x00", "truncated"),
            (b"\x00\x04", "truncated"),
            (b"\x00\x04\x01", "truncated"),
            (b"\x00\x05\x00", "truncated"),
            (b"\x00\x05", "truncated"),
            (b"\x00\x01", "missing_nul"),
            (b"\x00\x01file", "missing_nul"),
            (b"\x00\x01file\x00octet", "missing_nul"),
            (b"\x00\x01\x00octet\x00", "empty_filename"),
            (b"\x00\x01f\x00binary\x00", "bad_mode"),
            (b"\x00\x01f\x00\x00", "bad_mode"),
            (b"\x00\x01f\x00octet\x00blksize\x00", "bad_option"),
            (b"\x00\x01f\x00octet\x00blksize", "missing_nul"),
            (b"\x00\x01f\x00octet\x00blksize\x00512", "bad_option"),
            (b"\x00\x01f\x00octet\x00\x00512\x00", "bad_option"),
            (b"\x00\x02f\x00octet\x00x\x00", "bad_option"),
            (b"\x00\x06a\x00", "bad_option"),
            (&long, "request_too_long"),
        ];
        for (bytes, reason) in table {
            let err = parse(bytes).expect_err(&format!("{:?} parsed", Printable(bytes)));
            assert_eq!(err.reason(), *reason, "{}", Printable(bytes));
        }
    }

    #[test]
    fn too_many_options_is_refused() {
        let mut pkt = b"\x00\x01f\x00octet\x00".to_vec();
        for _ in 0..=MAX_OPTIONS {
            pkt.extend_from_slice(b"a\x00b\x00");
        }
        assert_eq!(parse(&pkt), Err(PacketError::TooManyOptions));
    }

    #[test]
    fn error_packets_are_lenient_about_the_terminator() {
        assert_eq!(
            parse(b"\x00\x05\x00\x08").unwrap(),
            Packet::Error {
                code: 8,
                message: b""
            }
        );
        assert_eq!(
            parse(b"\x00\x05\x00\x08no tsize").unwrap(),
            Packet::Error {
                code: 8,
                message: b"no tsize"
            }
        );
        assert_eq!(
            parse(b"\x00\x05\x00\x01gone\x00junk").unwrap(),
            Packet::Error {
                code: 1,
                message: b"gone"
            }
        );
    }

    #[test]
    fn encode_then_parse_roundtrips() {
        let mut buf = Vec::new();
        encode_data(65535, b"hello", &mut buf);
        assert_eq!(
            parse(&buf).unwrap(),
            Packet::Data {
                block: 65535,
                data: b"hello"
            }
        );
        buf.clear();
        encode_data(7, b"", &mut buf);
        assert_eq!(
            parse(&buf).unwrap(),
            Packet::Data {
                block: 7,
                data: b""
            }
        );
        buf.clear();
        encode_ack(0, &mut buf);
        assert_eq!(buf, b"\x00\x04\x00\x00");
        buf.clear();
        encode_error(ErrorCode::AccessViolation, "no\0pe", &mut buf);
        assert_eq!(buf, b"\x00\x05\x00\x02nope\x00");
        buf.clear();
        encode_oack(
            [("blksize", "1468".to_string()), ("tsize", "42".to_string())],
            &mut buf,
        );
        assert_eq!(
            parse(&buf).unwrap(),
            Packet::Oack {
                options: vec![
                    RawOption {
                        name: b"blksize",
                        value: b"1468"
                    },
                    RawOption {
                        name: b"tsize",
                        value: b"42"
                    }
                ]
            }
        );
        buf.clear();
        encode_request(
            Opcode::Wrq,
            b"x",
            Mode::Netascii,
            &[("windowsize", "4")],
            &mut buf,
        );
        assert_eq!(buf, b"\x00\x02x\x00netascii\x00windowsize\x004\x00");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..700)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn request_roundtrip(
            name in "[a-z0-9./]{1,40}",
            opts in proptest::collection::vec(("[a-z]{1,8}", "[0-9]{1,6}"), 0..5),
        ) {
            let pairs: Vec<(&str, &str)> = opts.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let mut buf = Vec::new();
            encode_request(Opcode::Rrq, name.as_bytes(), Mode::Octet, &pairs, &mut buf);
            let Ok(Packet::Rrq(req)) = parse(&buf) else { panic!("no rrq") };
            proptest::prop_assert_eq!(req.filename, name.as_bytes());
            proptest::prop_assert_eq!(req.options.len(), pairs.len());
            for (o, (n, v)) in req.options.iter().zip(pairs) {
                proptest::prop_assert_eq!(o.name, n.as_bytes());
                proptest::prop_assert_eq!(o.value, v.as_bytes());
            }
        }
    }
}
