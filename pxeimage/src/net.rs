//! Bringing up the boot NIC: find the interface whose MAC is `BOOTIF`, set it up, give it the
//! address iPXE obtained, and add the default route — over rtnetlink, with no `ip` binary.
//!
//! The requests are built and the replies parsed by the pure [`crate::netlink`]; this module
//! owns the socket and the sysfs reads.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;
use pxe_api::Mac;

use crate::cmdline::IpConfig;
use crate::netlink::{self, Ack};

/// Where network interfaces appear.
pub const SYS_CLASS_NET: &str = "/sys/class/net";

/// How long a netlink request may take before it counts as failed.
const NETLINK_TIMEOUT: Duration = Duration::from_secs(5);

/// A network interface as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Kernel name.
    pub name: String,
    /// Hardware address, when it parses.
    pub mac: Option<Mac>,
    /// Interface index.
    pub ifindex: Option<u32>,
}

/// Why the network could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No interface with the boot MAC appeared in time.
    #[error("no interface with MAC {mac} after {waited:?} (interfaces seen: {seen})")]
    NicNotFound {
        /// The `BOOTIF` MAC.
        mac: Mac,
        /// How long we polled.
        waited: Duration,
        /// Names and MACs that were present.
        seen: String,
    },
    /// The interface has no usable `ifindex`.
    #[error("interface {0} has no readable ifindex")]
    NoIfindex(String),
    /// Opening or using the netlink socket failed.
    #[error("netlink {op} failed: {errno}")]
    Socket {
        /// The failing operation.
        op: &'static str,
        /// Cause.
        errno: Errno,
    },
    /// The kernel refused a request.
    #[error("{op} on ifindex {ifindex} refused by the kernel: {errno}")]
    Refused {
        /// What was asked (`link up`, `add address`, `add default route`).
        op: &'static str,
        /// The interface.
        ifindex: u32,
        /// The kernel's errno.
        errno: Errno,
    },
    /// The reply did not parse.
    #[error("{op}: {source}")]
    Reply {
        /// What was asked.
        op: &'static str,
        /// Cause.
        #[source]
        source: netlink::AckError,
    },
}

impl NetError {
    /// Stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            NetError::NicNotFound { .. } => "boot_nic_not_found",
            NetError::NoIfindex(_) => "no_ifindex",
            NetError::Socket { .. } => "netlink_socket",
            NetError::Refused { .. } => "netlink_refused",
            NetError::Reply { .. } => "netlink_reply",
        }
    }
}

/// The interface whose MAC is `mac`. **Pure.**
pub fn pick_by_mac(interfaces: &[Interface], mac: Mac) -> Option<&Interface> {
    interfaces.iter().find(|i| i.mac == Some(mac))
}

/// Lists `dir` (normally `/sys/class/net`).
pub fn list_interfaces(dir: &Path) -> Vec<Interface> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let read = |p: PathBuf| {
        std::fs::read(p)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
    };
    let mut out: Vec<Interface> = entries
        .flatten()
        .map(|e| {
            let path = e.path();
            Interface {
                name: e.file_name().to_string_lossy().into_owned(),
                mac: read(path.join("address")).and_then(|s| s.parse().ok()),
                ifindex: read(path.join("ifindex")).and_then(|s| s.parse().ok()),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Polls `dir` until an interface with `mac` appears, calling `between` after each miss (e.g.
/// another cold-plug pass), for at most `timeout`.
pub fn wait_for_nic(
    dir: &Path,
    mac: Mac,
    timeout: Duration,
    poll: Duration,
    mut between: impl FnMut(),
) -> Result<Interface, NetError> {
    let start = Instant::now();
    loop {
        let all = list_interfaces(dir);
        if let Some(i) = pick_by_mac(&all, mac) {
            return Ok(i.clone());
        }
        if start.elapsed() >= timeout {
            let seen = all
                .iter()
                .map(|i| {
                    format!(
                        "{}={}",
                        i.name,
                        i.mac.map_or_else(|| "?".to_owned(), |m| m.to_string())
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(NetError::NicNotFound {
                mac,
                waited: start.elapsed(),
                seen: if seen.is_empty() { "none".into() } else { seen },
            });
        }
        between();
        std::thread::sleep(poll);
    }
}

/// An rtnetlink socket that sends one request at a time and waits for its acknowledgement.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// Opens and binds a `NETLINK_ROUTE` socket with a receive timeout.
    pub fn open() -> Result<Netlink, NetError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(|errno| NetError::Socket {
            op: "socket",
            errno,
        })?;
        let tv = TimeVal::new(i64::try_from(NETLINK_TIMEOUT.as_secs()).unwrap_or(5), 0);
        setsockopt(&fd, sockopt::ReceiveTimeout, &tv).map_err(|errno| NetError::Socket {
            op: "setsockopt(SO_RCVTIMEO)",
            errno,
        })?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))
            .map_err(|errno| NetError::Socket { op: "bind", errno })?;
        Ok(Netlink { fd, seq: 0 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn request(&mut self, op: &'static str, ifindex: u32, msg: &[u8]) -> Result<(), NetError> {
        let seq = u32::from_ne_bytes(
            msg.get(8..12)
                .and_then(|s| s.try_into().ok())
                .unwrap_or_default(),
        );
        sendto(
            self.fd.as_raw_fd(),
            msg,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )
        .map_err(|errno| NetError::Socket {
            op: "sendto",
            errno,
        })?;
        let mut buf = vec![0u8; 8192];
        // Replies to earlier requests may still be queued; read until ours arrives (bounded).
        for _ in 0..16 {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(|errno| NetError::Socket { op: "recv", errno })?;
            match netlink::parse_ack(buf.get(..n).unwrap_or_default(), seq) {
                Ok(Ack::Ok) => return Ok(()),
                Ok(Ack::Errno(e)) => {
                    return Err(NetError::Refused {
                        op,
                        ifindex,
                        errno: Errno::from_raw(e),
                    });
                }
                Err(netlink::AckError::NoAck(_)) => continue,
                Err(source) => return Err(NetError::Reply { op, source }),
            }
        }
        Err(NetError::Reply {
            op,
            source: netlink::AckError::NoAck(seq),
        })
    }

    /// Sets the link up.
    pub fn link_up(&mut self, ifindex: u32) -> Result<(), NetError> {
        let seq = self.next_seq();
        self.request("link up", ifindex, &netlink::link_up(seq, ifindex))
    }

    /// Adds (or replaces) an IPv4 address.
    pub fn add_address(
        &mut self,
        ifindex: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetError> {
        let seq = self.next_seq();
        self.request(
            "add address",
            ifindex,
            &netlink::add_address(seq, ifindex, addr, prefix_len),
        )
    }

    /// Adds (or replaces) the default route.
    pub fn add_default_route(&mut self, ifindex: u32, gateway: Ipv4Addr) -> Result<(), NetError> {
        let seq = self.next_seq();
        self.request(
            "add default route",
            ifindex,
            &netlink::add_default_route(seq, ifindex, gateway),
        )
    }
}

/// Brings `ifindex` up with `ip`'s address and default route (when there is a gateway).
pub fn configure(ifindex: u32, ip: &IpConfig) -> Result<(), NetError> {
    let mut nl = Netlink::open()?;
    nl.link_up(ifindex)?;
    nl.add_address(ifindex, ip.address, ip.prefix_len)?;
    if let Some(gw) = ip.gateway {
        nl.add_default_route(ifindex, gw)?;
    }
    Ok(())
}

/// Brings the loopback interface (always ifindex 1) up.
pub fn loopback_up() -> Result<(), NetError> {
    Netlink::open()?.link_up(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_by_mac() {
        let mac: Mac = "52:54:00:99:00:01".parse().unwrap();
        let list = vec![
            Interface {
                name: "lo".into(),
                mac: Some(Mac([0; 6])),
                ifindex: Some(1),
            },
            Interface {
                name: "eth0".into(),
                mac: Some("52:54:00:99:00:02".parse().unwrap()),
                ifindex: Some(2),
            },
            Interface {
                name: "eth1".into(),
                mac: Some(mac),
                ifindex: Some(3),
            },
        ];
        assert_eq!(
            pick_by_mac(&list, mac).map(|i| i.name.as_str()),
            Some("eth1")
        );
        assert_eq!(pick_by_mac(&list[..2], mac), None);
    }
}
