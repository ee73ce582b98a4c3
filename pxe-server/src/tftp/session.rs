//! One read transfer as a pure state machine (smoltcp style): no socket, no file, no clock.
//!
//! The caller feeds it datagrams with [`Session::handle`], calls [`Session::on_timeout`] when
//! [`Session::poll_at`] has passed, and sends whatever [`Session::poll_transmit`] yields. DATA
//! is yielded as `(block, offset, len)`; the caller reads those bytes from the file. Time is an
//! [`Instant`] supplied by the caller.
//!
//! Protocol rules implemented here:
//! - RFC 1350 §2: lock-step DATA/ACK; the transfer ends when the block shorter than `blksize`
//!   (possibly empty) is acknowledged. A file of exactly N×blksize bytes ends with an empty
//!   block N+1.
//! - RFC 1350 §4: a packet from a transfer ID (address:port) other than the peer's gets ERROR 5
//!   to that sender and does not disturb the session.
//! - RFC 1350 §7 / RFC 2347 §5: an ERROR from the peer ends the transfer at once, with no
//!   reply and no retransmission (async-tftp issue #18 is the failure this avoids).
//! - RFC 2347: with accepted options the server sends OACK and waits for ACK 0.
//! - RFC 7440 §4: up to `windowsize` blocks are sent before waiting; an ACK for a block inside
//!   the window means the blocks after it were lost, so the next window starts right after it.
//! - RFC 1123 §4.2.3.1 (Sorcerer's Apprentice): a duplicate ACK never triggers a retransmission;
//!   only the timer does.
//! - Block numbers wrap from 65535 to 0 for files of more than 65535 blocks (the de-facto
//!   convention of atftp, tftp-hpa, curl and iPXE; the RFCs leave it undefined).
//! - Retransmission: after `timeout` without progress the unacknowledged window (or the OACK)
//!   is sent again, at most `max_retries` times; then the session ends silently.

use std::net::SocketAddr;
use std::ops::Add;
use std::time::Duration;

use super::options::{self, Limits, Negotiated};
use super::packet::{self, Packet, RawOption};

/// A point in time, as a duration since an epoch chosen by the caller (the service uses the
/// session's start). The core only compares and adds instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Instant(Duration);

impl Instant {
    /// The instant `d` after the epoch.
    pub const fn from_duration(d: Duration) -> Self {
        Instant(d)
    }

    /// The instant `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Instant(Duration::from_millis(ms))
    }

    /// Time since the epoch.
    pub const fn since_epoch(self) -> Duration {
        self.0
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(rhs))
    }
}

/// Session parameters set by the server operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// What option negotiation may grant.
    pub limits: Limits,
    /// Retransmission timeout when the client did not negotiate `timeout`.
    pub default_timeout: Duration,
    /// How many times one window (or the OACK) is re-sent before giving up.
    pub max_retries: u32,
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting for ACK 0 of the OACK.
    AwaitingOackAck,
    /// Sending DATA.
    Sending,
    /// The last block was acknowledged.
    Complete,
    /// No progress after `max_retries` retransmissions.
    TimedOut,
    /// The peer sent ERROR with this code.
    PeerAborted(u16),
}

impl Status {
    /// Whether the session is over (nothing more will be sent).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Status::Complete | Status::TimedOut | Status::PeerAborted(_)
        )
    }
}

/// A datagram the session wants sent to the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit<'a> {
    /// The encoded OACK.
    Oack(&'a [u8]),
    /// DATA `block` carrying `len` file bytes starting at `offset`.
    Data {
        /// Wire block number.
        block: u16,
        /// File offset of the payload.
        offset: u64,
        /// Payload length (0..=blksize).
        len: usize,
    },
}

/// What [`Session::handle`] made of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// A new ACK moved the transfer forward (possibly to completion).
    Progress,
    /// Dropped, with a stable reason.
    Ignored(&'static str),
    /// From another transfer ID: the caller should send ERROR 5 to the sender.
    StrayTid,
    /// The peer sent ERROR `code`; the session is over.
    Aborted(u16),
}

/// One read transfer.
#[derive(Debug)]
pub struct Session {
    peer: SocketAddr,
    file_size: u64,
    blksize: u16,
    windowsize: u16,
    timeout: Duration,
    max_retries: u32,
    /// Number of blocks in the file, counting the final short (maybe empty) one.
    nblocks: u64,
    /// Highest absolute block (1-based) acknowledged; 0 before any DATA ACK.
    acked: u64,
    /// Next absolute block to hand out from `poll_transmit`.
    next: u64,
    status: Status,
    oack: Vec<u8>,
    oack_pending: bool,
    deadline: Instant,
    retries: u32,
}

impl Session {
    /// Starts the transfer of a `file_size`-byte file to `peer`, negotiating `options`.
    pub fn new(
        peer: SocketAddr,
        options: &[RawOption<'_>],
        file_size: u64,
        config: SessionConfig,
        now: Instant,
    ) -> (Session, Negotiated) {
        let neg = options::negotiate(options, file_size, config.limits);
        let timeout = neg.timeout.unwrap_or(config.default_timeout);
        let mut oack = Vec::new();
        let status = if neg.oack.is_empty() {
            Status::Sending
        } else {
            packet::encode_oack(neg.oack.iter().map(|(k, v)| (*k, v.clone())), &mut oack);
            Status::AwaitingOackAck
        };
        let session = Session {
            peer,
            file_size,
            blksize: neg.blksize,
            windowsize: neg.windowsize,
            timeout,
            max_retries: config.max_retries,
            nblocks: file_size / u64::from(neg.blksize) + 1,
            acked: 0,
            next: 1,
            status,
            oack_pending: status == Status::AwaitingOackAck,
            oack,
            deadline: now + timeout,
            retries: 0,
        };
        (session, neg)
    }

    /// The peer's transfer ID.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Current status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Negotiated block size.
    pub fn blksize(&self) -> u16 {
        self.blksize
    }

    /// Negotiated window size.
    pub fn windowsize(&self) -> u16 {
        self.windowsize
    }

    /// Blocks acknowledged so far.
    pub fn blocks_acked(&self) -> u64 {
        self.acked
    }

    /// When [`on_timeout`](Self::on_timeout) should next be called, if the session is live.
    pub fn poll_at(&self) -> Option<Instant> {
        (!self.status.is_finished()).then_some(self.deadline)
    }

    /// The next datagram to send, if any. Call until it returns `None`.
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        match self.status {
            Status::AwaitingOackAck if self.oack_pending => {
                self.oack_pending = false;
                Some(Transmit::Oack(&self.oack))
            }
            Status::Sending => {
                let window_end = self
                    .acked
                    .saturating_add(u64::from(self.windowsize))
                    .min(self.nblocks);
                if self.next > window_end {
                    return None;
                }
                let abs = self.next;
                self.next += 1;
                let offset = (abs - 1).saturating_mul(u64::from(self.blksize));
                let len = self
                    .file_size
                    .saturating_sub(offset)
                    .min(u64::from(self.blksize));
                Some(Transmit::Data {
                    // Wire block numbers are the absolute number modulo 65536.
                    block: (abs % 65536) as u16,
                    offset,
                    len: usize::try_from(len).unwrap_or(0),
                })
            }
            _ => None,
        }
    }

    /// Processes a datagram received on the session's socket.
    pub fn handle(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) -> Handled {
        if from != self.peer {
            return Handled::StrayTid;
        }
        if self.status.is_finished() {
            return Handled::Ignored("session_over");
        }
        let block = match packet::parse(bytes) {
            Err(e) => return Handled::Ignored(e.reason()),
            Ok(Packet::Error { code, .. }) => {
                self.status = Status::PeerAborted(code);
                return Handled::Aborted(code);
            }
            Ok(Packet::Ack { block }) => block,
            Ok(_) => return Handled::Ignored("unexpected_opcode"),
        };
        match self.status {
            Status::AwaitingOackAck => {
                if block != 0 {
                    return Handled::Ignored("ack_unexpected");
                }
                self.status = Status::Sending;
                self.progress(now);
                Handled::Progress
            }
            Status::Sending => {
                // Distance from the last acknowledged block, modulo the 16-bit wire number.
                let delta = u64::from(block.wrapping_sub((self.acked % 65536) as u16));
                let in_flight = self.next.saturating_sub(1).saturating_sub(self.acked);
                if delta == 0 {
                    return Handled::Ignored("ack_duplicate");
                }
                if delta > in_flight {
                    return Handled::Ignored("ack_out_of_window");
                }
                self.acked += delta;
                if self.acked >= self.nblocks {
                    self.status = Status::Complete;
                    return Handled::Progress;
                }
                // Restart the window right after the acknowledged block: a no-op at the end of
                // a window, a resend of the lost tail when the ACK is from its middle.
                self.next = self.acked + 1;
                self.progress(now);
                Handled::Progress
            }
            _ => Handled::Ignored("session_over"),
        }
    }

    /// Retransmits or gives up if the deadline has passed; does nothing before it.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.status.is_finished() || now < self.deadline {
            return;
        }
        if self.retries >= self.max_retries {
            self.status = Status::TimedOut;
            return;
        }
        self.retries += 1;
        self.deadline = now + self.timeout;
        match self.status {
            Status::AwaitingOackAck => self.oack_pending = true,
            _ => self.next = self.acked + 1,
        }
    }

    fn progress(&mut self, now: Instant) {
        self.retries = 0;
        self.deadline = now + self.timeout;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: SocketAddr = SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
        40000,
    );
    const STRANGER: SocketAddr = SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
        40001,
    );
    const CONFIG: SessionConfig = SessionConfig {
        limits: Limits {
            max_blksize: 1468,
            max_windowsize: 64,
        },
        default_timeout: Duration::from_secs(1),
        max_retries: 5,
    };

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn ack(block: u16) -> Vec<u8> {
        let mut v = Vec::new();
        packet::encode_ack(block, &mut v);
        v
    }

    fn opts<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<RawOption<'a>> {
        pairs
            .iter()
            .map(|(n, v)| RawOption {
                name: n.as_bytes(),
                value: v.as_bytes(),
            })
            .collect()
    }

    /// Everything `poll_transmit` yields now, as (block, offset, len) or (u32::MAX, 0, oack len).
    fn drain(s: &mut Session) -> Vec<(u32, u64, usize)> {
        let mut out = Vec::new();
        while let Some(tx) = s.poll_transmit() {
            out.push(match tx {
                Transmit::Oack(b) => (u32::MAX, 0, b.len()),
                Transmit::Data { block, offset, len } => (u32::from(block), offset, len),
            });
            assert!(out.len() < 100_000, "runaway transmit");
        }
        out
    }

    fn blocks(v: &[(u32, u64, usize)]) -> Vec<u32> {
        v.iter().map(|x| x.0).collect()
    }

    #[test]
    fn scripted_oack_window_timeout_and_give_up() {
        // 10 blocks of 512 + a 100-byte tail, windowsize 4.
        let size = 512 * 10 + 100;
        let o = opts(&[("blksize", "512"), ("windowsize", "4"), ("tsize", "0")]);
        let (mut s, neg) = Session::new(PEER, &o, size, CONFIG, t(0));
        assert_eq!(neg.windowsize, 4);
        // t=0: RRQ → OACK only (no DATA before ACK 0: no amplification).
        let Some(Transmit::Oack(oack)) = s.poll_transmit() else {
            panic!("no OACK")
        };
        assert_eq!(
            oack,
            b"\x00\x06blksize\x00512\x00windowsize\x004\x00tsize\x005220\x00"
        );
        assert_eq!(s.poll_transmit(), None);
        // ACK 0 → DATA 1..4.
        assert_eq!(s.handle(PEER, &ack(0), t(10)), Handled::Progress);
        assert_eq!(
            drain(&mut s),
            vec![(1, 0, 512), (2, 512, 512), (3, 1024, 512), (4, 1536, 512)]
        );
        // No ACK before the deadline: nothing.
        s.on_timeout(t(1009));
        assert!(drain(&mut s).is_empty());
        // Deadline: the whole window again.
        s.on_timeout(t(1010));
        assert_eq!(blocks(&drain(&mut s)), vec![1, 2, 3, 4]);
        // ACK 2 in the middle of the window → resend from 3, window now 3..6.
        assert_eq!(s.handle(PEER, &ack(2), t(1100)), Handled::Progress);
        assert_eq!(blocks(&drain(&mut s)), vec![3, 4, 5, 6]);
        // Duplicate and old ACKs are ignored and trigger nothing.
        assert_eq!(
            s.handle(PEER, &ack(2), t(1101)),
            Handled::Ignored("ack_duplicate")
        );
        assert_eq!(
            s.handle(PEER, &ack(1), t(1102)),
            Handled::Ignored("ack_out_of_window")
        );
        assert_eq!(
            s.handle(PEER, &ack(9), t(1103)),
            Handled::Ignored("ack_out_of_window")
        );
        assert!(drain(&mut s).is_empty());
        // Now no ACK at all: 5 retransmissions, then the session ends silently.
        let mut now = 1100;
        for _ in 0..5 {
            now += 1000;
            s.on_timeout(t(now));
            assert_eq!(blocks(&drain(&mut s)), vec![3, 4, 5, 6]);
        }
        now += 1000;
        s.on_timeout(t(now));
        assert_eq!(s.status(), Status::TimedOut);
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.poll_at(), None);
    }

    #[test]
    fn lockstep_without_options_completes() {
        let (mut s, _) = Session::new(PEER, &[], 1024, CONFIG, t(0));
        // No OACK: DATA 1 at once, and only one block.
        assert_eq!(drain(&mut s), vec![(1, 0, 512)]);
        assert_eq!(s.handle(PEER, &ack(1), t(1)), Handled::Progress);
        assert_eq!(drain(&mut s), vec![(2, 512, 512)]);
        assert_eq!(s.handle(PEER, &ack(2), t(2)), Handled::Progress);
        // Exactly 2×512 bytes: an empty block 3 ends the transfer.
        assert_eq!(drain(&mut s), vec![(3, 1024, 0)]);
        assert_eq!(s.handle(PEER, &ack(3), t(3)), Handled::Progress);
        assert_eq!(s.status(), Status::Complete);
        assert!(drain(&mut s).is_empty());
    }

    #[test]
    fn empty_file_is_one_empty_block() {
        let (mut s, _) = Session::new(PEER, &[], 0, CONFIG, t(0));
        assert_eq!(drain(&mut s), vec![(1, 0, 0)]);
        s.handle(PEER, &ack(1), t(1));
        assert_eq!(s.status(), Status::Complete);
    }

    #[test]
    fn peer_error_ends_at_once_with_nothing_more() {
        let o = opts(&[("tsize", "0")]);
        let (mut s, _) = Session::new(PEER, &o, 5000, CONFIG, t(0));
        assert!(matches!(s.poll_transmit(), Some(Transmit::Oack(_))));
        assert_eq!(
            s.handle(PEER, b"\x00\x05\x00\x08tsize probe\x00", t(5)),
            Handled::Aborted(8)
        );
        assert_eq!(s.status(), Status::PeerAborted(8));
        for ms in [1000, 2000, 10_000, 100_000] {
            s.on_timeout(t(ms));
            assert!(drain(&mut s).is_empty());
        }
        assert_eq!(s.poll_at(), None);
        assert_eq!(
            s.handle(PEER, &ack(0), t(6)),
            Handled::Ignored("session_over")
        );
        assert!(drain(&mut s).is_empty());
    }

    #[test]
    fn stray_tid_does_not_disturb_the_session() {
        let (mut s, _) = Session::new(PEER, &[], 2000, CONFIG, t(0));
        assert_eq!(drain(&mut s), vec![(1, 0, 512)]);
        assert_eq!(s.handle(STRANGER, &ack(1), t(1)), Handled::StrayTid);
        assert_eq!(
            s.handle(STRANGER, b"\x00\x05\x00\x00x\x00", t(1)),
            Handled::StrayTid
        );
        assert_eq!(s.status(), Status::Sending);
        assert_eq!(s.blocks_acked(), 0);
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.handle(PEER, &ack(1), t(2)), Handled::Progress);
        assert_eq!(drain(&mut s), vec![(2, 512, 512)]);
    }

    #[test]
    fn garbage_from_peer_is_ignored_with_reason() {
        let (mut s, _) = Session::new(PEER, &[], 2000, CONFIG, t(0));
        drain(&mut s);
        for (bytes, reason) in [
            (&b""[..], "no_opcode"),
            (b"\x00\x04\x00", "truncated"),
            (b"\x00\x09", "unknown_opcode"),
            (b"\x00\x03\x00\x01data", "unexpected_opcode"),
            (b"\x00\x01f\x00octet\x00", "unexpected_opcode"),
        ] {
            assert_eq!(s.handle(PEER, bytes, t(1)), Handled::Ignored(reason));
        }
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.status(), Status::Sending);
    }

    #[test]
    fn block_numbers_roll_over_past_65535() {
        let blk = 8u64;
        let nblocks = 70_000u64;
        let size = blk * (nblocks - 1) + 3;
        let o = opts(&[("blksize", "8"), ("windowsize", "16")]);
        let (mut s, _) = Session::new(PEER, &o, size, CONFIG, t(0));
        assert!(matches!(s.poll_transmit(), Some(Transmit::Oack(_))));
        s.handle(PEER, &ack(0), t(0));
        let mut expected_abs = 1u64;
        let mut now = 0;
        while s.status() != Status::Complete {
            let window = drain(&mut s);
            assert!(!window.is_empty() && window.len() <= 16);
            for (block, offset, len) in &window {
                assert_eq!(u64::from(*block), expected_abs % 65536);
                assert_eq!(*offset, (expected_abs - 1) * blk);
                let want_len = if expected_abs == nblocks { 3 } else { 8 };
                assert_eq!(*len, want_len);
                expected_abs += 1;
            }
            let last = window.last().map(|w| w.0).unwrap_or_default();
            now += 1;
            assert_eq!(s.handle(PEER, &ack(last as u16), t(now)), Handled::Progress);
        }
        assert_eq!(expected_abs, nblocks + 1);
        assert_eq!(s.blocks_acked(), nblocks);
    }

    #[test]
    fn oack_is_resent_on_timeout_then_gives_up() {
        let o = opts(&[("blksize", "1024")]);
        let (mut s, _) = Session::new(PEER, &o, 10, CONFIG, t(0));
        assert_eq!(drain(&mut s).len(), 1);
        assert_eq!(
            s.handle(PEER, &ack(1), t(1)),
            Handled::Ignored("ack_unexpected")
        );
        for i in 1..=5 {
            s.on_timeout(t(i * 1000));
            assert_eq!(blocks(&drain(&mut s)), vec![u32::MAX]);
        }
        s.on_timeout(t(6000));
        assert_eq!(s.status(), Status::TimedOut);
    }

    #[test]
    fn client_timeout_option_drives_the_timer() {
        let o = opts(&[("timeout", "3")]);
        let (mut s, _) = Session::new(PEER, &o, 10, CONFIG, t(0));
        drain(&mut s);
        assert_eq!(s.poll_at(), Some(t(3000)));
        s.on_timeout(t(2999));
        assert!(drain(&mut s).is_empty());
        s.on_timeout(t(3000));
        assert_eq!(drain(&mut s).len(), 1);
    }

    proptest::proptest! {
        /// Any sequence of datagrams and timer ticks: no panic, every DATA within the file, and
        /// nothing sent once the session is over.
        #[test]
        fn random_inputs_keep_invariants(
            size in 0u64..20_000,
            ws in 1u16..8,
            steps in proptest::collection::vec((0u8..4, proptest::num::u16::ANY, proptest::collection::vec(proptest::num::u8::ANY, 0..8)), 0..200),
        ) {
            let wss = ws.to_string();
            let o = opts(&[("blksize", "100"), ("windowsize", &wss)]);
            let (mut s, _) = Session::new(PEER, &o, size, CONFIG, t(0));
            let mut now = 0;
            for (kind, block, junk) in steps {
                now += 50;
                let finished = s.status().is_finished();
                match kind {
                    0 => { s.handle(PEER, &ack(block), t(now)); }
                    1 => { s.handle(PEER, &junk, t(now)); }
                    2 => s.on_timeout(t(now)),
                    _ => { s.handle(STRANGER, &ack(block), t(now)); }
                }
                let sent = drain(&mut s);
                if finished {
                    proptest::prop_assert!(sent.is_empty());
                }
                proptest::prop_assert!(sent.len() <= usize::from(ws).max(1));
                // `drain` reports an OACK as (u32::MAX, 0, its length): not file data.
                for (block, offset, len) in sent {
                    if block == u32::MAX {
                        continue;
                    }
                    proptest::prop_assert!(offset + len as u64 <= size);
                    proptest::prop_assert!(len <= 100);
                }
            }
        }
    }
}
