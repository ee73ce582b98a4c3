//! zstd compression the kernel's initramfs decompressor accepts, and a check of it.
//!
//! Linux has decompressed zstd initramfs images since 5.9 (`CONFIG_RD_ZSTD`; Debian's 6.1
//! kernel sets it). Its decompressor is given a bounded work area, so the frame's window must
//! stay small: we pin `window_log` to 23 (8 MiB), which is what levels up to 19 use anyway,
//! and never pledge the content size, so the encoder cannot switch to single-segment mode
//! (where the window would be the whole content). [`frame_window_size`] reads the window
//! back from the frame header so the build can assert it.

use std::io::{self, Write};

use thiserror::Error;

/// The zstd level: 19 is the strongest level whose default window is still 8 MiB.
pub const LEVEL: i32 = 19;

/// log2 of the largest window the output may use.
pub const WINDOW_LOG: u32 = 23;

/// The largest window the output may use (8 MiB).
pub const MAX_WINDOW: u64 = 1 << WINDOW_LOG;

/// zstd frame magic, little-endian `0xFD2FB528`.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Compresses `data` into a single zstd frame written to `out`.
///
/// Single-threaded and with fixed parameters, so equal input gives equal output.
pub fn compress_zstd<W: Write>(data: &[u8], out: W) -> io::Result<W> {
    let mut enc = zstd::stream::Encoder::new(out, LEVEL)?;
    enc.window_log(WINDOW_LOG)?;
    enc.include_checksum(true)?;
    enc.include_contentsize(false)?;
    enc.write_all(data)?;
    enc.finish()
}

/// Why a zstd frame header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// Fewer bytes than a frame header needs.
    #[error("zstd frame header truncated")]
    Truncated,
    /// The first four bytes are not the zstd magic.
    #[error("not a zstd frame (bad magic)")]
    BadMagic,
    /// The reserved bit of the frame header descriptor is set.
    #[error("zstd frame header has its reserved bit set")]
    Reserved,
}

impl FrameError {
    /// A stable, machine-matchable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Truncated => "zstd_truncated",
            Self::BadMagic => "zstd_bad_magic",
            Self::Reserved => "zstd_reserved_bit",
        }
    }
}

/// The window size a decoder needs for the first frame in `frame` (RFC 8878 §3.1.1.1).
///
/// For a single-segment frame this is the frame content size.
pub fn frame_window_size(frame: &[u8]) -> Result<u64, FrameError> {
    match frame.get(..4) {
        Some(m) if m == ZSTD_MAGIC => {}
        Some(_) => return Err(FrameError::BadMagic),
        None => return Err(FrameError::Truncated),
    }
    let fhd = *frame.get(4).ok_or(FrameError::Truncated)?;
    if fhd & 0x08 != 0 {
        return Err(FrameError::Reserved);
    }
    let single_segment = fhd & 0x20 != 0;
    if !single_segment {
        let wd = *frame.get(5).ok_or(FrameError::Truncated)?;
        let exponent = u32::from(wd >> 3);
        let mantissa = u64::from(wd & 7);
        let base = 1u64 << (10 + exponent);
        return Ok(base + (base / 8) * mantissa);
    }
    // Single segment: window = content size, whose field follows the dictionary ID.
    let did_len = match fhd & 3 {
        0 => 0,
        1 => 1,
        2 => 2,
        _ => 4,
    };
    let fcs_len = match fhd >> 6 {
        0 => 1,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let start = 5 + did_len;
    let field = frame
        .get(start..start + fcs_len)
        .ok_or(FrameError::Truncated)?;
    let mut value = 0u64;
    for (i, b) in field.iter().enumerate() {
        value |= u64::from(*b) << (8 * i);
    }
    // The 2-byte form is stored with an offset of 256.
    Ok(if fcs_len == 2 { value + 256 } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic, poorly compressible bytes (xorshift), so the window actually matters.
    fn noise(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn round_trips_and_keeps_the_window_at_8_mib() {
        // Larger than the window, so an encoder left to itself could pick a bigger one.
        let mut data = noise(1 << 20);
        data.extend(std::iter::repeat_n(b'x', 9 << 20));
        let out = compress_zstd(&data, Vec::new()).unwrap();
        let window = frame_window_size(&out).unwrap();
        assert!(window <= MAX_WINDOW, "window {window}");
        assert_eq!(zstd::decode_all(&out[..]).unwrap(), data);
    }

    #[test]
    fn small_input_is_not_single_segment() {
        let out = compress_zstd(b"tiny", Vec::new()).unwrap();
        assert_eq!(out[4] & 0x20, 0, "single-segment frame");
        assert!(frame_window_size(&out).unwrap() <= MAX_WINDOW);
    }

    #[test]
    fn window_of_single_segment_frames_is_the_content_size() {
        // Made with `zstd::bulk`, which pledges the size and so uses single-segment mode.
        let data = noise(5000);
        let out = zstd::bulk::compress(&data, 3).unwrap();
        assert_ne!(out[4] & 0x20, 0);
        assert_eq!(frame_window_size(&out).unwrap(), 5000);
    }

    #[test]
    fn bad_headers() {
        assert_eq!(
            frame_window_size(&[0x28, 0xb5]).unwrap_err().code(),
            "zstd_truncated"
        );
        assert_eq!(
            frame_window_size(b"\x1f\x8b\x08\x00\x00")
                .unwrap_err()
                .code(),
            "zstd_bad_magic"
        );
        assert_eq!(
            frame_window_size(&[0x28, 0xb5, 0x2f, 0xfd, 0x08, 0])
                .unwrap_err()
                .code(),
            "zstd_reserved_bit"
        );
        assert_eq!(
            frame_window_size(&[0x28, 0xb5, 0x2f, 0xfd, 0x00])
                .unwrap_err()
                .code(),
            "zstd_truncated"
        );
    }
}
