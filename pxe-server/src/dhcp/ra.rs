//! IPv6 router advertisements that end iPXE's IPv6 autoconfiguration wait (about 16 s per
//! boot otherwise): router lifetime 0 (we are not a router), no prefixes, no M/O flags, hop
//! limit 255, sent to ff02::1 on the provisioning interface, in answer to Router
//! Solicitations and periodically.
//!
//! [`build_ra`] and [`is_router_solicitation`] are pure; `run` owns the raw socket.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pxe_api::Mac;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::stats::DhcpShared;

/// ICMPv6 type of a Router Solicitation.
pub const ICMPV6_RS: u8 = 133;
/// ICMPv6 type of a Router Advertisement.
pub const ICMPV6_RA: u8 = 134;

/// The all-nodes multicast address.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// The all-routers multicast address (RS destination).
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// An RA with router lifetime 0, no flags and no prefixes, plus a source link-layer address
/// option when the interface MAC is known. The kernel fills in the ICMPv6 checksum.
pub fn build_ra(source_mac: Option<Mac>) -> Vec<u8> {
    let mut p = vec![
        ICMPV6_RA, 0, // type, code
        0, 0, // checksum (kernel)
        0, // cur hop limit: unspecified
        0, // flags: no M, no O
        0, 0, // router lifetime 0: not a default router
        0, 0, 0, 0, // reachable time: unspecified
        0, 0, 0, 0, // retrans timer: unspecified
    ];
    if let Some(m) = source_mac {
        p.extend_from_slice(&[1, 1]);
        p.extend_from_slice(&m.0);
    }
    p
}

/// True if an ICMPv6 message (without IPv6 header, as a raw socket delivers it) is an RS.
pub fn is_router_solicitation(msg: &[u8]) -> bool {
    msg.len() >= 8 && msg.first() == Some(&ICMPV6_RS) && msg.get(1) == Some(&0)
}

/// Send RAs until `shutdown`: one at start, one every `interval`, and one per RS (at most
/// one per 200 ms, so an RS flood cannot turn us into an amplifier).
pub(crate) async fn run(
    sock: UdpSocket,
    ifindex: u32,
    mac: Option<Mac>,
    interval: Duration,
    shared: Arc<DhcpShared>,
    shutdown: CancellationToken,
) {
    let ra = build_ra(mac);
    let dest = SocketAddrV6::new(ALL_NODES, 0, 0, ifindex);
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
    let mut buf = vec![0u8; 1500];
    let mut last_answer: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => send(&sock, &ra, dest, &shared).await,
            r = sock.recv_from(&mut buf) => {
                let Ok((n, _)) = r else { continue };
                if !buf.get(..n).is_some_and(is_router_solicitation) {
                    continue;
                }
                let now = tokio::time::Instant::now();
                if last_answer.is_some_and(|t| now.duration_since(t) < Duration::from_millis(200)) {
                    continue;
                }
                last_answer = Some(now);
                send(&sock, &ra, dest, &shared).await;
            }
        }
    }
}

async fn send(sock: &UdpSocket, ra: &[u8], dest: SocketAddrV6, shared: &DhcpShared) {
    match sock.send_to(ra, dest).await {
        Ok(_) => {
            shared.stats.ra_sent.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tracing::debug!(error = %e, "sending router advertisement failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ra_layout() {
        let ra = build_ra(Some(Mac([2, 0, 0, 0, 0, 9])));
        assert_eq!(ra.len(), 24);
        assert_eq!(ra.first(), Some(&134));
        assert_eq!(ra.get(5), Some(&0), "no M/O flags");
        assert_eq!(ra.get(6..8), Some(&[0u8, 0][..]), "router lifetime 0");
        assert_eq!(ra.get(16..24), Some(&[1u8, 1, 2, 0, 0, 0, 0, 9][..]));
        assert_eq!(build_ra(None).len(), 16);
        assert!(is_router_solicitation(&[133, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_router_solicitation(&[134, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_router_solicitation(&[133, 0]));
    }
}
