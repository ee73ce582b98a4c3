//! The TFTP socket service (tokio): the listener on port 69 and one task per transfer.
//!
//! The listener decodes requests and decides, per request, one of:
//! - malformed or not a request → dropped and counted, **no reply** (no reflection or
//!   amplification towards forged sources);
//! - WRQ → ERROR 2 "read-only server";
//! - a mode other than octet → ERROR 4;
//! - an RRQ from a transfer ID that already has a session (a client retransmitting its RRQ) →
//!   dropped: the session's own timer re-sends the OACK or DATA 1;
//! - over the global or per-client session cap → **dropped silently**: the client's own RRQ
//!   retransmission then acts as the queue, whereas an ERROR makes most PXE ROMs abandon the
//!   boot attempt at once;
//! - otherwise a session task is spawned.
//!
//! Each session binds its own UDP socket on the listener's IP with an ephemeral port, its
//! transfer ID (RFC 1350 §4). Packets from other transfer IDs get ERROR 5, at most
//! [`STRAY_REPLIES_PER_SEC`] per session per second. Bind the listener to the provisioning address rather than
//! `0.0.0.0`, so replies leave from the address the client talked to. The session task drives
//! the pure [`Session`] with tokio time and sends ERROR 5 to packets from any other transfer ID.
//!
//! Cancel-safety: `recv_from` and `sleep_until` are cancel-safe, so the `select!` loops lose no
//! datagram when the timer or the shutdown token wins.
//!
//! A lock-step session (windowsize 1, what PXE ROMs ask for) runs on its own blocking thread
//! instead ([`drive_blocking`]): its rate is one round trip per block, and a thread blocked in
//! `recvfrom` answers an ACK sooner than a task woken through the reactor. It looks at its
//! retransmission deadline and the shutdown token every 50 ms.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use super::fs::{BlockReader, OpenError, Root};
use super::options::Limits;
use super::packet::{self, ErrorCode, Mode, Packet, Printable};
use super::path;
use super::session::{Handled, Instant, Session, SessionConfig, Status, Transmit};
use super::stats::TftpStats;

/// Server configuration. [`TftpConfig::new`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct TftpConfig {
    /// Directory served (read-only).
    pub root: PathBuf,
    /// Largest `blksize` granted. Default 1468: the largest block whose datagram fits a
    /// 1500-byte Ethernet MTU (1500 − 20 IPv4 − 8 UDP − 4 TFTP = 1468), so no IP fragments,
    /// whose loss would cost a whole block.
    pub max_blksize: u16,
    /// Largest `windowsize` granted. Default 64: RFC 7440's gains plateau there and larger
    /// windows overrun socket buffers (shared research, crates.md §2 and baselines §2).
    pub max_windowsize: u16,
    /// Retransmission timeout when the client asks for none. Default 1 s, like tftpd-hpa.
    pub default_timeout: Duration,
    /// Retransmissions of one window before the session is dropped. Default 5: with the 1 s
    /// timeout a vanished client costs ~6 s, not async-tftp's 100 × 3 s.
    pub max_retries: u32,
    /// Concurrent sessions in total. Default 256, each holding one socket and a 256 KiB buffer.
    pub max_sessions: usize,
    /// Concurrent sessions per client IP. Default 8: a booting machine needs one or two (a
    /// `tsize` probe and the download).
    pub max_sessions_per_client: usize,
    /// Counters, shared with whoever reports them.
    pub stats: Arc<TftpStats>,
}

impl TftpConfig {
    /// Defaults for serving `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        TftpConfig {
            root: root.into(),
            max_blksize: 1468,
            max_windowsize: 64,
            default_timeout: Duration::from_secs(1),
            max_retries: 5,
            max_sessions: 256,
            max_sessions_per_client: 8,
            stats: Arc::new(TftpStats::new()),
        }
    }
}

/// Receive buffer for the listener: above [`packet::MAX_REQUEST_LEN`] so that an over-long
/// request is seen as such rather than silently truncated to a valid one.
const LISTEN_BUF: usize = 2048;
/// Receive buffer for sessions: ACKs are 4 bytes and ERROR messages are short; a longer
/// datagram is truncated, which the lenient ERROR parse tolerates.
const SESSION_BUF: usize = 1024;

/// ERROR 5 replies a session sends per second at most. RFC 1350 asks for one per stray
/// packet; a flood of forged packets at a session port would otherwise make the session spend
/// its time answering them (and reflect them), while its peer's ACKs queue behind. Packets
/// over the budget are still counted as `stray_tid`.
const STRAY_REPLIES_PER_SEC: u32 = 20;

/// A fixed one-second window counting ERROR 5 replies.
#[derive(Debug, Default)]
struct ReplyBudget {
    window_start: Option<tokio::time::Instant>,
    used: u32,
}

impl ReplyBudget {
    fn allow(&mut self, now: tokio::time::Instant) -> bool {
        match self.window_start {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => {}
            _ => {
                self.window_start = Some(now);
                self.used = 0;
            }
        }
        self.used += 1;
        self.used <= STRAY_REPLIES_PER_SEC
    }
}

/// Active sessions, for the caps and duplicate-RRQ detection.
#[derive(Debug, Default)]
struct Registry {
    per_ip: HashMap<IpAddr, usize>,
    peers: HashSet<SocketAddr>,
}

fn lock(r: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    // A poisoned lock only means a panic elsewhere; the counts are still consistent enough.
    r.lock().unwrap_or_else(|e| e.into_inner())
}

/// Releases a session's registry slot when the session task ends, however it ends.
#[derive(Debug)]
struct Slot {
    registry: Arc<Mutex<Registry>>,
    peer: SocketAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut reg = lock(&self.registry);
        reg.peers.remove(&self.peer);
        if let Some(n) = reg.per_ip.get_mut(&self.peer.ip()) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                reg.per_ip.remove(&self.peer.ip());
            }
        }
    }
}

/// An RRQ copied out of the receive buffer for the session task.
#[derive(Debug)]
struct OwnedRequest {
    filename: Vec<u8>,
    options: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the session tasks share.
#[derive(Debug)]
struct Shared {
    root: Root,
    session: SessionConfig,
    stats: Arc<TftpStats>,
    local_ip: IpAddr,
}

/// Serves read requests on `socket` until `shutdown` is cancelled, then stops every session
/// and returns once they have ended.
pub async fn serve(
    socket: UdpSocket,
    config: TftpConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let root = Root::new(&config.root)?;
    let local_ip = socket.local_addr()?.ip();
    info!(root = %root.path().display(), addr = %socket.local_addr()?, "TFTP service listening");
    let shared = Arc::new(Shared {
        root,
        session: SessionConfig {
            limits: Limits {
                max_blksize: config.max_blksize,
                max_windowsize: config.max_windowsize,
            },
            default_timeout: config.default_timeout,
            max_retries: config.max_retries,
        },
        stats: Arc::clone(&config.stats),
        local_ip,
    });
    let registry = Arc::new(Mutex::new(Registry::default()));
    let sessions_token = shutdown.child_token();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; LISTEN_BUF];
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    let bytes = buf.get(..n).unwrap_or_default();
                    on_datagram(&socket, bytes, from, &config, &shared, &registry, &sessions_token, &mut tasks).await;
                }
                Err(e) => {
                    if shared.stats.reject("recv_failed") {
                        warn!(error = %e, "TFTP listener receive failed");
                    }
                    // Errors here are transient (ICMP feedback, buffer pressure); pause a
                    // little so a persistent one cannot spin the loop.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    sessions_token.cancel();
    while tasks.join_next().await.is_some() {}
    info!("TFTP service stopped");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn on_datagram(
    socket: &UdpSocket,
    bytes: &[u8],
    from: SocketAddr,
    config: &TftpConfig,
    shared: &Arc<Shared>,
    registry: &Arc<Mutex<Registry>>,
    token: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    let stats = &shared.stats;
    let req = match packet::parse(bytes) {
        Err(e) => {
            if stats.reject(e.reason()) {
                warn!(peer = %from, reason = e.reason(), bytes = %Printable(bytes), "malformed TFTP packet dropped (rate-limited log)");
            }
            return;
        }
        Ok(Packet::Rrq(req)) => req,
        Ok(Packet::Wrq(req)) => {
            if stats.reject("wrq_refused") {
                warn!(peer = %from, file = %Printable(req.filename), "TFTP write request refused (rate-limited log)");
            }
            reply_error(socket, from, ErrorCode::AccessViolation, "read-only server").await;
            return;
        }
        Ok(_) => {
            if stats.reject("unexpected_opcode") {
                warn!(peer = %from, bytes = %Printable(bytes), "non-request packet on the TFTP port dropped (rate-limited log)");
            }
            return;
        }
    };
    stats
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if req.mode != Mode::Octet {
        if stats.reject("mode_refused") {
            warn!(peer = %from, mode = req.mode.as_str(), "TFTP request mode refused (rate-limited log)");
        }
        reply_error(
            socket,
            from,
            ErrorCode::IllegalOperation,
            "only octet mode is supported",
        )
        .await;
        return;
    }
    let slot = {
        let mut reg = lock(registry);
        let reason = if reg.peers.contains(&from) {
            Some("duplicate_request")
        } else if reg.peers.len() >= config.max_sessions {
            Some("busy_global")
        } else if reg.per_ip.get(&from.ip()).copied().unwrap_or(0) >= config.max_sessions_per_client
        {
            Some("busy_client")
        } else {
            None
        };
        if let Some(reason) = reason {
            drop(reg);
            if stats.reject(reason) {
                warn!(peer = %from, reason, "TFTP request dropped (rate-limited log)");
            }
            return;
        }
        reg.peers.insert(from);
        *reg.per_ip.entry(from.ip()).or_insert(0) += 1;
        Slot {
            registry: Arc::clone(registry),
            peer: from,
        }
    };
    let owned = OwnedRequest {
        filename: req.filename.to_vec(),
        options: req
            .options
            .iter()
            .map(|o| (o.name.to_vec(), o.value.to_vec()))
            .collect(),
    };
    let shared = Arc::clone(shared);
    let token = token.clone();
    tasks.spawn(async move {
        let _slot = slot;
        run_session(owned, from, shared, token).await;
    });
}

/// Sends an ERROR, ignoring failure (the peer will time out; there is nothing else to do).
async fn reply_error(socket: &UdpSocket, to: SocketAddr, code: ErrorCode, message: &str) {
    let mut out = Vec::with_capacity(message.len() + 5);
    packet::encode_error(code, message, &mut out);
    if let Err(e) = socket.send_to(&out, to).await {
        debug!(peer = %to, error = %e, "sending TFTP error failed");
    }
}

async fn run_session(
    req: OwnedRequest,
    peer: SocketAddr,
    shared: Arc<Shared>,
    token: CancellationToken,
) {
    let stats = &shared.stats;
    let socket = match UdpSocket::bind((shared.local_ip, 0)).await {
        Ok(s) => s,
        Err(e) => {
            if stats.reject("socket_failed") {
                warn!(peer = %peer, error = %e, "cannot bind a TFTP session socket (rate-limited log)");
            }
            return;
        }
    };
    let safe = match path::sanitize(&req.filename) {
        Ok(p) => p,
        Err(e) => {
            if stats.reject(e.reason()) {
                warn!(peer = %peer, file = %Printable(&req.filename), reason = e.reason(), "TFTP filename refused (rate-limited log)");
            }
            reply_error(
                &socket,
                peer,
                ErrorCode::AccessViolation,
                "access violation",
            )
            .await;
            return;
        }
    };
    let root = shared.root.clone();
    let lookup = safe.clone();
    let opened = match tokio::task::spawn_blocking(move || root.open(&lookup)).await {
        Ok(r) => r,
        Err(e) => Err(OpenError::Io(io::Error::other(e))),
    };
    let file = match opened {
        Ok(f) => f,
        Err(e) => {
            let (code, message) = match e {
                OpenError::NotFound => (ErrorCode::FileNotFound, "file not found"),
                OpenError::Denied(_) => (ErrorCode::AccessViolation, "access violation"),
                OpenError::Io(_) => (ErrorCode::NotDefined, "cannot open file"),
            };
            if stats.reject(e.reason()) {
                warn!(peer = %peer, file = %safe.display(), reason = e.reason(), "TFTP request refused (rate-limited log)");
            }
            reply_error(&socket, peer, code, message).await;
            return;
        }
    };
    let options: Vec<packet::RawOption<'_>> = req
        .options
        .iter()
        .map(|(name, value)| packet::RawOption { name, value })
        .collect();
    let base = tokio::time::Instant::now();
    let now = || Instant::from_duration(base.elapsed());
    let (mut session, negotiated) = Session::new(peer, &options, file.size, shared.session, now());
    for reason in &negotiated.ignored {
        stats.reject(reason);
    }
    stats
        .sessions_started
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let span = tracing::info_span!("tftp", peer = %peer, file = %safe.display(), size = file.size,
        blksize = session.blksize(), windowsize = session.windowsize());
    if session.windowsize() == 1 {
        // Lock-step: every block waits for one ACK, so the transfer rate is one round trip
        // per block and a thread blocked in recvfrom answers an ACK sooner than a task woken
        // through the reactor. Such a session gets its own blocking thread (bounded by the
        // session caps, like tftpd-hpa's process per transfer).
        let std_socket = match socket
            .into_std()
            .and_then(|s| s.set_nonblocking(false).map(|()| s))
            .and_then(|s| s.set_read_timeout(Some(BLOCKING_POLL)).map(|()| s))
        {
            Ok(s) => s,
            Err(e) => {
                if stats.reject("socket_failed") {
                    warn!(peer = %peer, error = %e, "cannot set up a lock-step TFTP session socket (rate-limited log)");
                }
                return;
            }
        };
        let shared = Arc::clone(&shared);
        let token = token.clone();
        let base = std::time::Instant::now();
        let done = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            drive_blocking(
                &mut session,
                &std_socket,
                BlockReader::new(file.file),
                base,
                &shared.stats,
                &token,
            );
        })
        .await;
        if let Err(e) = done {
            warn!(peer = %peer, error = %e, "TFTP session thread failed");
        }
        return;
    }
    drive(
        &mut session,
        &socket,
        BlockReader::new(file.file),
        base,
        stats,
        &token,
    )
    .instrument(span)
    .await;
}

/// Feeds a datagram received on a session's socket to the session, counting and logging
/// what it ignores. True when the sender, another transfer ID, should get ERROR 5 (within the
/// session's stray-reply budget).
fn feed(
    session: &mut Session,
    from: SocketAddr,
    bytes: &[u8],
    now: Instant,
    stats: &TftpStats,
    stray_replies: &mut ReplyBudget,
) -> bool {
    match session.handle(from, bytes, now) {
        Handled::StrayTid => {
            if stats.reject("stray_tid") {
                warn!(stray = %from, "TFTP packet from an unknown transfer ID (rate-limited log)");
            }
            stray_replies.allow(tokio::time::Instant::now())
        }
        Handled::Ignored(reason) => {
            if stats.reject(reason) {
                debug!(reason, "TFTP packet ignored in session (rate-limited log)");
            }
            false
        }
        Handled::Progress | Handled::Aborted(_) => false,
    }
}

/// How long a lock-step session's thread blocks in one receive before it looks at its
/// retransmission deadline and the shutdown token again.
const BLOCKING_POLL: Duration = Duration::from_millis(50);

/// [`drive`] for a lock-step session on its own thread: blocking receives with a short
/// timeout, the same pure [`Session`], the same outcomes.
fn drive_blocking(
    session: &mut Session,
    socket: &std::net::UdpSocket,
    mut reader: BlockReader,
    base: std::time::Instant,
    stats: &TftpStats,
    token: &CancellationToken,
) {
    use std::sync::atomic::Ordering::Relaxed;
    debug!("TFTP transfer started (lock-step thread)");
    let now = || Instant::from_duration(base.elapsed());
    let peer = session.peer();
    let mut out = Vec::with_capacity(usize::from(session.blksize()) + 4);
    let mut rbuf = vec![0u8; SESSION_BUF];
    let mut stray_replies = ReplyBudget::default();
    let send = |out: &[u8], to: SocketAddr| {
        if let Err(e) = socket.send_to(out, to)
            && stats.reject("send_failed")
        {
            debug!(error = %e, "TFTP send failed (rate-limited log)");
        }
    };
    let end = loop {
        if token.is_cancelled() {
            break Err("cancelled");
        }
        let mut read_failed = false;
        while let Some(tx) = session.poll_transmit() {
            out.clear();
            match tx {
                Transmit::Oack(bytes) => out.extend_from_slice(bytes),
                Transmit::Data { block, offset, len } => match reader.read_blocking(offset, len) {
                    Ok(data) => {
                        packet::encode_data(block, data, &mut out);
                        stats.data_sent.fetch_add(1, Relaxed);
                        stats.bytes_sent.fetch_add(len as u64, Relaxed);
                    }
                    Err(e) => {
                        if stats.reject("read_failed") {
                            warn!(error = %e, offset, "reading a served file failed");
                        }
                        read_failed = true;
                        break;
                    }
                },
            }
            send(&out, peer);
        }
        if read_failed {
            out.clear();
            packet::encode_error(ErrorCode::NotDefined, "read error", &mut out);
            send(&out, peer);
            break Err("read_failed");
        }
        if session.status().is_finished() {
            break Ok(());
        }
        if session.poll_at().is_some_and(|d| d <= now()) {
            session.on_timeout(now());
            continue;
        }
        match socket.recv_from(&mut rbuf) {
            Ok((n, from)) => {
                let bytes = rbuf.get(..n).unwrap_or_default();
                if feed(session, from, bytes, now(), stats, &mut stray_replies) {
                    out.clear();
                    packet::encode_error(ErrorCode::UnknownTid, "unknown transfer ID", &mut out);
                    send(&out, from);
                }
            }
            // The poll interval passed: look at the deadline and the token again.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                if stats.reject("recv_failed") {
                    debug!(error = %e, "TFTP session receive failed (rate-limited log)");
                }
                // Transient by nature on UDP; pause so a persistent error cannot spin.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    record_end(end, session, stats);
}

/// Runs a started session to its end and records the outcome.
async fn drive(
    session: &mut Session,
    socket: &UdpSocket,
    mut reader: BlockReader,
    base: tokio::time::Instant,
    stats: &TftpStats,
    token: &CancellationToken,
) {
    debug!("TFTP transfer started");
    let now = || Instant::from_duration(base.elapsed());
    let peer = session.peer();
    let mut out = Vec::with_capacity(usize::from(session.blksize()) + 4);
    let mut rbuf = vec![0u8; SESSION_BUF];
    let mut stray_replies = ReplyBudget::default();
    // Created once, not per packet: a fresh `cancelled()` registers (and drops) a waiter
    // under the token's lock and a fresh `sleep_until` a timer entry, on every block of a
    // lock-step transfer.
    let cancelled = token.cancelled();
    tokio::pin!(cancelled);
    let timer = tokio::time::sleep_until(base);
    tokio::pin!(timer);
    let end = loop {
        if let Err(reason) = flush(session, socket, &mut reader, &mut out, stats).await {
            reply_error(socket, peer, ErrorCode::NotDefined, "read error").await;
            break Err(reason);
        }
        if session.status().is_finished() {
            break Ok(());
        }
        let deadline = session.poll_at().map_or(base, |d| base + d.since_epoch());
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            () = &mut cancelled => break Err("cancelled"),
            r = socket.recv_from(&mut rbuf) => match r {
                Ok((n, from)) => {
                    let bytes = rbuf.get(..n).unwrap_or_default();
                    if feed(session, from, bytes, now(), stats, &mut stray_replies) {
                        reply_error(socket, from, ErrorCode::UnknownTid, "unknown transfer ID").await;
                    }
                }
                Err(e) => {
                    if stats.reject("recv_failed") {
                        debug!(error = %e, "TFTP session receive failed (rate-limited log)");
                    }
                    // Transient by nature on UDP; pause so a persistent error cannot spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            () = &mut timer => session.on_timeout(now()),
        }
    };
    record_end(end, session, stats);
}

/// Counts and logs how a session ended.
fn record_end(end: Result<(), &'static str>, session: &Session, stats: &TftpStats) {
    use std::sync::atomic::Ordering::Relaxed;
    match (end, session.status()) {
        (Ok(()), Status::Complete) => {
            stats.sessions_completed.fetch_add(1, Relaxed);
            debug!(blocks = session.blocks_acked(), "TFTP transfer complete");
        }
        (Ok(()), Status::PeerAborted(code)) => {
            stats.sessions_aborted_by_peer.fetch_add(1, Relaxed);
            debug!(code, "TFTP transfer aborted by the client");
        }
        (Ok(()), _) => {
            stats.sessions_timed_out.fetch_add(1, Relaxed);
            info!(
                blocks = session.blocks_acked(),
                "TFTP transfer timed out: no ACK after the retry limit"
            );
        }
        (Err("cancelled"), _) => {
            stats.sessions_cancelled.fetch_add(1, Relaxed);
        }
        (Err(reason), _) => {
            stats.sessions_failed.fetch_add(1, Relaxed);
            warn!(reason, "TFTP transfer failed");
        }
    }
}

/// Sends everything the session has queued. Fails only when the file cannot be read.
async fn flush(
    session: &mut Session,
    socket: &UdpSocket,
    reader: &mut BlockReader,
    out: &mut Vec<u8>,
    stats: &TftpStats,
) -> Result<(), &'static str> {
    use std::sync::atomic::Ordering::Relaxed;
    let peer = session.peer();
    while let Some(tx) = session.poll_transmit() {
        out.clear();
        match tx {
            Transmit::Oack(bytes) => out.extend_from_slice(bytes),
            Transmit::Data { block, offset, len } => {
                let data = reader.read(offset, len).await.map_err(|e| {
                    if stats.reject("read_failed") {
                        warn!(error = %e, offset, "reading a served file failed");
                    }
                    "read_failed"
                })?;
                packet::encode_data(block, data, out);
                stats.data_sent.fetch_add(1, Relaxed);
                stats.bytes_sent.fetch_add(len as u64, Relaxed);
            }
        }
        // A failed send is a lost packet; the retransmission timer covers it.
        if let Err(e) = socket.send_to(out, peer).await
            && stats.reject("send_failed")
        {
            debug!(error = %e, "TFTP send failed (rate-limited log)");
        }
    }
    Ok(())
}
