//! The DHCP service: sockets on the provisioning interface, the receive loop around the pure
//! [`decide`], lease persistence before every ACK, rogue-server detection, and RAs.
//!
//! One task handles every server-port packet in turn, so the lease table needs no lock. It
//! drains each socket without a task or channel per packet. A binding (ACK, RELEASE,
//! DECLINE) is applied to the table when decided, so the next decisions see it, and queued;
//! the queue goes to the store as one transaction (group commit) whenever no write is in
//! flight, and the held-back ACKs go out only once that transaction has committed (paced, so
//! a slow commit does not release them in one burst). If it
//! fails, no ACK of that batch (or of the requests queued behind it) is sent and their
//! bindings are taken back out of the table. DISCOVERs are answered while a write is in
//! flight. A malformed packet is counted and dropped; nothing a client sends can stop the loop.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pxe_api::Mac;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::boot::{BootChoice, NoBootReason};
use super::config::{ConfigError, DhcpConfig, DhcpMode, Policy};
use super::decide::{
    CLIENT_PORT, Decision, IgnoreReason, LeaseView, PXE_PORT, RecordEvent, SERVER_PORT, decide,
};
use super::lease::{LeaseOp, LeaseStore, LeaseStoreError, LeaseTable, RateLimiter, Undo};
use super::stats::DhcpShared;
use super::wire::{self, Arrival, Destination};
use super::{ra, wire::Reply};

/// Whether the inventory knows a MAC (supplied by the caller; must be cheap and non-blocking).
pub trait KnownClients: Send + Sync {
    /// True if `mac` belongs to a machine in the inventory.
    fn is_known(&self, mac: Mac) -> bool;
}

impl<F: Fn(Mac) -> bool + Send + Sync> KnownClients for F {
    fn is_known(&self, mac: Mac) -> bool {
        self(mac)
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum DhcpServiceError {
    /// The configuration is invalid.
    #[error("invalid DHCP configuration")]
    Config(#[source] ConfigError),
    /// Creating, configuring or binding a socket failed.
    #[error("DHCP socket setup failed: {what} (interface {iface:?})")]
    Socket {
        /// Which step.
        what: &'static str,
        /// Interface.
        iface: Option<String>,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Loading the leases failed.
    #[error("loading DHCP leases failed")]
    LoadLeases(#[source] LeaseStoreError),
}

/// Bound sockets for the service. Create them with [`DhcpSockets::bind`] (in the network
/// namespace of the provisioning interface), then hand them to [`serve`].
#[derive(Debug)]
pub struct DhcpSockets {
    server: std::net::UdpSocket,
    pxe: Option<std::net::UdpSocket>,
    client: Option<std::net::UdpSocket>,
    ra: Option<std::net::UdpSocket>,
    ifindex: u32,
    mac: Option<Mac>,
}

fn sock_err(
    what: &'static str,
    iface: &Option<String>,
) -> impl FnOnce(std::io::Error) -> DhcpServiceError {
    let iface = iface.clone();
    move |source| DhcpServiceError::Socket {
        what,
        iface,
        source,
    }
}

/// Requested socket buffer size (the kernel doubles it for bookkeeping).
const SOCKET_BUFFER: usize = 4 << 20;

fn udp4(port: u16, iface: &Option<String>) -> Result<std::net::UdpSocket, DhcpServiceError> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(sock_err("socket", iface))?;
    s.set_reuse_address(true)
        .map_err(sock_err("SO_REUSEADDR", iface))?;
    s.set_broadcast(true)
        .map_err(sock_err("SO_BROADCAST", iface))?;
    if let Some(name) = iface {
        s.bind_device(Some(name.as_bytes()))
            .map_err(sock_err("SO_BINDTODEVICE", iface))?;
    }
    // Best effort: large buffers ride out bursts (storms, mass reboots) while the loop is
    // busy; past `net.core.rmem_max` only with CAP_NET_ADMIN (SO_RCVBUFFORCE).
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    if s.recv_buffer_size().is_ok_and(|n| n < SOCKET_BUFFER) {
        let _ = nix::sys::socket::setsockopt(
            &s,
            nix::sys::socket::sockopt::RcvBufForce,
            &SOCKET_BUFFER,
        );
    }
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.set_nonblocking(true)
        .map_err(sock_err("O_NONBLOCK", iface))?;
    let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
    s.bind(&addr.into()).map_err(sock_err("bind", iface))?;
    Ok(s.into())
}

fn ra_socket(
    iface: &Option<String>,
    ifindex: u32,
) -> Result<std::net::UdpSocket, DhcpServiceError> {
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
        .map_err(sock_err("raw ICMPv6 socket", iface))?;
    if let Some(name) = iface {
        s.bind_device(Some(name.as_bytes()))
            .map_err(sock_err("SO_BINDTODEVICE (ICMPv6)", iface))?;
    }
    s.set_multicast_hops_v6(255)
        .map_err(sock_err("IPV6_MULTICAST_HOPS", iface))?;
    s.set_unicast_hops_v6(255)
        .map_err(sock_err("IPV6_UNICAST_HOPS", iface))?;
    s.set_multicast_if_v6(ifindex)
        .map_err(sock_err("IPV6_MULTICAST_IF", iface))?;
    s.set_multicast_loop_v6(false)
        .map_err(sock_err("IPV6_MULTICAST_LOOP", iface))?;
    s.join_multicast_v6(&ra::ALL_ROUTERS, ifindex)
        .map_err(sock_err("join ff02::2", iface))?;
    s.set_nonblocking(true)
        .map_err(sock_err("O_NONBLOCK (ICMPv6)", iface))?;
    // A raw socket driven through tokio's UdpSocket: only recv_from/send_to are used.
    Ok(s.into())
}

/// The MAC and index of `iface`, looked up in the calling thread's network namespace.
fn interface_info(iface: &str) -> Result<(u32, Option<Mac>), DhcpServiceError> {
    let some = Some(iface.to_owned());
    let ifindex = nix::net::if_::if_nametoindex(iface).map_err(|e| DhcpServiceError::Socket {
        what: "if_nametoindex",
        iface: some.clone(),
        source: e.into(),
    })?;
    let mut mac = None;
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            if a.interface_name != iface {
                continue;
            }
            if let Some(ll) = a
                .address
                .as_ref()
                .and_then(|s| s.as_link_addr())
                .and_then(|l| l.addr())
            {
                mac = Some(Mac(ll));
            }
        }
    }
    Ok((ifindex, mac))
}

impl DhcpSockets {
    /// Bind the sockets the configuration needs: UDP 67 always; UDP 4011 in proxy mode;
    /// UDP 68 for rogue detection (best effort: skipped with a warning if taken); a raw
    /// ICMPv6 socket when RAs are on and an interface is named (best effort as well).
    pub fn bind(config: &DhcpConfig) -> Result<DhcpSockets, DhcpServiceError> {
        let iface = &config.interface;
        let (ifindex, mac) = match iface {
            Some(name) => interface_info(name)?,
            None => (0, None),
        };
        let server = udp4(SERVER_PORT, iface)?;
        let pxe = if config.mode == DhcpMode::Proxy {
            Some(udp4(PXE_PORT, iface)?)
        } else {
            None
        };
        let client = match udp4(CLIENT_PORT, iface) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "rogue DHCP detection disabled: cannot listen on UDP 68");
                None
            }
        };
        let ra = if config.router_advertisements && ifindex != 0 {
            match ra_socket(iface, ifindex) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "IPv6 router advertisements disabled");
                    None
                }
            }
        } else {
            None
        };
        Ok(DhcpSockets {
            server,
            pxe,
            client,
            ra,
            ifindex,
            mac,
        })
    }

    /// The provisioning interface's MAC, if an interface was named.
    pub fn interface_mac(&self) -> Option<Mac> {
        self.mac
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// At most one log line per key per 10 s, with a count of the suppressed ones.
#[derive(Debug, Default)]
struct LogLimiter {
    last: HashMap<&'static str, (i64, u64)>,
}

impl LogLimiter {
    /// `Some(suppressed)` if a line may be logged now.
    fn check(&mut self, key: &'static str, now: i64) -> Option<u64> {
        let e = self.last.entry(key).or_insert((i64::MIN, 0));
        if now.saturating_sub(e.0) >= 10_000 {
            let suppressed = e.1;
            *e = (now, 0);
            Some(suppressed)
        } else {
            e.1 = e.1.saturating_add(1);
            None
        }
    }
}

/// Which server socket a packet came in on (and its reply goes out on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    /// UDP 67.
    Server,
    /// UDP 4011 (proxy mode).
    Pxe,
}

/// The service's sockets, borrowed for one packet or one finished commit.
#[derive(Debug, Clone, Copy)]
struct Socks<'a> {
    server: &'a UdpSocket,
    pxe: Option<&'a UdpSocket>,
}

impl Socks<'_> {
    fn get(&self, port: Port) -> Option<&UdpSocket> {
        match port {
            Port::Server => Some(self.server),
            Port::Pxe => self.pxe,
        }
    }
}

/// What to do once a request's lease writes are durable.
#[derive(Debug)]
enum AfterCommit {
    /// Send this DHCPACK.
    Ack { reply: Reply, port: Port },
    /// Count and log a RELEASE/DECLINE.
    Record(RecordEvent),
}

/// A decided request whose lease writes are applied to the table (optimistically) but not
/// yet durable. Its reply is held back until the batch carrying its writes commits.
#[derive(Debug)]
struct Pending {
    mac: Mac,
    /// The Upsert/Remove ops to persist, in order (moved out when the commit starts).
    ops: Vec<LeaseOp>,
    /// How to take the ops back out of the table if the write fails, in apply order.
    undo: Vec<Undo>,
    then: AfterCommit,
}

/// The store write in flight (one transaction for a whole batch of requests).
type Commit = Pin<Box<dyn Future<Output = Result<(), LeaseStoreError>> + Send>>;

/// Packets handled per socket wake-up before the loop looks at its other events again.
const RECV_BATCH: usize = 64;

/// Committed ACKs sent at once (when the commit ends, and then every [`ACK_PACE`]); between
/// those, one more goes out per packet received. A commit that took long (a slow fsync)
/// releases hundreds of ACKs; sent back to back they overflow the receive buffers of relays
/// and clients, spread out like this they do not.
const ACK_SLICE: usize = 16;
/// Interval of the ACK pacing tick.
const ACK_PACE: Duration = Duration::from_millis(1);

struct Server<S: LeaseStore> {
    policy: Policy,
    table: LeaseTable,
    limiter: RateLimiter,
    store: Arc<S>,
    known: Arc<dyn KnownClients>,
    shared: Arc<DhcpShared>,
    own_mac: Option<Mac>,
    logs: LogLimiter,
    /// Decided requests waiting for the next commit, in decision order.
    queue: Vec<Pending>,
    /// Committed ACKs not sent yet (paced, see [`ACK_SLICE`]).
    outbox: VecDeque<(Reply, Port)>,
}

/// Run the DHCP service until `shutdown` is cancelled.
///
/// Loads all leases from `store` first. Every binding is persisted through `store` before
/// its DHCPACK is sent; if persisting fails, no ACK is sent (the client retries).
///
/// `known` says whether the inventory knows a MAC (unknown MACs share a bounded part of the
/// pool). `shared` carries the counters and the rogue-server record for the API: keep a
/// clone and read [`DhcpShared::rogue_servers`] / [`DhcpShared::stats`]. In proxy mode the
/// segment's own address server shows up among the rogue servers too (with `proxy == false`);
/// a health check there should only flag foreign servers that hand out boot information.
///
/// Typical wiring:
/// ```no_run
/// # async fn f(cfg: pxe_server::dhcp::DhcpConfig) -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use pxe_server::dhcp::{DhcpShared, DhcpSockets, KnownClients, MemLeaseStore, serve};
/// let sockets = DhcpSockets::bind(&cfg)?;
/// let shared = Arc::new(DhcpShared::new());
/// let known: Arc<dyn KnownClients> = Arc::new(|_mac: pxe_api::Mac| false);
/// let token = tokio_util::sync::CancellationToken::new();
/// serve(sockets, cfg, Arc::new(MemLeaseStore::new()), known, shared.clone(), token).await?;
/// # Ok(()) }
/// ```
pub async fn serve<S: LeaseStore>(
    sockets: DhcpSockets,
    config: DhcpConfig,
    store: Arc<S>,
    known: Arc<dyn KnownClients>,
    shared: Arc<DhcpShared>,
    shutdown: CancellationToken,
) -> Result<(), DhcpServiceError> {
    let policy = Policy::from_config(&config).map_err(DhcpServiceError::Config)?;
    if policy.mode == DhcpMode::Off {
        shutdown.cancelled().await;
        return Ok(());
    }
    let rows = store
        .load_all()
        .await
        .map_err(DhcpServiceError::LoadLeases)?;
    let table = LeaseTable::from_leases(rows, &|m| known.is_known(m));
    let iface = config.interface.clone();
    let to_tokio = |s: std::net::UdpSocket, what: &'static str| {
        UdpSocket::from_std(s).map_err(|source| DhcpServiceError::Socket {
            what,
            iface: iface.clone(),
            source,
        })
    };
    let server_sock = to_tokio(sockets.server, "register UDP 67")?;
    let pxe_sock = sockets
        .pxe
        .map(|s| to_tokio(s, "register UDP 4011"))
        .transpose()?;
    let client_sock = sockets
        .client
        .map(|s| to_tokio(s, "register UDP 68"))
        .transpose()?;
    let ra_sock = sockets
        .ra
        .map(|s| to_tokio(s, "register ICMPv6"))
        .transpose()?;

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(sock) = ra_sock {
        let interval = Duration::from_millis(config.ra_interval_ms);
        tasks.spawn(ra::run(
            sock,
            sockets.ifindex,
            sockets.mac,
            interval,
            shared.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(sock) = client_sock {
        let probe = config
            .rogue_probe_interval_ms
            .map(Duration::from_millis)
            .zip(sockets.mac);
        tasks.spawn(rogue_watch(
            sock,
            policy.server_ip,
            probe,
            shared.clone(),
            shutdown.clone(),
        ));
    }
    tracing::info!(
        mode = policy.mode.as_str(),
        server_ip = %policy.server_ip,
        interface = ?config.interface,
        leases = table.len(),
        "DHCP service started"
    );
    let mut server = Server {
        limiter: RateLimiter::new(
            config.rate_limit_max,
            config.rate_limit_window_ms,
            usize::try_from(config.rate_limit_tracked_macs).unwrap_or(usize::MAX),
        ),
        policy,
        table,
        store,
        known,
        shared,
        own_mac: sockets.mac,
        logs: LogLimiter::default(),
        queue: Vec::new(),
        outbox: VecDeque::new(),
    };
    let socks = Socks {
        server: &server_sock,
        pxe: pxe_sock.as_ref(),
    };
    let mut buf = vec![0u8; 4096];
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
    let mut pace = tokio::time::interval(ACK_PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Group commit: at most one store write in flight; requests decided meanwhile queue up
    // and go out together in the next one. OFFERs never wait for a write.
    let mut commit: Option<Commit> = None;
    let mut inflight: Vec<Pending> = Vec::new();
    loop {
        if commit.is_none()
            && let Some((batch, c)) = server.start_commit()
        {
            inflight = batch;
            commit = Some(c);
        }
        // Unbiased: a flood on one port must not starve the other or the commit.
        tokio::select! {
            () = shutdown.cancelled() => break,
            r = async {
                match commit.as_mut() {
                    Some(c) => c.await,
                    None => std::future::pending().await,
                }
            }, if commit.is_some() => {
                commit = None;
                let batch = std::mem::take(&mut inflight);
                server.finish(batch, r, socks).await;
            }
            r = server_sock.readable() => {
                if r.is_ok() {
                    server.drain(Port::Server, &mut buf, socks).await;
                }
            }
            r = readable_opt(pxe_sock.as_ref()) => {
                if r.is_ok() {
                    server.drain(Port::Pxe, &mut buf, socks).await;
                }
            }
            _ = pace.tick(), if !server.outbox.is_empty() => {
                server.flush(ACK_SLICE, socks).await;
            }
            _ = housekeeping.tick() => server.table.prune(now_ms()),
        }
    }
    // Let the write in flight finish (bounded) so its clients get their ACKs; requests still
    // queued get none and retry with the next server.
    if let Some(c) = commit.take()
        && let Ok(r) = tokio::time::timeout(Duration::from_secs(5), c).await
    {
        server.finish(std::mem::take(&mut inflight), r, socks).await;
    }
    server.flush(usize::MAX, socks).await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    tracing::info!("DHCP service stopped");
    Ok(())
}

async fn readable_opt(sock: Option<&UdpSocket>) -> std::io::Result<()> {
    match sock {
        Some(s) => s.readable().await,
        None => std::future::pending().await,
    }
}

/// Send `bytes` to `dest`: straight away when the socket has room (the usual case), else
/// wait for it.
async fn send_datagram(sock: &UdpSocket, bytes: &[u8], dest: SocketAddrV4) -> std::io::Result<()> {
    let dest = SocketAddr::V4(dest);
    match sock.try_send_to(bytes, dest) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            sock.send_to(bytes, dest).await.map(|_| ())
        }
        r => r.map(|_| ()),
    }
}

impl<S: LeaseStore> Server<S> {
    /// Handle every datagram waiting on `port` (up to [`RECV_BATCH`]).
    async fn drain(&mut self, port: Port, buf: &mut [u8], socks: Socks<'_>) {
        let Some(sock) = socks.get(port) else { return };
        self.table.prune(now_ms());
        for _ in 0..RECV_BATCH {
            match sock.try_recv_from(buf) {
                Ok((n, from)) => {
                    let raw = buf.get(..n).unwrap_or(&[]);
                    self.handle(raw, from, port, socks).await;
                    self.flush(1, socks).await;
                }
                // WouldBlock: drained (tokio re-arms readiness); other errors (ICMP
                // feedback and the like) are the socket's business, not a packet's.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
    }

    async fn handle(&mut self, raw: &[u8], from: SocketAddr, port: Port, socks: Socks<'_>) {
        let shared = self.shared.clone();
        let stats = &shared.stats;
        stats.received.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let SocketAddr::V4(src) = from else { return };
        let local_port = match port {
            Port::Server => SERVER_PORT,
            Port::Pxe => PXE_PORT,
        };
        let req = match wire::parse_request(raw, Arrival { local_port, src }) {
            Ok(r) => r,
            Err(reason) => {
                stats.count_malformed(reason);
                if let Some(suppressed) = self.logs.check(reason.code(), now) {
                    tracing::info!(reason = reason.code(), %src, len = raw.len(), suppressed, "dropped malformed DHCP packet");
                }
                return;
            }
        };
        if Some(req.mac) == self.own_mac {
            return; // our own rogue-detection probe
        }
        let known = self.known.is_known(req.mac);
        let allowed = self.limiter.allow(req.mac, known, now);
        let view = LeaseView {
            table: &self.table,
            known,
            rate_limited: !allowed,
        };
        let decision = decide(&req, &view, &self.policy, now);
        tracing::debug!(mac = %req.mac, xid = req.xid, msg = ?req.msg, decision = %decision, "DHCP request");
        match decision {
            Decision::Offer { reply, boot, ops } => {
                self.log_boot(req.mac, &boot, now);
                for op in &ops {
                    self.table.apply(op, known);
                }
                if self.send(&reply, socks.get(port)).await {
                    stats.offers.fetch_add(1, Ordering::Relaxed);
                }
            }
            Decision::Ack { reply, boot, ops } => {
                self.log_boot(req.mac, &boot, now);
                if ops.is_empty() {
                    // Nothing to persist (INFORM, proxyDHCP): answer now.
                    if self.send(&reply, socks.get(port)).await {
                        stats.acks.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    self.enqueue(req.mac, ops, known, AfterCommit::Ack { reply, port });
                }
            }
            Decision::Nak { reason, reply } => {
                tracing::info!(mac = %req.mac, reason = reason.code(), "DHCPNAK");
                if self.send(&reply, socks.get(port)).await {
                    stats.naks.fetch_add(1, Ordering::Relaxed);
                }
            }
            Decision::Record { event, ops } => {
                self.enqueue(req.mac, ops, known, AfterCommit::Record(event));
            }
            Decision::Ignore { reason } => {
                stats.ignored.fetch_add(1, Ordering::Relaxed);
                if reason == IgnoreReason::RateLimited {
                    stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(suppressed) = self.logs.check(reason.code(), now) {
                    tracing::debug!(mac = %req.mac, reason = reason.code(), suppressed, "DHCP request ignored");
                }
            }
        }
    }

    /// Apply `ops` to the table now (so the next decisions see the binding) and queue them
    /// for the next commit; the reply waits for that commit.
    fn enqueue(&mut self, mac: Mac, ops: Vec<LeaseOp>, known: bool, then: AfterCommit) {
        let ops: Vec<LeaseOp> = ops
            .into_iter()
            .filter(|op| !matches!(op, LeaseOp::Hold { .. }))
            .collect();
        let undo = ops
            .iter()
            .map(|op| self.table.apply_tracked(op, known))
            .collect();
        self.queue.push(Pending {
            mac,
            ops,
            undo,
            then,
        });
    }

    /// Take everything queued as one batch and start its store write, if anything is queued.
    fn start_commit(&mut self) -> Option<(Vec<Pending>, Commit)> {
        if self.queue.is_empty() {
            return None;
        }
        let mut batch = std::mem::take(&mut self.queue);
        // Moved, not cloned: once queued for the store, a request needs only its undo list
        // and its reply.
        let ops: Vec<LeaseOp> = batch
            .iter_mut()
            .flat_map(|p| std::mem::take(&mut p.ops))
            .collect();
        let store = self.store.clone();
        Some((
            batch,
            Box::pin(async move { store.write_batch(&ops).await }),
        ))
    }

    /// A commit ended. On success send the batch's ACKs; on failure send nothing, and take
    /// the batch's and every queued request's writes back out of the table (the queued ones
    /// were decided on top of the failed ones).
    async fn finish(
        &mut self,
        batch: Vec<Pending>,
        result: Result<(), LeaseStoreError>,
        socks: Socks<'_>,
    ) {
        let now = now_ms();
        if let Err(e) = result {
            let mut dropped = batch;
            dropped.append(&mut self.queue);
            let n = u64::try_from(dropped.len()).unwrap_or(u64::MAX);
            self.shared
                .stats
                .persist_failed
                .fetch_add(n, Ordering::Relaxed);
            if let Some(suppressed) = self.logs.check("persist_failed", now) {
                tracing::error!(requests = n, error = %error_chain(&e), suppressed, "persisting DHCP leases failed; no reply sent");
            }
            for p in dropped.into_iter().rev() {
                for u in p.undo.into_iter().rev() {
                    self.table.revert(u);
                }
            }
            return;
        }
        for p in batch {
            match p.then {
                AfterCommit::Ack { reply, port } => self.outbox.push_back((reply, port)),
                AfterCommit::Record(event) => {
                    self.shared.stats.recorded.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(mac = %p.mac, event = event.code(), "DHCP lease change");
                }
            }
        }
        self.flush(ACK_SLICE, socks).await;
    }

    /// Send up to `n` committed ACKs, oldest first.
    async fn flush(&mut self, n: usize, socks: Socks<'_>) {
        for _ in 0..n {
            let Some((reply, port)) = self.outbox.pop_front() else {
                return;
            };
            if self.send(&reply, socks.get(port)).await {
                self.shared.stats.acks.fetch_add(1, Ordering::Relaxed);
                tracing::info!(mac = %reply.mac, ip = %reply.yiaddr, boot = ?reply.file, "DHCPACK");
            }
        }
    }

    fn log_boot(&mut self, mac: Mac, boot: &BootChoice, now: i64) {
        if let BootChoice::None(
            r @ (NoBootReason::UnknownArch(_)
            | NoBootReason::UnsupportedArch(_)
            | NoBootReason::MissingArch),
        ) = boot
            && let Some(suppressed) = self.logs.check(r.code(), now)
        {
            tracing::warn!(%mac, reason = %r, suppressed, "PXE client gets no boot file");
        }
    }

    async fn send(&mut self, reply: &Reply, sock: Option<&UdpSocket>) -> bool {
        let dest = match reply.dest {
            Destination::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT),
            Destination::Unicast(a) => a,
        };
        let sent = match (wire::encode_reply(reply), sock) {
            (Ok(bytes), Some(sock)) => send_datagram(sock, &bytes, dest)
                .await
                .map_err(|e| e.to_string()),
            (Ok(_), None) => Err("no socket for the reply".to_owned()),
            (Err(e), _) => Err(error_chain(&e)),
        };
        match sent {
            Ok(()) => true,
            Err(e) => {
                self.shared
                    .stats
                    .send_failed
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = self.logs.check("send_failed", now_ms()) {
                    tracing::warn!(%dest, error = %e, suppressed, "sending DHCP reply failed");
                }
                false
            }
        }
    }
}

/// Listen on UDP 68 for OFFER/ACKs from other servers; optionally probe with a DISCOVER from
/// the interface's own MAC (which our own server ignores).
async fn rogue_watch(
    sock: UdpSocket,
    our_id: Ipv4Addr,
    probe: Option<(Duration, Mac)>,
    shared: Arc<DhcpShared>,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; 4096];
    let period = probe.map_or(Duration::from_secs(3600), |(d, _)| {
        d.max(Duration::from_secs(1))
    });
    let mut tick = tokio::time::interval(period);
    let mut xid: u32 = 0x5241_0000;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                let Some((_, mac)) = probe else { continue };
                xid = xid.wrapping_add(1);
                if let Ok(bytes) = wire::encode_discover(xid, mac, true) {
                    let dest = SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT);
                    if sock.send_to(&bytes, dest).await.is_ok() {
                        shared.stats.probes_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            r = sock.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let Some(seen) = buf.get(..n).and_then(wire::parse_server_reply) else { continue };
                let id = seen.server_id.unwrap_or(match from {
                    SocketAddr::V4(a) => *a.ip(),
                    SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
                });
                if id == our_id {
                    continue;
                }
                shared.stats.rogue_replies.fetch_add(1, Ordering::Relaxed);
                let first = !shared.rogue.servers().iter().any(|s| s.server_id == id);
                shared.rogue.note(id, seen.pxe && seen.yiaddr.is_unspecified(), now_ms());
                if first {
                    tracing::warn!(server_id = %id, ack = seen.is_ack, "another DHCP server answers on the provisioning network");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::lease::{Lease, LeaseState, MemLeaseStore};
    use crate::dhcp::wire::ReplyKind;

    fn test_server(store: Arc<MemLeaseStore>) -> Server<MemLeaseStore> {
        let mut c = DhcpConfig::new(
            DhcpMode::Full,
            Ipv4Addr::new(10, 99, 0, 1),
            Ipv4Addr::new(10, 99, 0, 100),
            Ipv4Addr::new(10, 99, 0, 199),
        );
        c.http_base = "http://10.99.0.1:8080".into();
        Server {
            policy: Policy::from_config(&c).expect("policy"),
            table: LeaseTable::new(),
            limiter: RateLimiter::new(30, 10_000, 64),
            store,
            known: Arc::new(|_m: Mac| true),
            shared: Arc::new(DhcpShared::new()),
            own_mac: None,
            logs: LogLimiter::default(),
            queue: Vec::new(),
            outbox: VecDeque::new(),
        }
    }

    fn bound(n: u8) -> Lease {
        Lease {
            mac: Mac([2, 0, 0, 0, 0, n]),
            ip: Ipv4Addr::new(10, 99, 0, 100 + n),
            state: LeaseState::Bound,
            expires_at_ms: i64::MAX,
            client_id: None,
            hostname: None,
            updated_at_ms: 1,
        }
    }

    /// An ACK for `l`, addressed to `to` on loopback.
    fn ack_to(l: &Lease, to: SocketAddr) -> AfterCommit {
        let SocketAddr::V4(to) = to else {
            panic!("IPv4 loopback expected")
        };
        AfterCommit::Ack {
            reply: Reply {
                kind: ReplyKind::Ack,
                xid: u32::from(l.mac.0[5]),
                mac: l.mac,
                broadcast: false,
                ciaddr: Ipv4Addr::UNSPECIFIED,
                yiaddr: l.ip,
                siaddr: Ipv4Addr::UNSPECIFIED,
                giaddr: Ipv4Addr::UNSPECIFIED,
                file: None,
                options: vec![(54, vec![10, 99, 0, 1])],
                dest: Destination::Unicast(to),
            },
            port: Port::Server,
        }
    }

    /// The xids of the datagrams that arrive at `sock` within `wait`.
    async fn received_xids(sock: &UdpSocket, wait: Duration) -> Vec<u32> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1500];
        let deadline = tokio::time::Instant::now() + wait;
        for _ in 0..64 {
            match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Ok(Ok(n)) if n >= 8 => {
                    out.push(u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]));
                }
                _ => break,
            }
        }
        out
    }

    /// Group commit over loopback: bindings decided while a write is in flight share the next
    /// transaction; a failing transaction sends none of its ACKs (nor those queued behind it)
    /// and takes their bindings back out of the table; after that the same requests succeed.
    #[tokio::test]
    async fn a_failed_batch_sends_no_ack_and_reverts_its_bindings() {
        let store = Arc::new(MemLeaseStore::new());
        let mut server = test_server(store.clone());
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("server socket");
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client socket");
        let to = client.local_addr().expect("addr");
        let socks = Socks {
            server: &sock,
            pxe: None,
        };
        let (a, b, c) = (bound(1), bound(2), bound(3));
        // Client A held its offer before asking; the hold must come back on failure.
        server.table.apply(
            &LeaseOp::Hold {
                mac: a.mac,
                ip: a.ip,
                until_ms: i64::MAX,
            },
            true,
        );
        server.enqueue(
            a.mac,
            vec![LeaseOp::Upsert(a.clone())],
            true,
            ack_to(&a, to),
        );
        server.enqueue(
            b.mac,
            vec![LeaseOp::Upsert(b.clone())],
            true,
            ack_to(&b, to),
        );
        let (batch, commit) = server.start_commit().expect("a batch");
        assert_eq!(batch.len(), 2, "both bindings in one transaction");
        // Decided while the write is in flight: queued for the next one.
        server.enqueue(
            c.mac,
            vec![LeaseOp::Upsert(c.clone())],
            true,
            ack_to(&c, to),
        );
        assert_eq!(server.table.get(c.mac), Some(&c), "applied when decided");
        store.set_failing(true);
        let r = commit.await;
        assert!(r.is_err());
        server.finish(batch, r, socks).await;
        assert!(
            received_xids(&client, Duration::from_millis(300))
                .await
                .is_empty(),
            "no ACK for an unpersisted binding"
        );
        assert!(server.queue.is_empty(), "the queued request is dropped too");
        assert!(server.start_commit().is_none());
        for l in [&a, &b, &c] {
            assert_eq!(server.table.get(l.mac), None, "{l:?} reverted");
        }
        assert_eq!(
            server.table.hold(a.mac, 0),
            Some(a.ip),
            "A's offer hold is back"
        );
        assert_eq!(
            server.shared.stats.persist_failed.load(Ordering::Relaxed),
            3
        );
        assert!(store.rows().is_empty());

        // The store recovers: the same bindings commit, then (only then) their ACKs go out.
        store.set_failing(false);
        for l in [&a, &b] {
            server.enqueue(l.mac, vec![LeaseOp::Upsert(l.clone())], true, ack_to(l, to));
        }
        let (batch, commit) = server.start_commit().expect("a batch");
        let r = commit.await;
        assert!(r.is_ok());
        assert_eq!(
            store.rows(),
            vec![a.clone(), b.clone()],
            "durable before the ACKs"
        );
        server.finish(batch, r, socks).await;
        assert_eq!(
            received_xids(&client, Duration::from_millis(500)).await,
            vec![1, 2]
        );
        assert_eq!(server.shared.stats.acks.load(Ordering::Relaxed), 2);
        assert_eq!(server.table.get(a.mac), Some(&a));
    }

    #[test]
    fn log_limiter_one_line_per_key_per_ten_seconds() {
        let mut l = LogLimiter::default();
        assert_eq!(l.check("a", 0), Some(0));
        assert_eq!(l.check("a", 5_000), None);
        assert_eq!(l.check("a", 9_999), None);
        assert_eq!(l.check("b", 9_999), Some(0));
        assert_eq!(l.check("a", 10_000), Some(2));
        assert_eq!(l.check("a", 10_001), None);
    }
}
