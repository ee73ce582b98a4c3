//! Option negotiation (pure): RFC 2347 (framework), 2348 (blksize), 2349 (timeout, tsize) and
//! 7440 (windowsize).
//!
//! Rules, per RFC 2347 §3–4: names are case-insensitive; an option the server does not know or
//! does not accept is left out of the OACK (never refused with ERROR 8 from our side); only the
//! accepted options are echoed; if none is accepted the server answers with DATA 1 as if no
//! option had been sent. A repeated option is taken from its first occurrence. Values are
//! decimal ASCII; anything else makes the option ignored. Option values are produced by the
//! server (formatted numbers), never copied from the request.

use std::time::Duration;

use super::packet::RawOption;

/// RFC 1350 block size, used when no `blksize` is negotiated.
pub const DEFAULT_BLKSIZE: u16 = 512;
/// RFC 2348 §2: the smallest valid `blksize`.
pub const MIN_BLKSIZE: u16 = 8;
/// RFC 2348 §2: the largest valid `blksize` (65535 − 20 IP − 8 UDP − 4 TFTP − 39 slack).
pub const MAX_BLKSIZE: u16 = 65464;
/// RFC 2349 §3: `timeout` is 1..=255 seconds.
pub const MAX_TIMEOUT_SECS: u64 = 255;
/// RFC 7440 §3: `windowsize` is 1..=65535 blocks.
pub const MAX_WINDOWSIZE: u16 = 65535;

/// What the server is willing to grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest block size granted (clamped to 8..=65464).
    pub max_blksize: u16,
    /// Largest window granted.
    pub max_windowsize: u16,
}

/// Negotiated transfer parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Block size in bytes.
    pub blksize: u16,
    /// Blocks sent before waiting for an ACK (1 = RFC 1350 lock-step).
    pub windowsize: u16,
    /// Retransmission timeout asked for by the client, if any.
    pub timeout: Option<Duration>,
    /// Accepted options, in request order, with the values to echo in the OACK. Empty means
    /// "send no OACK".
    pub oack: Vec<(&'static str, String)>,
    /// Options that were present but ignored, with a stable reason (for counters and logs).
    pub ignored: Vec<&'static str>,
}

/// Parses a decimal option value. `None` for empty, non-digit or over-long input; numbers too
/// large for `u64` saturate (so "huge" clamps like any other large value).
fn decimal(value: &[u8]) -> Option<u64> {
    /// More digits than this is not a number any client means; the cap bounds the work.
    const MAX_DIGITS: usize = 20;
    if value.is_empty() || value.len() > MAX_DIGITS || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// Negotiates the options of an RRQ for a file of `file_size` bytes.
pub fn negotiate(options: &[RawOption<'_>], file_size: u64, limits: Limits) -> Negotiated {
    let max_blksize = limits.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE);
    let max_windowsize = limits.max_windowsize.max(1);
    let mut out = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        windowsize: 1,
        timeout: None,
        oack: Vec::new(),
        ignored: Vec::new(),
    };
    let mut seen: Vec<&'static str> = Vec::new();
    for opt in options {
        let name: &'static str = if opt.name.eq_ignore_ascii_case(b"blksize") {
            "blksize"
        } else if opt.name.eq_ignore_ascii_case(b"timeout") {
            "timeout"
        } else if opt.name.eq_ignore_ascii_case(b"tsize") {
            "tsize"
        } else if opt.name.eq_ignore_ascii_case(b"windowsize") {
            "windowsize"
        } else {
            out.ignored.push("option_unknown");
            continue;
        };
        if seen.contains(&name) {
            out.ignored.push("option_duplicate");
            continue;
        }
        seen.push(name);
        let Some(value) = decimal(opt.value) else {
            out.ignored.push("option_not_a_number");
            continue;
        };
        match name {
            "blksize" => {
                // RFC 2348: below 8 is invalid; above our limit we grant less, which the RFC
                // allows ("less than or equal to the value specified by the client").
                if value < u64::from(MIN_BLKSIZE) {
                    out.ignored.push("blksize_out_of_range");
                    continue;
                }
                let granted =
                    u16::try_from(value.min(u64::from(max_blksize))).unwrap_or(max_blksize);
                out.blksize = granted;
                out.oack.push((name, granted.to_string()));
            }
            "timeout" => {
                // RFC 2349 §3: 1..=255 seconds; the server must not change it, so out-of-range
                // values are ignored, not clamped.
                if value == 0 || value > MAX_TIMEOUT_SECS {
                    out.ignored.push("timeout_out_of_range");
                    continue;
                }
                out.timeout = Some(Duration::from_secs(value));
                out.oack.push((name, value.to_string()));
            }
            "tsize" => {
                // RFC 2349 §4: an RRQ carries 0 and the OACK carries the size. A non-zero value
                // on an RRQ is meaningless; answering with the real size does no harm.
                out.oack.push((name, file_size.to_string()));
            }
            _ => {
                // "windowsize", RFC 7440 §3: 1..=65535, server may answer with less.
                if value == 0 || value > u64::from(MAX_WINDOWSIZE) {
                    out.ignored.push("windowsize_out_of_range");
                    continue;
                }
                let granted =
                    u16::try_from(value.min(u64::from(max_windowsize))).unwrap_or(max_windowsize);
                out.windowsize = granted;
                out.oack.push((name, granted.to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_blksize: 1468,
        max_windowsize: 64,
    };

    fn neg(pairs: &[(&[u8], &[u8])]) -> Negotiated {
        let opts: Vec<RawOption<'_>> = pairs
            .iter()
            .map(|(name, value)| RawOption { name, value })
            .collect();
        negotiate(&opts, 12345, LIMITS)
    }

    fn oack(n: &Negotiated) -> Vec<(&str, &str)> {
        n.oack.iter().map(|(a, b)| (*a, b.as_str())).collect()
    }

    #[test]
    fn no_options_no_oack() {
        let n = neg(&[]);
        assert_eq!((n.blksize, n.windowsize, n.timeout), (512, 1, None));
        assert!(n.oack.is_empty());
    }

    #[test]
    fn blksize_table() {
        let table: &[(&[u8], Option<u16>)] = &[
            (b"0", None),
            (b"7", None),
            (b"8", Some(8)),
            (b"512", Some(512)),
            (b"1468", Some(1468)),
            (b"1469", Some(1468)),
            (b"8192", Some(1468)),
            (b"65464", Some(1468)),
            (b"65465", Some(1468)),
            (b"99999999999999999999", Some(1468)),
            (b"999999999999999999999", None),
            (b"abc", None),
            (b"", None),
            (b"-1", None),
            (b" 512", None),
            (b"0x200", None),
        ];
        for (value, want) in table {
            let n = neg(&[(b"blksize", value)]);
            match want {
                Some(b) => {
                    assert_eq!(n.blksize, *b, "{value:?}");
                    assert_eq!(oack(&n), vec![("blksize", b.to_string().as_str())]);
                }
                None => {
                    assert_eq!(n.blksize, 512, "{value:?}");
                    assert!(n.oack.is_empty(), "{value:?}");
                    assert_eq!(n.ignored.len(), 1);
                }
            }
        }
    }

    #[test]
    fn timeout_windowsize_tsize_table() {
        for (v, ok) in [("0", false), ("1", true), ("255", true), ("256", false)] {
            let n = neg(&[(b"timeout", v.as_bytes())]);
            assert_eq!(n.timeout.is_some(), ok, "timeout {v}");
        }
        let table = [
            ("0", None),
            ("1", Some(1)),
            ("16", Some(16)),
            ("64", Some(64)),
            ("65", Some(64)),
            ("65535", Some(64)),
            ("65536", None),
        ];
        for (v, want) in table {
            let n = neg(&[(b"windowsize", v.as_bytes())]);
            assert_eq!(n.windowsize, want.unwrap_or(1), "windowsize {v}");
            assert_eq!(n.oack.is_empty(), want.is_none());
        }
        let n = neg(&[(b"TSIZE", b"0")]);
        assert_eq!(oack(&n), vec![("tsize", "12345")]);
        let n = neg(&[(b"tsize", b"777")]);
        assert_eq!(oack(&n), vec![("tsize", "12345")]);
    }

    #[test]
    fn unknown_and_duplicate_options_are_not_echoed() {
        let n = neg(&[
            (b"multicast", b""),
            (b"BlkSize", b"1024"),
            (b"blksize", b"8"),
            (b"windowsize", b"4"),
            (b"foo", b"bar"),
        ]);
        assert_eq!(oack(&n), vec![("blksize", "1024"), ("windowsize", "4")]);
        assert_eq!(n.blksize, 1024);
        assert_eq!(
            n.ignored,
            vec!["option_unknown", "option_duplicate", "option_unknown"]
        );
    }

    #[test]
    fn every_combination_stays_within_rfc_ranges() {
        let values: &[&[u8]] = &[
            b"0", b"1", b"7", b"8", b"255", b"256", b"1468", b"65464", b"65465", b"65535",
            b"65536", b"abc", b"",
        ];
        let mut combos = 0;
        for bs in values {
            for to in values {
                for ws in values {
                    let n = neg(&[
                        (b"blksize", bs),
                        (b"timeout", to),
                        (b"windowsize", ws),
                        (b"tsize", b"0"),
                    ]);
                    assert!((8..=1468).contains(&n.blksize) || n.blksize == 512);
                    assert!((1..=64).contains(&n.windowsize));
                    if let Some(t) = n.timeout {
                        assert!((1..=255).contains(&t.as_secs()));
                    }
                    assert!(n.oack.iter().any(|(k, _)| *k == "tsize"));
                    combos += 1;
                }
            }
        }
        assert!(combos >= 200);
    }
}
