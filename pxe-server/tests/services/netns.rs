//! Network namespaces and processes for the boot-service tests and the `boot_services`
//! benchmark: two namespaces the caller creates, joined by one veth pair, and child processes
//! started inside them. Both are torn down on drop (success, failure or panic), processes
//! first (declare the [`Netns`] before the [`Proc`]s so that drop order holds).
//!
//! Nothing here touches an interface or process it did not create: namespaces get unique names
//! (`rh<tag>-<pid>-<n>-{s,c}`), and processes are killed by their own PID.

#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Name of the server-side veth end (inside the server namespace).
pub const SRV_IF: &str = "rhsrv0";
/// Name of the client-side veth end (inside the client namespace).
pub const CLI_IF: &str = "rhcli0";
/// MAC of the server-side veth end (fixed so that static neighbour entries are possible).
pub const SRV_MAC: &str = "02:72:68:00:00:01";
/// MAC of the client-side veth end.
pub const CLI_MAC: &str = "02:72:68:00:00:02";

/// True when running as root (needed to create namespaces).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a thread that has entered network namespace `ns`; sockets it creates stay there.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = File::open(format!("/run/netns/{ns}"))
                .unwrap_or_else(|e| panic!("open netns {ns}: {e}"));
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {ns}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|_| panic!("thread in netns {ns} panicked"))
    })
}

static NS_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Two namespaces joined by a veth pair ([`SRV_IF`] ↔ [`CLI_IF`]); deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Server namespace name.
    pub srv: String,
    /// Client namespace name.
    pub cli: String,
}

impl Netns {
    /// Creates the pair with `srv_cidr` on the server end and `cli_cidr` on the client end
    /// (e.g. `10.99.0.1/24`, `10.99.0.250/24`).
    pub fn create(tag: &str, srv_cidr: &str, cli_cidr: &str) -> Netns {
        let n = NS_COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        // Built first, so that a failure below still deletes whatever was created.
        let g = Netns {
            srv: format!("rh{tag}-{pid}-{n}-s"),
            cli: format!("rh{tag}-{pid}-{n}-c"),
        };
        for ns in [&g.srv, &g.cli] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n", &g.srv, "link", "add", SRV_IF, "address", SRV_MAC, "type", "veth", "peer",
            "name", CLI_IF, "address", CLI_MAC, "netns", &g.cli,
        ]);
        ip(&["-n", &g.srv, "addr", "add", srv_cidr, "dev", SRV_IF]);
        ip(&["-n", &g.cli, "addr", "add", cli_cidr, "dev", CLI_IF]);
        ip(&["-n", &g.srv, "link", "set", SRV_IF, "up"]);
        ip(&["-n", &g.cli, "link", "set", CLI_IF, "up"]);
        g
    }

    /// Adds permanent neighbour entries both ways (no ARP during a benchmark).
    pub fn static_neighbours(&self, srv_ip: &str, cli_ip: &str) {
        ip(&[
            "-n",
            &self.srv,
            "neigh",
            "replace",
            cli_ip,
            "lladdr",
            CLI_MAC,
            "dev",
            SRV_IF,
            "nud",
            "permanent",
        ]);
        ip(&[
            "-n",
            &self.cli,
            "neigh",
            "replace",
            srv_ip,
            "lladdr",
            SRV_MAC,
            "dev",
            CLI_IF,
            "nud",
            "permanent",
        ]);
    }

    /// Adds `cidr` to the client end (a second host address on the client side).
    pub fn add_client_addr(&self, cidr: &str) {
        ip(&["-n", &self.cli, "addr", "add", cidr, "dev", CLI_IF]);
    }

    /// Starts `argv` in namespace `ns` (via `ip netns exec`, which execs in place, so the
    /// child's PID is the program's), stdout and stderr appended to `log`.
    pub fn spawn(&self, ns: &str, argv: &[&str], env: &[(&str, &str)], log: &Path) -> Proc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("log file {}: {e}", log.display()));
        let err = out.try_clone().expect("log file");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
        Proc {
            child: Some(child),
            name: argv.first().copied().unwrap_or("?").to_owned(),
        }
    }

    /// Runs `argv` in namespace `ns` to completion, killing it after `limit`. Returns its exit
    /// success and combined output.
    pub fn run(&self, ns: &str, argv: &[&str], limit: Duration) -> (bool, String) {
        run_bounded(
            Command::new("ip").args(["netns", "exec", ns]).args(argv),
            limit,
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.srv, &self.cli] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Runs `cmd` with stdout/stderr captured; SIGKILL (by PID) after `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out");
    let out = File::create(&path).expect("output file");
    let err = out.try_clone().expect("output file");
    let mut child = Proc {
        child: Some(
            cmd.stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")),
        ),
        name: format!("{:?}", cmd.get_program()),
    };
    let status = child.wait_timeout(limit);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    match status {
        Some(s) => (s.success(), text),
        None => (false, format!("{text}\n[killed after {limit:?}]")),
    }
}

/// A child process started by the caller; SIGKILLed (by PID) and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    /// Program name, for messages.
    pub name: String,
}

impl Proc {
    /// The PID (0 once reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `grace` (SIGKILL after that). True if it exited by itself
    /// with status 0.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        let Some(c) = self.child.as_ref() else {
            return false;
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.wait_timeout(grace).is_some_and(|s| s.success())
    }

    /// Waits up to `limit` for exit; SIGKILL and `None` after that.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        let mut c = self.child.take()?;
        loop {
            match c.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if t.elapsed() < limit => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    return None;
                }
            }
        }
    }

    /// CPU seconds (user + system, reaped children included) the process has used so far,
    /// from `/proc/PID/stat`.
    pub fn cpu_secs(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // Fields after the parenthesised command name; utime is field 14 (index 11 here).
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = [11, 12, 13, 14]
            .iter()
            .map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
            .sum();
        // /proc reports clock ticks in USER_HZ, which is 100 on x86 Linux.
        Some(ticks / 100.0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}
