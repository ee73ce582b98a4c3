//! The agent booted directly (issue 4 acceptance): QEMU loads `target/dist/vmlinuz` and
//! `pxeimage.initramfs` itself (`-kernel`/`-initrd`), with the kernel command line the real
//! appliance's boot script gives this VM's MAC, and no firmware netboot. The appliance runs in
//! HTTP-only mode (no DHCP, no TFTP); the VM gets a static address through the `ip=` argument.

use std::time::{Duration, Instant};

use pxe_api::{Mac, MachineState};
use rackhand_tests::gate::{self, announce};
use rackhand_tests::paths;
use rackhand_tests::{
    Appliance, ApplianceConfig, DiskFormat, Error, Netns, Result, VmBuilder, WorkDir, test_mac,
};

use crate::support::{Expect, REGISTER_TIMEOUT, VM_NEEDS, assert_registered_by_serial};

/// The VM's static address (outside the full-mode DHCP range, which is not served here).
const VM_IP: &str = "10.99.0.50";
/// The appliance, as the VM's gateway.
const GATEWAY: &str = "10.99.0.1";
/// The bridge's netmask.
const NETMASK: &str = "255.255.255.0";
/// How long the appliance stays down in the outage variant.
const OUTAGE: Duration = Duration::from_secs(20);
/// The agent's console line for a failed registration attempt (`pxeimage/src/agent.rs`).
const REGISTER_RETRY: &str = "rackhand: WARN register:";

/// The kernel arguments of the `kernel` line of a boot script, with iPXE's `${netX/ip}`,
/// `${netX/gateway}` and `${netX/netmask}` replaced by a static configuration. Pure.
fn kernel_cmdline(script: &str) -> Option<String> {
    let line = script
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("kernel "))?;
    let line = line
        .strip_suffix("|| goto failed")
        .unwrap_or(line)
        .trim_end();
    // `kernel <url> <args…>`
    let mut words = line.split_whitespace().skip(1);
    let _url = words.next()?;
    let args: Vec<&str> = words.collect();
    let cmdline = args
        .join(" ")
        .replace("${netX/ip}", VM_IP)
        .replace("${netX/gateway}", GATEWAY)
        .replace("${netX/netmask}", NETMASK);
    (!cmdline.contains("${")).then_some(cmdline)
}

/// Fetches the agent boot script for `mac` from the running appliance and turns it into the
/// kernel command line.
fn cmdline_from_appliance(app: &Appliance<'_>, mac: Mac) -> Result<String> {
    let reply = app.get(&format!(
        "/boot.ipxe?mac={}&platform=pcbios&buildarch=i386",
        mac.hyphenated()
    ))?;
    if reply.status != 200 {
        return Err(Error::Invalid(format!(
            "boot script: HTTP {}: {}",
            reply.status, reply.body
        )));
    }
    let cmdline = kernel_cmdline(&reply.body).ok_or_else(|| {
        Error::Invalid(format!(
            "no usable kernel line in the script:\n{}",
            reply.body
        ))
    })?;
    // What the agent needs must be there (the token stays out of messages).
    for key in [
        "rackhand.url=",
        "rackhand.token=",
        "BOOTIF=",
        "ip=10.99.0.50::10.99.0.1:255.255.255.0",
    ] {
        if !cmdline.contains(key) {
            return Err(Error::Invalid(format!(
                "the kernel line lacks {key:?}:\n{}",
                reply.body.replace(
                    cmdline
                        .split_whitespace()
                        .find(|w| w.starts_with("rackhand.token="))
                        .unwrap_or("rackhand.token="),
                    "rackhand.token=<redacted>"
                )
            )));
        }
    }
    Ok(cmdline)
}

/// The HTTP-only appliance on the dist build (what ships), assets from the dist directory.
fn http_only() -> ApplianceConfig {
    let dist = paths::dist_dir();
    ApplianceConfig::http_only(&dist).binary(&dist.join("pxe-server"))
}

struct Machine {
    serial: &'static str,
    uuid: &'static str,
    mac: Mac,
    disk_bytes: u64,
    mem_mib: u32,
}

impl Machine {
    fn builder(&self, ns: &Netns, cmdline: &str) -> Result<VmBuilder> {
        let dist = paths::dist_dir();
        Ok(VmBuilder::new("agent-direct")
            .memory_mib(self.mem_mib)
            .nic(ns.tap(0)?, self.mac)
            .disk(self.disk_bytes, DiskFormat::Qcow2, Some("RHAGENTDISK"))
            .smbios_serial(self.serial)
            .uuid(self.uuid)
            .direct_kernel(
                &dist.join("vmlinuz"),
                &dist.join("pxeimage.initramfs"),
                cmdline,
            ))
    }

    fn expect(&self) -> Expect<'_> {
        Expect {
            serial: self.serial,
            uuid: Some(self.uuid),
            macs: std::slice::from_ref(&self.mac),
            disk_bytes: self.disk_bytes,
            disk_serial: Some("RHAGENTDISK"),
            mem_mib: self.mem_mib,
        }
    }
}

#[test]
fn agent_booted_directly_registers() -> Result<()> {
    let test = "agent_booted_directly_registers";
    if !gate::require(test, VM_NEEDS)? {
        return Ok(());
    }
    let machine = Machine {
        serial: "RH-AGENT-0001",
        uuid: "5e1ec7ed-0000-4000-8000-525400997001",
        mac: test_mac(0x70, 1),
        disk_bytes: 1 << 30,
        mem_mib: 768,
    };
    let dir = WorkDir::new(test)?;
    let ns = Netns::new(1)?;
    let app = Appliance::start(&ns, dir.path(), &http_only())?;
    let cmdline = cmdline_from_appliance(&app, machine.mac)?;
    let vm = machine.builder(&ns, &cmdline)?.start(&ns, dir.path())?;
    let (m, _) = app.wait_for_machine(
        machine.serial,
        MachineState::Available,
        REGISTER_TIMEOUT,
        Some(&vm),
    )?;
    announce(&format!(
        "TIMING {test}: power-on -> registered as available in {:.1} s",
        vm.uptime().as_secs_f64()
    ));
    assert_registered_by_serial(&m, &machine.expect(), &vm.report());
    // The static address from the command line is the one the agent configured.
    vm.wait_for(
        &format!(
            "network: eth0 ({}) {VM_IP}/24 gateway {GATEWAY}",
            machine.mac
        ),
        Duration::from_secs(5),
    )?;
    Ok(())
}

#[test]
fn agent_registers_after_the_appliance_comes_back() -> Result<()> {
    let test = "agent_registers_after_the_appliance_comes_back";
    if !gate::require(test, VM_NEEDS)? {
        return Ok(());
    }
    let machine = Machine {
        serial: "RH-AGENT-0002",
        uuid: "5e1ec7ed-0000-4000-8000-525400997101",
        mac: test_mac(0x71, 1),
        disk_bytes: 1 << 30,
        mem_mib: 768,
    };
    let dir = WorkDir::new(test)?;
    let ns = Netns::new(1)?;
    // The token is issued (and stored) with the script; then the appliance goes away.
    let cmdline = {
        let app = Appliance::start(&ns, dir.path(), &http_only())?;
        let c = cmdline_from_appliance(&app, machine.mac)?;
        app.stop();
        c
    };
    let vm = machine.builder(&ns, &cmdline)?.start(&ns, dir.path())?;
    // The outage counts from the agent's first failed attempt, so that the agent itself sees
    // the appliance gone for the whole of it.
    let first_retry = vm.wait_for(REGISTER_RETRY, REGISTER_TIMEOUT)?;
    let down_since = Instant::now();
    std::thread::sleep(OUTAGE);
    if let Some(st) = vm.try_wait() {
        panic!(
            "the VM stopped ({st}) while the appliance was down:\n{}",
            vm.report()
        );
    }
    let retries = vm.console().text().matches(REGISTER_RETRY).count();
    assert!(
        retries >= 2,
        "the agent tried {retries} time(s) in {:.1} s:\n{}",
        down_since.elapsed().as_secs_f64(),
        vm.report()
    );
    let outage = down_since.elapsed();

    // Back on the same data directory: the token issued before is still valid.
    let app = Appliance::start(&ns, dir.path(), &http_only())?;
    let back = Instant::now();
    let (m, _) = app.wait_for_machine(
        machine.serial,
        MachineState::Available,
        REGISTER_TIMEOUT,
        Some(&vm),
    )?;
    announce(&format!(
        "TIMING {test}: first failed register {:.1} s after power-on; agent saw the appliance \
         down for {:.1} s ({retries} failed attempts); registered {:.1} s after it came back",
        first_retry.as_secs_f64(),
        outage.as_secs_f64(),
        back.elapsed().as_secs_f64()
    ));
    assert_registered_by_serial(&m, &machine.expect(), &vm.report());
    Ok(())
}

#[test]
fn kernel_cmdline_takes_the_kernel_arguments_and_fills_in_the_address() {
    let script = "#!ipxe\n\
        echo rackhand: 52:54:00:99:70:01: booting the agent (discover)\n\
        kernel http://10.99.0.1:8080/assets/vmlinuz initrd=pxeimage.initramfs rackhand.url=http://10.99.0.1:8080 rackhand.token=ab BOOTIF=01-52-54-00-99-70-01 ip=${netX/ip}::${netX/gateway}:${netX/netmask}:::: console=ttyS0 || goto failed\n\
        initrd http://10.99.0.1:8080/assets/pxeimage.initramfs || goto failed\n";
    assert_eq!(
        kernel_cmdline(script).as_deref(),
        Some(
            "initrd=pxeimage.initramfs rackhand.url=http://10.99.0.1:8080 rackhand.token=ab \
             BOOTIF=01-52-54-00-99-70-01 ip=10.99.0.50::10.99.0.1:255.255.255.0:::: console=ttyS0"
        )
    );
    assert_eq!(kernel_cmdline("#!ipxe\nexit\n"), None);
    // An iPXE variable we do not fill in must not reach the kernel.
    assert_eq!(
        kernel_cmdline("kernel http://x/vmlinuz ip=${ip} host=${hostname}"),
        None
    );
}
