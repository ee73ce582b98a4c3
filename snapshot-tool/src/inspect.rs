//! `snapshot-tool inspect`: what a snapshot directory claims, as text for people and JSON for
//! tools. Parses (and so fully validates) the manifest but checks no signature and reads no
//! data: use `verify` for that. The rendering functions are pure and golden-tested.

use std::path::Path;

use serde::Serialize;

use crate::format::{ChunkKind, KeyId, Manifest};
use crate::verify::{VerifyError, load_manifest, load_signature};

/// What the signature file looks like (it is not verified by `inspect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureState {
    /// No `manifest.sig`.
    Missing,
    /// A well-formed signature by this key id.
    Present(KeyId),
    /// A `manifest.sig` that does not parse; the reason code.
    Malformed(&'static str),
}

/// A parsed snapshot directory.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Snapshot name (the directory's name).
    pub name: String,
    /// Length of `manifest.bin`.
    pub manifest_len: u64,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The signature file's state.
    pub signature: SignatureState,
}

/// Reads and parses the snapshot in `dir`.
pub fn inspect_dir(dir: &Path) -> Result<Inspection, VerifyError> {
    let (bytes, manifest) = load_manifest(dir)?;
    let signature = match load_signature(dir) {
        Ok(sig) => SignatureState::Present(sig.key_id),
        Err(e) if e.code() == "unsigned" => SignatureState::Missing,
        Err(e) => SignatureState::Malformed(e.code()),
    };
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    Ok(Inspection {
        name,
        manifest_len: bytes.len() as u64,
        manifest,
        signature,
    })
}

/// `n` bytes in binary units with one decimal ("12.0 MiB"), or plain bytes below 1 KiB.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

/// The human-readable summary.
pub fn render_text(inspection: &Inspection) -> String {
    let m = &inspection.manifest;
    let g = m.geometry();
    let percent = if m.image_size() == 0 {
        0.0
    } else {
        m.data_len() as f64 * 100.0 / m.image_size() as f64
    };
    let signature = match &inspection.signature {
        SignatureState::Missing => "none (unsigned; `snapshot-tool sign` adds one)".to_string(),
        SignatureState::Present(id) => format!("key {id} (not checked; `verify` checks it)"),
        SignatureState::Malformed(code) => format!("malformed ({code})"),
    };
    let rows = [
        ("snapshot", inspection.name.clone()),
        (
            "format",
            format!(
                "rackhand snapshot v{}, manifest {} bytes",
                m.format_version(),
                inspection.manifest_len
            ),
        ),
        (
            "image size",
            format!("{} bytes ({})", m.image_size(), human_bytes(m.image_size())),
        ),
        ("sector size", format!("{} bytes", g.sector_size())),
        (
            "chunk size",
            format!(
                "{} bytes ({})",
                g.chunk_size(),
                human_bytes(u64::from(g.chunk_size()))
            ),
        ),
        (
            "chunks",
            format!(
                "{} ({} stored, {} zero)",
                m.chunks().len(),
                m.stored_chunks(),
                m.zero_chunks()
            ),
        ),
        (
            "data size",
            format!(
                "{} bytes ({}), {percent:.2}% of the image",
                m.data_len(),
                human_bytes(m.data_len())
            ),
        ),
        ("digest", m.digest_algorithm().to_string()),
        ("image digest", m.image_digest().to_hex()),
        ("signature", signature),
    ];
    let mut out = String::new();
    for (label, value) in rows {
        out.push_str(&format!("{label:<14} {value}\n"));
    }
    out
}

#[derive(Serialize)]
struct JsonInspection<'a> {
    name: &'a str,
    format_version: u32,
    /// "sha256" or "blake3": the algorithm of every digest below.
    digest_algorithm: &'static str,
    manifest_len: u64,
    image_size: u64,
    sector_size: u32,
    chunk_size: u32,
    chunk_count: u64,
    stored_chunks: u64,
    zero_chunks: u64,
    data_len: u64,
    image_digest: String,
    signature: JsonSignature,
    chunks: Vec<JsonChunk>,
}

#[derive(Serialize)]
struct JsonSignature {
    /// "missing", "unverified" or "malformed".
    status: &'static str,
    key_id: Option<String>,
    code: Option<&'static str>,
}

#[derive(Serialize)]
struct JsonChunk {
    index: u64,
    image_offset: u64,
    raw_len: u32,
    /// "stored" or "zero".
    kind: &'static str,
    data_offset: u64,
    compressed_len: u32,
    raw_digest: Option<String>,
    compressed_digest: Option<String>,
}

/// The JSON document (stable field names; `chunks` lists the whole table).
pub fn render_json(inspection: &Inspection) -> String {
    let m = &inspection.manifest;
    let g = m.geometry();
    let signature = match &inspection.signature {
        SignatureState::Missing => JsonSignature {
            status: "missing",
            key_id: None,
            code: None,
        },
        SignatureState::Present(id) => JsonSignature {
            status: "unverified",
            key_id: Some(id.to_string()),
            code: None,
        },
        SignatureState::Malformed(code) => JsonSignature {
            status: "malformed",
            key_id: None,
            code: Some(code),
        },
    };
    let chunks = (0u64..)
        .zip(m.chunks())
        .map(|(index, c)| {
            let (raw_digest, compressed_digest) = match c.kind {
                ChunkKind::Zero => (None, None),
                ChunkKind::Stored {
                    raw_digest,
                    compressed_digest,
                    ..
                } => (Some(raw_digest.to_hex()), Some(compressed_digest.to_hex())),
            };
            JsonChunk {
                index,
                image_offset: c.image_offset,
                raw_len: c.raw_len,
                kind: if c.is_zero() { "zero" } else { "stored" },
                data_offset: c.data_offset,
                compressed_len: c.compressed_len(),
                raw_digest,
                compressed_digest,
            }
        })
        .collect();
    let doc = JsonInspection {
        name: &inspection.name,
        format_version: m.format_version(),
        digest_algorithm: m.digest_algorithm().name(),
        manifest_len: inspection.manifest_len,
        image_size: m.image_size(),
        sector_size: g.sector_size(),
        chunk_size: g.chunk_size(),
        chunk_count: m.chunks().len() as u64,
        stored_chunks: m.stored_chunks(),
        zero_chunks: m.zero_chunks(),
        data_len: m.data_len(),
        image_digest: m.image_digest().to_hex(),
        signature,
        chunks,
    };
    // Serializing plain structs of strings and integers cannot fail.
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_default();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(4 << 20), "4.0 MiB");
        assert_eq!(human_bytes(3 << 30 | 512 << 20), "3.5 GiB");
        assert_eq!(human_bytes(64 << 40), "64.0 TiB");
    }
}
