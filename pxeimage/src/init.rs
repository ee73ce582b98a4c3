//! PID-1 duties. Only used when the agent *is* init (in the initramfs); when something else
//! started it, none of this runs.
//!
//! - mount `/proc`, `/sys`, `/dev` (devtmpfs) and `/run` (tmpfs);
//! - make sure stdin/stdout/stderr are `/dev/console`;
//! - reap orphaned children (every orphan in the system is re-parented to PID 1);
//! - turn a panic into a console message followed by a reboot (with `panic = "abort"` a panic in
//!   PID 1 would otherwise become a kernel panic, and the message would be lost);
//! - end the boot with `reboot(2)`: the kernel panics if PID 1 exits, so [`finish`] never
//!   returns. This is the only module that calls `reboot(2)`.

use std::time::Duration;

use nix::mount::{MsFlags, mount};
use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::cmdline::OnExit;

/// The console device.
pub const CONSOLE: &str = "/dev/console";
/// How long a panic message stays on the console before the reboot.
pub const PANIC_REBOOT_DELAY: Duration = Duration::from_secs(10);

/// One filesystem PID 1 mounts.
struct Mount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const fn mounts() -> [Mount; 4] {
    let safe = MsFlags::MS_NOSUID
        .union(MsFlags::MS_NODEV)
        .union(MsFlags::MS_NOEXEC);
    [
        Mount {
            source: "proc",
            target: "/proc",
            fstype: "proc",
            flags: safe,
            data: None,
        },
        Mount {
            source: "sysfs",
            target: "/sys",
            fstype: "sysfs",
            flags: safe,
            data: None,
        },
        Mount {
            source: "devtmpfs",
            target: "/dev",
            fstype: "devtmpfs",
            flags: MsFlags::MS_NOSUID,
            data: Some("mode=0755"),
        },
        Mount {
            source: "tmpfs",
            target: "/run",
            fstype: "tmpfs",
            flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
            data: Some("mode=0755"),
        },
    ]
}

/// Does the PID-1 setup. Call first, before any thread is spawned (the reaper relies on every
/// later thread inheriting a blocked `SIGCHLD`).
pub fn setup() {
    install_panic_hook();
    for m in mounts() {
        if let Err(e) = std::fs::create_dir_all(m.target) {
            crate::warn!("mkdir {}: {e}", m.target);
        }
        match mount(Some(m.source), m.target, Some(m.fstype), m.flags, m.data) {
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => crate::error!("mount {} on {}: {e}", m.fstype, m.target),
        }
    }
    ensure_console();
    start_reaper();
}

/// If the kernel could not give PID 1 a console (no `/dev/console` in the initramfs), open the
/// devtmpfs one now and put it on fds 0, 1 and 2.
fn ensure_console() {
    use nix::fcntl::{FcntlArg, OFlag, fcntl, open};
    if fcntl(2, FcntlArg::F_GETFD).is_ok() {
        return;
    }
    let Ok(fd) = open(
        CONSOLE,
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    ) else {
        return;
    };
    for target in 0..3 {
        if fd != target {
            let _ = nix::unistd::dup2(fd, target);
        }
    }
    if fd > 2 {
        let _ = nix::unistd::close(fd);
    }
}

/// Blocks `SIGCHLD` in this (and every later) thread and reaps children in a dedicated thread
/// that waits for the signal synchronously. The agent spawns no processes itself; the reaper
/// exists for orphans.
fn start_reaper() {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    if let Err(e) = set.thread_block() {
        crate::warn!("cannot block SIGCHLD ({e}); zombies will not be reaped");
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || {
            loop {
                if set.wait().is_err() {
                    std::thread::sleep(Duration::from_secs(1));
                }
                // one signal may stand for several exited children
                while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    if status == WaitStatus::StillAlive {
                        break;
                    }
                    crate::debug!("reaped {status:?}");
                }
            }
        });
    if let Err(e) = spawned {
        crate::warn!("cannot start the reaper thread: {e}");
    }
}

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        crate::error!("PANIC: {info}");
        crate::error!(
            "the agent crashed; rebooting in {} s",
            PANIC_REBOOT_DELAY.as_secs()
        );
        std::thread::sleep(PANIC_REBOOT_DELAY);
        nix::unistd::sync();
        let _ = reboot(RebootMode::RB_AUTOBOOT);
        // reboot(2) failed: never return into the abort (a kernel panic would hide the message)
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }));
}

/// Ends the boot: syncs, then reboots, powers off, or holds (debug mode). Never returns.
pub fn finish(on_exit: OnExit, why: &str) -> ! {
    crate::info!("{why}; on_exit={}", on_exit.as_str());
    nix::unistd::sync();
    let result = match on_exit {
        OnExit::Reboot => reboot(RebootMode::RB_AUTOBOOT),
        OnExit::PowerOff => reboot(RebootMode::RB_POWER_OFF),
        OnExit::Hold => {
            crate::info!(
                "holding (rackhand.on_exit=hold): the machine stays up; power-cycle it to continue"
            );
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    };
    // reboot(2) only returns on failure
    let Err(e) = result;
    crate::error!("reboot(2) failed: {e}; holding");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
