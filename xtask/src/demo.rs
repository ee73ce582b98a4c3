//! `cargo xtask demo`: the walking skeleton, live. Installs what is missing, builds
//! `target/dist`, starts the appliance in a private network namespace (full DHCP, TFTP, HTTP),
//! powers on a blank QEMU machine (SeaBIOS + iPXE, TCG) and shows it appearing in the
//! inventory, with a timeline from power-on to registration read off the machine's console.
//!
//! Everything runs inside a namespace this command creates and removes; no traffic leaves it.

use std::time::Duration;

use anyhow::{Context, Result};
use pxe_api::MachineState;
use rackhand_tests::{
    Appliance, ApplianceConfig, DiskFormat, Firmware, Netns, NsCommand, VmBuilder, WorkDir,
    test_mac,
};

use crate::{dist, setup};

/// Console lines that mark each step, in boot order.
const MILESTONES: &[(&str, &str)] = &[
    ("firmware hands over to iPXE", "iPXE"),
    ("DHCP lease from the appliance", "net0: 10.99.0."),
    ("boot script: agent chosen", "booting the agent"),
    ("kernel and initramfs loaded", "pxeimage.initramfs... ok"),
    ("agent running as PID 1", "starting as PID 1"),
    ("boot NIC configured", "rackhand: network:"),
    ("registered with the appliance", "rackhand: registered as"),
];

const SERIAL: &str = "DEMO-RACK42-U07";

pub(crate) fn run(_args: &[String]) -> Result<()> {
    setup::run()?;
    dist::run(&[])?;
    println!("\n== rackhand demo: a blank machine is racked and powered on ==\n");
    let dir = WorkDir::new("demo")?;
    let ns = Netns::new(1)?;
    let app = Appliance::start(&ns, dir.path(), &ApplianceConfig::full())?;
    println!(
        "appliance up in namespace {} at {} (DHCP full 10.99.0.100-199, TFTP, HTTP)",
        ns.name(),
        app.url()
    );
    let mac = test_mac(0x42, 1);
    let vm = VmBuilder::new("demo")
        .firmware(Firmware::Bios)
        .memory_mib(1024)
        .nic(ns.tap(0)?, mac)
        .disk(8 << 30, DiskFormat::Qcow2, Some("DEMODISK0"))
        .smbios_serial(SERIAL)
        .start(&ns, dir.path())?;
    println!("powered on a blank machine: serial {SERIAL}, NIC {mac}, 8 GiB disk\n");
    println!("{:>8}  step", "seconds");
    println!("{:>8.1}  power on", 0.0);
    for (label, pattern) in MILESTONES {
        let t = vm
            .wait_for(pattern, Duration::from_secs(300))
            .with_context(|| format!("waiting for: {label}"))?;
        println!("{:>8.1}  {label}", t.as_secs_f64());
    }
    let (m, _) = app.wait_for_machine(
        SERIAL,
        MachineState::Available,
        Duration::from_secs(60),
        Some(&vm),
    )?;
    println!(
        "{:>8.1}  in the inventory: {} {} ({})\n",
        vm.uptime().as_secs_f64(),
        m.id,
        m.state,
        m.identity_key
    );
    let cli = |args: &[&str]| -> Result<String> {
        Ok(ns.exec_ok(
            &NsCommand::new(app.binary())
                .args(args)
                .args(["--api", app.url()])
                .arg("--data-dir")
                .arg(app.data_dir()),
            Duration::from_secs(30),
        )?)
    };
    println!("$ pxe-server machine list");
    print!("{}", cli(&["machine", "list"])?);
    println!("\n$ pxe-server machine history {SERIAL}");
    print!("{}", cli(&["machine", "history", SERIAL])?);
    println!("\n(the namespace, the appliance and the VM are removed now)");
    drop(vm);
    drop(app);
    drop(ns);
    Ok(())
}
