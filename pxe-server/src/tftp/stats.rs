//! Counters for the TFTP service, and rate-limited logging of refused or malformed input.
//!
//! Every refused or dropped packet is counted under a stable reason string (the `reason()` of
//! [`PacketError`](super::packet::PacketError), [`PathError`](super::path::PathError),
//! [`OpenError`](super::fs::OpenError) or a service reason listed in [`REASONS`]). Logging of
//! those events is limited to one line per reason per [`LOG_INTERVAL`], because any host on the
//! segment can send them (GUIDE practice 16); the counters always see every event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one warning per reason per interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Every reason a packet or request can be refused or dropped, as counted by [`TftpStats`].
pub const REASONS: &[&str] = &[
    // Codec (packet::PacketError::reason).
    "no_opcode",
    "unknown_opcode",
    "truncated",
    "request_too_long",
    "missing_nul",
    "empty_filename",
    "bad_mode",
    "bad_option",
    "too_many_options",
    // Listener decisions.
    "unexpected_opcode",
    "wrq_refused",
    "mode_refused",
    "duplicate_request",
    "busy_global",
    "busy_client",
    // Filename (path::PathError::reason) and file access (fs::OpenError::reason).
    "path_not_utf8",
    "path_empty",
    "path_too_long",
    "path_too_deep",
    "path_empty_component",
    "path_dot_component",
    "path_forbidden_char",
    "not_found",
    "outside_root",
    "not_regular_file",
    "permission_denied",
    "symlink_race",
    "open_failed",
    // Options ignored during negotiation (options::negotiate).
    "option_unknown",
    "option_duplicate",
    "option_not_a_number",
    "blksize_out_of_range",
    "timeout_out_of_range",
    "windowsize_out_of_range",
    // In-session (session::Handled::Ignored and the service).
    "ack_duplicate",
    "ack_out_of_window",
    "ack_unexpected",
    "session_over",
    "stray_tid",
    "read_failed",
    "send_failed",
    "recv_failed",
    "socket_failed",
    // Anything not listed above.
    "other",
];

/// Service counters, shared between the listener, the sessions and whoever reports metrics.
#[derive(Debug)]
pub struct TftpStats {
    /// Read requests received (well-formed RRQs, before any cap).
    pub requests: AtomicU64,
    /// Sessions started (file opened, first packet about to be sent).
    pub sessions_started: AtomicU64,
    /// Sessions whose last block was acknowledged.
    pub sessions_completed: AtomicU64,
    /// Sessions given up after the retry limit.
    pub sessions_timed_out: AtomicU64,
    /// Sessions ended by an ERROR from the client.
    pub sessions_aborted_by_peer: AtomicU64,
    /// Sessions ended by a local failure (file read, socket).
    pub sessions_failed: AtomicU64,
    /// Sessions stopped by shutdown.
    pub sessions_cancelled: AtomicU64,
    /// DATA packets sent, retransmissions included.
    pub data_sent: AtomicU64,
    /// Payload bytes sent in DATA, retransmissions included.
    pub bytes_sent: AtomicU64,
    rejected: Vec<AtomicU64>,
    last_log_ms: Vec<AtomicU64>,
    epoch: Instant,
}

impl Default for TftpStats {
    fn default() -> Self {
        Self::new()
    }
}

impl TftpStats {
    /// All counters at zero.
    pub fn new() -> Self {
        TftpStats {
            requests: AtomicU64::new(0),
            sessions_started: AtomicU64::new(0),
            sessions_completed: AtomicU64::new(0),
            sessions_timed_out: AtomicU64::new(0),
            sessions_aborted_by_peer: AtomicU64::new(0),
            sessions_failed: AtomicU64::new(0),
            sessions_cancelled: AtomicU64::new(0),
            data_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            rejected: REASONS.iter().map(|_| AtomicU64::new(0)).collect(),
            last_log_ms: REASONS.iter().map(|_| AtomicU64::new(u64::MAX)).collect(),
            epoch: Instant::now(),
        }
    }

    fn index(reason: &str) -> usize {
        REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(REASONS.len() - 1)
    }

    /// Counts one refused or dropped packet under `reason`; returns whether the caller may log
    /// it now (at most once per reason per [`LOG_INTERVAL`]).
    pub fn reject(&self, reason: &str) -> bool {
        let i = Self::index(reason);
        if let Some(c) = self.rejected.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let Some(last) = self.last_log_ms.get(i) else {
            return false;
        };
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let prev = last.load(Ordering::Relaxed);
        let interval = LOG_INTERVAL.as_millis() as u64;
        let due = prev == u64::MAX || now.saturating_sub(prev) >= interval;
        due && last
            .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// How many packets were refused or dropped for `reason` (0 for an unknown reason).
    pub fn rejected(&self, reason: &str) -> u64 {
        REASONS
            .iter()
            .position(|r| *r == reason)
            .and_then(|i| self.rejected.get(i))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Every non-zero reason counter.
    pub fn rejected_snapshot(&self) -> Vec<(&'static str, u64)> {
        REASONS
            .iter()
            .zip(&self.rejected)
            .map(|(r, c)| (*r, c.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Sum of all reason counters.
    pub fn rejected_total(&self) -> u64 {
        self.rejected
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_limits_logging() {
        let s = TftpStats::new();
        assert!(s.reject("truncated"));
        assert!(!s.reject("truncated"));
        assert!(s.reject("bad_mode"));
        assert!(s.reject("no such reason"));
        assert_eq!(s.rejected("truncated"), 2);
        assert_eq!(s.rejected("other"), 1);
        assert_eq!(s.rejected_total(), 4);
        assert_eq!(
            s.rejected_snapshot(),
            vec![("truncated", 2), ("bad_mode", 1), ("other", 1)]
        );
    }

    #[test]
    fn every_reason_of_the_cores_is_listed() {
        use super::super::packet::parse;
        use super::super::path::sanitize;
        let samples: &[&[u8]] = &[
            b"",
            b"\x00\x00",
            b"\x00\x04",
            b"\x00\x01",
            b"\x00\x01\x00x\x00",
            b"\x00\x01f\x00x\x00",
            b"\x00\x01f\x00octet\x00a\x00",
        ];
        for s in samples {
            let e = parse(s).unwrap_err();
            assert!(REASONS.contains(&e.reason()), "{}", e.reason());
        }
        for p in [&b"../x"[..], b"", b"a//b", b"\xff", b"a\\b"] {
            let e = sanitize(p).unwrap_err();
            assert!(REASONS.contains(&e.reason()), "{}", e.reason());
        }
    }
}
