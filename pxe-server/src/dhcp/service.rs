//! The DHCP service: sockets on the provisioning interface, the receive loop around the pure
//! [`decide`], lease persistence before every ACK, rogue-server detection, and RAs.
//!
//! One task handles every server-port packet in turn, so the lease table needs no lock and a
//! binding is always persisted (and applied) before the next request is decided. A malformed
//! packet is counted and dropped; nothing a client sends can stop the loop.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
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
    CLIENT_PORT, Decision, IgnoreReason, LeaseView, PXE_PORT, SERVER_PORT, decide,
};
use super::lease::{LeaseOp, LeaseStore, LeaseStoreError, LeaseTable, RateLimiter};
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
    // Best effort: a large receive buffer rides out bursts (storms, mass reboots).
    let _ = s.set_recv_buffer_size(4 << 20);
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

struct Server<S: LeaseStore> {
    policy: Policy,
    table: LeaseTable,
    limiter: RateLimiter,
    store: Arc<S>,
    known: Arc<dyn KnownClients>,
    shared: Arc<DhcpShared>,
    own_mac: Option<Mac>,
    logs: LogLimiter,
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
        limiter: RateLimiter::new(config.rate_limit_max, config.rate_limit_window_ms, 65_536),
        policy,
        table,
        store,
        known,
        shared,
        own_mac: sockets.mac,
        logs: LogLimiter::default(),
    };
    let mut buf67 = vec![0u8; 4096];
    let mut buf4011 = vec![0u8; 4096];
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            r = server_sock.recv_from(&mut buf67) => {
                if let Ok((n, from)) = r {
                    let raw = buf67.get(..n).unwrap_or(&[]);
                    server.handle(raw, from, SERVER_PORT, &server_sock).await;
                }
            }
            r = recv_opt(pxe_sock.as_ref(), &mut buf4011) => {
                if let (Ok((n, from)), Some(sock)) = (r, pxe_sock.as_ref()) {
                    let raw = buf4011.get(..n).unwrap_or(&[]);
                    server.handle(raw, from, PXE_PORT, sock).await;
                }
            }
            _ = housekeeping.tick() => server.table.prune(now_ms()),
        }
    }
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    tracing::info!("DHCP service stopped");
    Ok(())
}

async fn recv_opt(
    sock: Option<&UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

impl<S: LeaseStore> Server<S> {
    async fn handle(&mut self, raw: &[u8], from: SocketAddr, local_port: u16, sock: &UdpSocket) {
        let shared = self.shared.clone();
        let stats = &shared.stats;
        stats.received.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let SocketAddr::V4(src) = from else { return };
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
                if self.send(&reply, sock).await {
                    stats.offers.fetch_add(1, Ordering::Relaxed);
                }
            }
            Decision::Ack { reply, boot, ops } => {
                if !self.persist(&ops, req.mac, now).await {
                    return;
                }
                for op in &ops {
                    self.table.apply(op, known);
                }
                self.log_boot(req.mac, &boot, now);
                if self.send(&reply, sock).await {
                    stats.acks.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(mac = %req.mac, ip = %reply.yiaddr, boot = ?boot.file(), "DHCPACK");
                }
            }
            Decision::Nak { reason, reply } => {
                tracing::info!(mac = %req.mac, reason = reason.code(), "DHCPNAK");
                if self.send(&reply, sock).await {
                    stats.naks.fetch_add(1, Ordering::Relaxed);
                }
            }
            Decision::Record { event, ops } => {
                if self.persist(&ops, req.mac, now).await {
                    for op in &ops {
                        self.table.apply(op, known);
                    }
                    stats.recorded.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(mac = %req.mac, event = event.code(), "DHCP lease change");
                }
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

    /// Persist every Upsert/Remove in order; false (and no reply) on the first failure.
    async fn persist(&mut self, ops: &[LeaseOp], mac: Mac, now: i64) -> bool {
        for op in ops {
            let r = match op {
                LeaseOp::Upsert(l) => self.store.upsert(l).await,
                LeaseOp::Remove(m) => self.store.remove(*m).await,
                LeaseOp::Hold { .. } => Ok(()),
            };
            if let Err(e) = r {
                self.shared
                    .stats
                    .persist_failed
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = self.logs.check("persist_failed", now) {
                    tracing::error!(%mac, error = %error_chain(&e), suppressed, "persisting DHCP lease failed; no reply sent");
                }
                return false;
            }
        }
        true
    }

    async fn send(&mut self, reply: &Reply, sock: &UdpSocket) -> bool {
        let dest = match reply.dest {
            Destination::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT),
            Destination::Unicast(a) => a,
        };
        let sent = match wire::encode_reply(reply) {
            Ok(bytes) => sock
                .send_to(&bytes, dest)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(error_chain(&e)),
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
