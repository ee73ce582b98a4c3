//! Ethernet MAC addresses, in every spelling operators, firmware and iPXE use.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit Ethernet MAC address. Displays as lowercase `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address: expected six hex octets separated by ':' or '-', or 12 hex digits")]
pub struct MacParseError;

impl Mac {
    /// The six octets.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// `aa-bb-cc-dd-ee-ff`, the form iPXE's `${mac:hexhyp}` and `BOOTIF=01-…` use.
    pub fn hyphenated(&self) -> String {
        let o = self.0;
        format!(
            "{:02x}-{:02x}-{:02x}-{:02x}-{:02x}-{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }

    /// True for the all-zero and broadcast addresses, which never identify a NIC.
    pub fn is_unusable(&self) -> bool {
        self.0 == [0; 6] || self.0 == [0xff; 6]
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl FromStr for Mac {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let mut out = [0u8; 6];
        let pair = |hi: u8, lo: u8| -> Result<u8, MacParseError> {
            Ok(hex_val(hi).ok_or(MacParseError)? << 4 | hex_val(lo).ok_or(MacParseError)?)
        };
        match b.len() {
            12 => {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = pair(b[2 * i], b[2 * i + 1])?;
                }
            }
            17 => {
                let sep = b[2];
                if sep != b':' && sep != b'-' {
                    return Err(MacParseError);
                }
                for (i, o) in out.iter_mut().enumerate() {
                    let at = 3 * i;
                    if i < 5 && b[at + 2] != sep {
                        return Err(MacParseError);
                    }
                    *o = pair(b[at], b[at + 1])?;
                }
            }
            _ => return Err(MacParseError),
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        let want = Mac([0x52, 0x54, 0x00, 0x99, 0x00, 0x0a]);
        for s in ["52:54:00:99:00:0a", "52-54-00-99-00-0A", "52540099000a"] {
            assert_eq!(s.parse::<Mac>(), Ok(want), "{s}");
        }
        assert_eq!(want.to_string(), "52:54:00:99:00:0a");
        assert_eq!(want.hyphenated(), "52-54-00-99-00-0a");
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "52:54:00:99:00",
            "52:54:00:99:00:0g",
            "52:54-00:99:00:0a",
            "52.54.00.99.00.0a",
            "525400 99000a",
            "52:54:00:99:00:0a:",
            "${net0/mac}",
            "５2:54:00:99:00:0a",
        ] {
            assert_eq!(s.parse::<Mac>(), Err(MacParseError), "{s:?}");
        }
    }
}
