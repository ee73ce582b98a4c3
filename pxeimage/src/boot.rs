//! The PID-1 boot sequence, and the agent runner shared with the `agent` subcommand.
//!
//! `setup → cmdline → cold-plug → boot NIC → recon → agent loop → finish`. Every failure ends
//! in a console message and, after a bounded delay, the `rackhand.on_exit` action: never in a
//! kernel panic.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::Path;
use std::time::Duration;

use pxe_api::HardwareReport;

use crate::agent::{self, Api, Env, Finish, RebootReason, Timing};
use crate::client::{HttpTransport, Timeouts};
use crate::cmdline::{self, AgentConfig, CmdlineErrors, OnExit};
use crate::install::LiveInstaller;
use crate::modules::ColdPlug;
use crate::{init, net};

/// Where the kernel command line is read from.
pub const PROC_CMDLINE: &str = "/proc/cmdline";
/// Where sysfs is mounted.
pub const SYSFS: &str = "/sys";
/// How often a fatal configuration error is repeated on the console.
const ERROR_REPEAT: Duration = Duration::from_secs(15);
/// How long a fatal error stays on the console before the machine reboots.
const ERROR_HOLD: Duration = Duration::from_secs(300);
/// How long to wait for the boot NIC to appear (drivers load asynchronously).
const NIC_TIMEOUT: Duration = Duration::from_secs(60);
/// Most cold-plug passes before looking for the NIC. Passes repeat while they load something,
/// because drivers create devices: virtio_pci creates the virtio devices virtio_net/virtio_blk
/// bind to, and a disk controller creates the SCSI devices `sd_mod` binds to.
const COLDPLUG_MAX_PASSES: usize = 4;

/// Real sleeping and a non-cryptographic PRNG (splitmix64) seeded from the OS (via std's
/// randomly keyed `RandomState`): good enough for jitter, never used for secrets.
#[derive(Debug)]
pub struct SystemEnv {
    state: u64,
}

impl SystemEnv {
    /// Seeds from the OS.
    pub fn new() -> Self {
        SystemEnv {
            state: RandomState::new().hash_one(std::process::id()),
        }
    }
}

impl Default for SystemEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl Env for SystemEnv {
    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn random(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The agent loop over HTTP with production timings. `executor` carries out install orders
/// (PID 1: [`LiveInstaller`]).
pub fn run_agent(
    cfg: &AgentConfig,
    hardware: &HardwareReport,
    executor: &mut dyn agent::Executor,
) -> Finish {
    let transport = HttpTransport::new(cfg.url.clone(), &cfg.token, Timeouts::default());
    crate::info!("appliance {}", cfg.url);
    agent::run(
        &mut Api::new(transport),
        &mut SystemEnv::new(),
        &Timing::default(),
        hardware,
        executor,
    )
}

/// A short human description of why the agent ended.
pub fn describe(f: &Finish) -> String {
    match f {
        Finish::Reboot(RebootReason::Ordered) => "the appliance ordered a reboot".into(),
        Finish::Reboot(RebootReason::TokenRevoked) => {
            "the appliance revoked this boot's token".into()
        }
        Finish::Reboot(RebootReason::StateNotServed(s)) => format!("machine state is {s}"),
        Finish::Reboot(RebootReason::Installed { snapshot }) => {
            format!("snapshot {snapshot} installed and verified")
        }
        Finish::Reboot(RebootReason::Rejected { status, code }) => format!(
            "the appliance kept refusing the agent (HTTP {status}, {})",
            code.as_deref().unwrap_or("no code")
        ),
    }
}

/// Reads the hardware report and fills in what only the agent knows.
pub fn hardware_report(boot_mac: pxe_api::Mac) -> HardwareReport {
    let mut hw = recon::collect(&recon::Sources::live());
    hw.boot_mac.get_or_insert(boot_mac);
    hw.agent_version
        .get_or_insert_with(|| format!("pxeimage {}", env!("CARGO_PKG_VERSION")));
    hw
}

/// Shows `lines` every [`ERROR_REPEAT`] for [`ERROR_HOLD`], then ends the boot.
fn fatal(on_exit: OnExit, lines: &[String]) -> ! {
    let rounds = ERROR_HOLD.as_secs() / ERROR_REPEAT.as_secs().max(1);
    for round in 0..rounds {
        for l in lines {
            crate::error!("{l}");
        }
        let left = ERROR_HOLD
            .saturating_sub(ERROR_REPEAT.saturating_mul(u32::try_from(round).unwrap_or(u32::MAX)));
        crate::error!(
            "ending the boot ({}) in {} s",
            on_exit.as_str(),
            left.as_secs()
        );
        std::thread::sleep(ERROR_REPEAT);
    }
    init::finish(on_exit, "fatal error")
}

fn cmdline_error_lines(errs: &CmdlineErrors) -> Vec<String> {
    let mut lines = vec!["the kernel command line is unusable:".to_owned()];
    lines.extend(errs.0.iter().map(|e| format!("  [{}] {e}", e.code())));
    lines
}

/// The whole life of the agent as PID 1. Never returns.
pub fn pid1_main() -> ! {
    crate::console::start_clock();
    init::setup();
    crate::info!("pxeimage {} starting as PID 1", env!("CARGO_PKG_VERSION"));

    let raw = std::fs::read(PROC_CMDLINE).unwrap_or_default();
    let cfg = match cmdline::parse_bytes(&raw) {
        Ok(c) => c,
        Err(errs) => fatal(OnExit::default(), &cmdline_error_lines(&errs)),
    };
    crate::console::set_debug(cfg.debug);
    for l in cfg.render().lines() {
        crate::info!("config {l}");
    }

    let mut coldplug = match ColdPlug::open(Path::new("/")) {
        Ok(c) => Some(c),
        Err(e) => {
            crate::warn!("no module cold-plug: {e}: {}", e.source_text());
            None
        }
    };
    if let Some(cp) = coldplug.as_mut() {
        for pass in 1..=COLDPLUG_MAX_PASSES {
            let s = cp.pass(Path::new(SYSFS));
            crate::info!(
                "cold-plug pass {pass}: {} devices, {} modules loaded, {} failed",
                s.devices,
                s.loaded,
                s.failed
            );
            if s.loaded == 0 {
                break;
            }
        }
    }

    if let Err(e) = net::loopback_up() {
        crate::warn!("loopback: {e}");
    }
    let nic = net::wait_for_nic(
        Path::new(net::SYS_CLASS_NET),
        cfg.boot_mac,
        NIC_TIMEOUT,
        Duration::from_millis(500),
        || {
            if let Some(cp) = coldplug.as_mut() {
                cp.pass(Path::new(SYSFS));
            }
        },
    );
    let nic = match nic {
        Ok(n) => n,
        Err(e) => fatal(cfg.on_exit, &[format!("[{}] {e}", e.code())]),
    };
    let Some(ifindex) = nic.ifindex else {
        let e = net::NetError::NoIfindex(nic.name.clone());
        fatal(cfg.on_exit, &[format!("[{}] {e}", e.code())]);
    };
    let mut configured = Err(net::NetError::NoIfindex(nic.name.clone()));
    for attempt in 1..=3 {
        configured = net::configure(ifindex, &cfg.ip);
        match &configured {
            Ok(()) => break,
            Err(e) => crate::warn!("configuring {} (attempt {attempt}/3): {e}", nic.name),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    if let Err(e) = configured {
        fatal(cfg.on_exit, &[format!("[{}] {e}", e.code())]);
    }
    crate::info!(
        "network: {} ({}) {}/{} gateway {}",
        nic.name,
        cfg.boot_mac,
        cfg.ip.address,
        cfg.ip.prefix_len,
        cfg.ip
            .gateway
            .map_or_else(|| "none".to_owned(), |g| g.to_string())
    );

    // Late devices (disks behind a controller that probed while we waited for the NIC).
    if let Some(cp) = coldplug.as_mut() {
        let s = cp.pass(Path::new(SYSFS));
        crate::debug!("cold-plug before inventory: {} modules loaded", s.loaded);
    }
    let hw = hardware_report(cfg.boot_mac);
    crate::info!(
        "hardware: {} NICs, {} disks, serial {}",
        hw.nics.len(),
        hw.disks.len(),
        hw.dmi.system_serial.as_deref().unwrap_or("unknown")
    );
    let mut installer = LiveInstaller::new(cfg.url.clone(), &cfg.token);
    let finish = run_agent(&cfg, &hw, &mut installer);
    init::finish(cfg.on_exit, &describe(&finish))
}

trait SourceText {
    fn source_text(&self) -> String;
}

impl<E: std::error::Error> SourceText for E {
    /// The cause chain after the top error, joined with `: `.
    fn source_text(&self) -> String {
        let mut out = Vec::new();
        let mut cur = self.source();
        while let Some(e) = cur {
            out.push(e.to_string());
            cur = e.source();
        }
        out.join(": ")
    }
}
