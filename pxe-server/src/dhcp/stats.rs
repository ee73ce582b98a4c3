//! Counters and the rogue-server record, shared between the service and the API.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::wire::MalformedReason;

/// Atomic counters of the DHCP service.
#[derive(Debug, Default)]
pub struct DhcpStats {
    /// Datagrams received on server ports.
    pub received: AtomicU64,
    /// Dropped as malformed, per [`MalformedReason::index`].
    pub malformed: [AtomicU64; MalformedReason::ALL.len()],
    /// OFFERs sent.
    pub offers: AtomicU64,
    /// ACKs sent.
    pub acks: AtomicU64,
    /// NAKs sent.
    pub naks: AtomicU64,
    /// Requests ignored by the decision (any reason).
    pub ignored: AtomicU64,
    /// Requests refused by the rate limiter.
    pub rate_limited: AtomicU64,
    /// RELEASEs and DECLINEs recorded.
    pub recorded: AtomicU64,
    /// ACKs not sent because persisting the binding failed.
    pub persist_failed: AtomicU64,
    /// Replies that could not be encoded or sent.
    pub send_failed: AtomicU64,
    /// Router advertisements sent.
    pub ra_sent: AtomicU64,
    /// Rogue-server probe DISCOVERs sent.
    pub probes_sent: AtomicU64,
    /// Foreign OFFER/ACKs seen on UDP 68.
    pub rogue_replies: AtomicU64,
}

impl DhcpStats {
    /// Count a malformed packet.
    pub fn count_malformed(&self, r: MalformedReason) {
        if let Some(c) = self.malformed.get(r.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Malformed count for one reason.
    pub fn malformed_count(&self, r: MalformedReason) -> u64 {
        self.malformed
            .get(r.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Total malformed packets.
    pub fn malformed_total(&self) -> u64 {
        self.malformed
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// `(reason code, count)` for every reason, for metrics.
    pub fn malformed_by_reason(&self) -> Vec<(&'static str, u64)> {
        MalformedReason::ALL
            .iter()
            .map(|r| (r.code(), self.malformed_count(*r)))
            .collect()
    }
}

/// A DHCP server other than us seen answering on the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RogueServer {
    /// Its server identifier (option 54), or the packet's source address without one.
    pub server_id: Ipv4Addr,
    /// First seen (Unix ms).
    pub first_seen_ms: i64,
    /// Last seen (Unix ms).
    pub last_seen_ms: i64,
    /// OFFER/ACKs seen.
    pub count: u64,
    /// The last one looked like a proxyDHCP offer (no `yiaddr`, option 60 `PXEClient`).
    pub proxy: bool,
}

/// Record of foreign DHCP servers. Bounded to [`RogueMonitor::MAX_SERVERS`] entries.
#[derive(Debug, Default)]
pub struct RogueMonitor {
    seen: Mutex<BTreeMap<Ipv4Addr, RogueServer>>,
}

impl RogueMonitor {
    /// At most this many distinct servers are remembered.
    pub const MAX_SERVERS: usize = 64;

    /// Note a foreign reply.
    pub fn note(&self, server_id: Ipv4Addr, proxy: bool, now_ms: i64) {
        let Ok(mut m) = self.seen.lock() else { return };
        if !m.contains_key(&server_id) && m.len() >= Self::MAX_SERVERS {
            return;
        }
        let e = m.entry(server_id).or_insert(RogueServer {
            server_id,
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            count: 0,
            proxy,
        });
        e.last_seen_ms = now_ms;
        e.count = e.count.saturating_add(1);
        e.proxy = proxy;
    }

    /// Every foreign server seen, by address.
    pub fn servers(&self) -> Vec<RogueServer> {
        self.seen
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// What the service shares with the rest of the appliance (API health, metrics).
#[derive(Debug, Default)]
pub struct DhcpShared {
    /// Counters.
    pub stats: DhcpStats,
    /// Foreign servers.
    pub rogue: RogueMonitor,
}

impl DhcpShared {
    /// Fresh counters and an empty rogue record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Foreign DHCP servers seen on the provisioning segment (for `/readyz`/health).
    pub fn rogue_servers(&self) -> Vec<RogueServer> {
        self.rogue.servers()
    }
}
