//! The real rtnetlink path, in a private network namespace this test creates: a thread calls
//! `unshare(CLONE_NEWNET)` (root only; the test says so and skips otherwise), configures its
//! loopback with [`pxeimage::net`], and reads the result back from the kernel. No traffic leaves
//! the namespace, and it disappears when the thread ends.

use std::net::Ipv4Addr;

use nix::errno::Errno;
use nix::sched::{CloneFlags, unshare};
use pxeimage::cmdline::IpConfig;
use pxeimage::net::{self, NetError, Netlink};

/// The default route's gateway from `/proc/thread-self/net/route` (this thread's namespace).
fn default_gateway() -> Option<(String, Ipv4Addr)> {
    let text = std::fs::read_to_string("/proc/thread-self/net/route").unwrap();
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.get(1) == Some(&"00000000") && f.get(7) == Some(&"00000000") {
            let gw = u32::from_str_radix(f.get(2)?, 16).ok()?;
            Some((f.first()?.to_string(), Ipv4Addr::from(gw.to_ne_bytes())))
        } else {
            None
        }
    })
}

fn addresses(ifname: &str) -> Vec<(Ipv4Addr, Option<Ipv4Addr>)> {
    nix::ifaddrs::getifaddrs()
        .unwrap()
        .filter(|a| a.interface_name == ifname)
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            let mask = a.netmask.and_then(|m| m.as_sockaddr_in().map(|s| s.ip()));
            Some((ip, mask))
        })
        .collect()
}

#[test]
fn configures_an_interface_in_a_private_namespace() {
    let outcome = std::thread::spawn(|| -> Result<(), String> {
        match unshare(CloneFlags::CLONE_NEWNET) {
            Ok(()) => {}
            Err(Errno::EPERM) => return Err("skip".into()),
            Err(e) => panic!("unshare: {e}"),
        }
        assert_eq!(default_gateway(), None, "a fresh namespace has no routes");
        let ip = IpConfig {
            address: Ipv4Addr::new(10, 99, 0, 100),
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(10, 99, 0, 1)),
            hostname: None,
            dns: vec![],
        };
        // loopback is always ifindex 1
        net::configure(1, &ip).unwrap();
        // idempotent: a second run replaces instead of failing with EEXIST
        net::configure(1, &ip).unwrap();

        let lo = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
        assert!(lo.contains("lo:"));
        assert!(
            addresses("lo").contains(&(
                Ipv4Addr::new(10, 99, 0, 100),
                Some(Ipv4Addr::new(255, 255, 255, 0))
            )),
            "{:?}",
            addresses("lo")
        );
        assert_eq!(
            default_gateway(),
            Some(("lo".to_owned(), Ipv4Addr::new(10, 99, 0, 1)))
        );

        // the kernel's refusals come back as typed errors with the errno
        let mut nl = Netlink::open().unwrap();
        match nl.add_default_route(1, Ipv4Addr::new(192, 0, 2, 1)) {
            Err(NetError::Refused { errno, op, .. }) => {
                assert_eq!(op, "add default route");
                assert_eq!(errno, Errno::ENETUNREACH);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        match nl.link_up(9999) {
            Err(NetError::Refused { errno, .. }) => assert_eq!(errno, Errno::ENODEV),
            other => panic!("expected ENODEV, got {other:?}"),
        }
        Ok(())
    })
    .join()
    .unwrap();
    if outcome == Err("skip".into()) {
        eprintln!("skipped: unshare(CLONE_NEWNET) needs root / CAP_SYS_ADMIN");
    }
}
