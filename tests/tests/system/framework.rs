//! The framework's own guarantees: namespaces are built as documented and nothing survives
//! their drop, on success and on panic.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::time::Duration;

use rackhand_tests::gate::{self, Need};
use rackhand_tests::netns::{Netns, NsCommand};
use rackhand_tests::proc::{pid_alive, poll_until};
use rackhand_tests::{Result, leak};

const T: Duration = Duration::from_secs(20);

fn net_ns_inode(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
}

#[test]
fn netns_has_bridge_taps_and_is_removed_on_drop() -> Result<()> {
    if !gate::require(
        "netns_has_bridge_taps_and_is_removed_on_drop",
        &[Need::Root, Need::Iproute],
    )? {
        return Ok(());
    }
    let ns = Netns::new(2)?;
    let name = ns.name().to_owned();
    assert!(
        name.starts_with(&format!("rh-{}-", std::process::id())),
        "{name}"
    );
    assert!(Netns::exists(&name));
    assert_eq!(ns.taps(), ["rhtap0", "rhtap1"]);

    let addrs = ns.exec_ok(
        &NsCommand::new("ip").args(["-o", "addr", "show", "dev", "br0"]),
        T,
    )?;
    assert!(addrs.contains("inet 10.99.0.1/24"), "{addrs}");
    assert!(addrs.contains("inet6 fd99::1/64"), "{addrs}");
    let links = ns.exec_ok(&NsCommand::new("ip").args(["-o", "link", "show"]), T)?;
    for tap in ["rhtap0", "rhtap1"] {
        let line = links
            .lines()
            .find(|l| l.contains(&format!(": {tap}:")))
            .unwrap_or_else(|| panic!("{tap} missing: {links}"));
        assert!(line.contains("master br0"), "{line}");
    }
    let lo = links.lines().find(|l| l.contains(": lo:")).expect("lo");
    assert!(lo.contains("UP"), "{lo}");
    // The host namespace has none of this.
    assert!(!std::path::Path::new("/sys/class/net/rhtap0").exists());

    // A program started inside really runs in the namespace, under its own PID.
    let id = ns.spawn("sleeper", &NsCommand::new("sleep").arg("600"))?;
    let pid = ns.pid(id).expect("pid");
    assert!(pid_alive(pid));
    let inside = poll_until(T, Duration::from_millis(100), || {
        ns.pids_inside().ok().filter(|p| p.contains(&pid))
    });
    assert!(inside.is_some(), "pid {pid} not listed by ip netns pids");
    assert_ne!(net_ns_inode(pid), net_ns_inode(std::process::id()));
    // The marker lets the leak check see it while it lives.
    assert!(
        leak::scan_netns(&name)
            .iter()
            .any(|l| matches!(l, leak::Leak::Process { pid: p, .. } if *p == pid)),
        "running process not seen by the leak scan"
    );

    drop(ns);
    assert!(!Netns::exists(&name), "namespace {name} survived drop");
    assert!(!pid_alive(pid), "process {pid} survived drop");
    assert_eq!(leak::scan_netns(&name), vec![]);
    Ok(())
}

#[test]
fn netns_cleanup_runs_when_the_test_panics() -> Result<()> {
    if !gate::require(
        "netns_cleanup_runs_when_the_test_panics",
        &[Need::Root, Need::Iproute],
    )? {
        return Ok(());
    }
    // What the panicking body created, recorded for the checks after the unwind.
    let seen: Mutex<(String, Vec<u32>)> = Mutex::new((String::new(), Vec::new()));
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let ns = Netns::new(1).expect("netns");
        seen.lock().unwrap().0 = ns.name().to_owned();
        // A tracked process that also leaves an untracked grandchild in the namespace: the
        // teardown must find that one through `ip netns pids` (pitfall 8).
        let id = ns
            .spawn(
                "parent",
                &NsCommand::new("sh").args(["-c", "sleep 600 & exec sleep 601"]),
            )
            .expect("spawn");
        let parent = ns.pid(id).expect("pid");
        let all = poll_until(T, Duration::from_millis(100), || {
            ns.pids_inside().ok().filter(|p| p.len() >= 2)
        })
        .expect("both processes inside");
        assert!(all.contains(&parent));
        seen.lock().unwrap().1 = all;
        panic!("deliberate panic inside a namespace test");
    }));
    assert!(outcome.is_err(), "the body must have panicked");
    let (name, pids) = seen.into_inner().unwrap();
    assert!(name.starts_with("rh-"), "{name:?}");
    assert!(!Netns::exists(&name), "namespace {name} survived the panic");
    for p in &pids {
        // The orphaned grandchild is reaped by init, possibly a moment later.
        let gone = poll_until(T, Duration::from_millis(100), || {
            (!pid_alive(*p)).then_some(())
        });
        assert!(gone.is_some(), "process {p} survived the panic");
    }
    assert_eq!(leak::scan_netns(&name), vec![]);
    Ok(())
}
