//! `GET /assets/{path}`: kernel, initramfs, iPXE binaries and snapshots, with single-range
//! support (`Range: bytes=a-b`, `a-`, `-n`), no directory listing, and nothing outside the
//! assets directory ever readable.
//!
//! A request path is accepted only if every component is 1–255 of `[A-Za-z0-9._+-]` and does
//! not start with `.`; the joined path is canonicalised (resolving symlinks) and must still lie
//! under the canonical assets root; the opened file must be the same inode that was checked.

use std::os::unix::fs::MetadataExt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{ApiFailure, AppState};

/// Deepest accepted asset path.
const MAX_DEPTH: usize = 8;
/// Read size for streaming files: large enough for disk images, small enough to bound memory
/// per connection.
const CHUNK: usize = 256 * 1024;

/// Why an asset path is refused (pure check, no I/O).
pub(crate) fn check_relative(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return Err("path too deep");
    }
    for p in parts {
        if p.is_empty() || p.len() > 255 || p.starts_with('.') {
            return Err("empty, hidden or overlong component");
        }
        if !p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
        {
            return Err("forbidden character");
        }
    }
    Ok(())
}

/// Resolves `rel` under `root` (canonical), refusing anything that escapes it.
pub(crate) fn resolve(root: &FsPath, rel: &str) -> Result<PathBuf, ApiFailure> {
    check_relative(rel).map_err(|why| ApiFailure::bad_request("invalid_path", why))?;
    let not_found = || ApiFailure::not_found("not_found", "no such asset");
    let full = root.join(rel).canonicalize().map_err(|_| not_found())?;
    if !full.starts_with(root) {
        tracing::warn!(
            path = rel,
            "asset path resolves outside the assets directory"
        );
        return Err(not_found());
    }
    Ok(full)
}

/// Parses a single `bytes=` range against a length. `Ok(None)`: serve everything.
pub(crate) fn parse_range(h: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(h) = h else { return Ok(None) };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        // Multiple ranges: RFC 9110 lets a server ignore Range; serve the whole file.
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || len == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end: u64 = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1))
        };
        if start >= len || start > end {
            return Err(());
        }
        (start, end)
    };
    Ok(Some(range))
}

/// The handler.
pub(super) async fn serve(
    State(st): State<Arc<AppState>>,
    Path(rel): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiFailure> {
    let full = resolve(&st.assets, &rel)?;
    let not_found = || ApiFailure::not_found("not_found", "no such asset");
    let meta = tokio::fs::metadata(&full).await.map_err(|_| not_found())?;
    if !meta.is_file() {
        return Err(not_found());
    }
    let mut file = tokio::fs::File::open(&full)
        .await
        .map_err(|_| not_found())?;
    let opened = file.metadata().await.map_err(|_| not_found())?;
    if opened.dev() != meta.dev() || opened.ino() != meta.ino() {
        return Err(not_found());
    }
    let len = opened.len();
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        len,
    );
    let (status, start, count) = match range {
        Err(()) => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
        Ok(None) => (StatusCode::OK, 0, len),
        Ok(Some((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
    };
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|_| not_found())?;
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(count), CHUNK);
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&count.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Ok(Some((0, 9))));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=-1000"), 100), Ok(Some((0, 99))));
        assert_eq!(parse_range(Some("bytes=50-1000"), 100), Ok(Some((50, 99))));
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 100), Ok(None));
        for bad in [
            "bytes=100-",
            "bytes=9-1",
            "bytes=-0",
            "bytes=a-b",
            "bytes=5",
            "bytes=--1",
        ] {
            assert_eq!(parse_range(Some(bad), 100), Err(()), "{bad}");
        }
    }

    #[test]
    fn relative_paths() {
        for ok in ["vmlinuz", "snapshots/debian-12/manifest.json", "ipxe.efi"] {
            assert_eq!(check_relative(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/../../x",
            "/etc/passwd",
            ".hidden",
            "a//b",
            "a\\b",
            "a\0b",
            "a b",
            "%2e%2e",
        ] {
            assert!(check_relative(bad).is_err(), "{bad:?}");
        }
    }
}
