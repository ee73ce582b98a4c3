//! End-to-end scenarios beyond the first BIOS registration: the UEFI firmware paths, identity
//! edge cases (placeholder serial, duplicate serial), a machine in use booting its own disk, and
//! several machines netbooting at once. Each uses the real appliance from `cargo xtask dist`,
//! real firmware under QEMU/TCG and the real `pxeimage` agent, and prints a `TIMING` line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pxe_api::{IdentityKind, Mac, MachineState, MachineView};
use rackhand_tests::gate::{self, Need, announce};
use rackhand_tests::slots;
use rackhand_tests::{
    Appliance, ApplianceConfig, DiskFormat, Firmware, Netns, Result, VmBuilder, WorkDir, test_mac,
};

use crate::support::{
    BOOT_SECTOR_MESSAGE, Expect, REGISTER_TIMEOUT, VM_NEEDS, assert_hardware,
    assert_registered_by_serial, bootable_raw_disk, sha256,
};

/// The boot script retries forever; in this closed network one failure is a bug.
const AGENT_LOAD_FAILED: &str = "could not load the agent";
/// The appliance's script line for a machine in use (see `pxe-server/src/boot.rs`).
const LOCAL_DISK_LINE: &str = "in use, booting from the local disk";

fn needs(uefi: bool) -> Vec<Need> {
    let mut n = VM_NEEDS.to_vec();
    if uefi {
        n.push(Need::Ovmf);
    }
    n
}

/// One UEFI machine with two NICs and a blank disk netboots through OVMF's own network stack
/// and registers; the same assertions as the BIOS scenario.
fn uefi_machine_registers(test: &str, firmware: Firmware, tag: u8) -> Result<()> {
    if !gate::require(test, &needs(true))? {
        return Ok(());
    }
    let serial = format!("RH-UEFI-{tag:02X}");
    let uuid = format!("5e1ec7ed-0000-4000-8000-5254009a{tag:02x}01");
    let macs = [test_mac(tag, 1), test_mac(tag, 2)];
    let disk_bytes: u64 = 2 << 30;
    let disk_serial = format!("RHUEFIDISK{tag:02X}");
    let mem_mib = 1024;

    let dir = WorkDir::new(test)?;
    let ns = Netns::new(2)?;
    let app = Appliance::start(&ns, dir.path(), &ApplianceConfig::full())?;
    let vm = VmBuilder::new(&format!("uefi-{tag:02x}"))
        .firmware(firmware)
        .memory_mib(mem_mib)
        .nic(ns.tap(0)?, macs[0])
        .nic(ns.tap(1)?, macs[1])
        .disk(disk_bytes, DiskFormat::Qcow2, Some(&disk_serial))
        .smbios_serial(&serial)
        .uuid(&uuid)
        .fail_on(AGENT_LOAD_FAILED)
        .start(&ns, dir.path())?;

    let (m, _) = app.wait_for_machine(
        &serial,
        MachineState::Available,
        REGISTER_TIMEOUT,
        Some(&vm),
    )?;
    let registered = vm.uptime();
    announce(&format!(
        "TIMING {test}: power-on -> registered as available in {:.1} s (slot wait {:.1} s)",
        registered.as_secs_f64(),
        vm.slot_wait().as_secs_f64()
    ));
    // The firmware path really was the one under test: the appliance handed OVMF's own stack
    // ipxe.efi (by TFTP name or HTTP URL), and then the EFI iPXE the boot script.
    let log = app.log_tail(400);
    let first_boot = match firmware {
        Firmware::UefiHttp => format!("boot=Some(\"{}/assets/ipxe.efi\")", app.url()),
        _ => "boot=Some(\"ipxe.efi\")".to_owned(),
    };
    let acks: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("DHCPACK") && l.contains(&format!("mac={}", macs[0])))
        .collect();
    assert!(
        acks.iter().any(|l| l.contains(&first_boot))
            && acks.iter().any(|l| l.contains("/boot.ipxe")),
        "DHCP acks for {}: {acks:#?}\n{}",
        macs[0],
        vm.report()
    );
    assert_registered_by_serial(
        &m,
        &Expect {
            serial: &serial,
            uuid: Some(&uuid),
            macs: &macs,
            disk_bytes,
            disk_serial: Some(&disk_serial),
            mem_mib,
        },
        &vm.report(),
    );
    assert_eq!(
        m.hardware.as_ref().map(|h| h.boot_mode),
        Some(pxe_api::hardware::BootMode::Uefi),
        "{m:#?}"
    );
    Ok(())
}

#[test]
fn uefi_pxe_unknown_machine_registers() -> Result<()> {
    uefi_machine_registers(
        "uefi_pxe_unknown_machine_registers",
        Firmware::UefiPxe,
        0x30,
    )
}

#[test]
fn uefi_http_boot_unknown_machine_registers() -> Result<()> {
    uefi_machine_registers(
        "uefi_http_boot_unknown_machine_registers",
        Firmware::UefiHttp,
        0x31,
    )
}

#[test]
fn placeholder_serial_registers_by_uuid() -> Result<()> {
    let test = "placeholder_serial_registers_by_uuid";
    if !gate::require(test, &needs(false))? {
        return Ok(());
    }
    let placeholder = "To be filled by O.E.M.";
    let uuid = "5e1ec7ed-0000-4000-8000-525400993201";
    let mac = test_mac(0x32, 1);
    let disk_bytes: u64 = 1 << 30;
    let mem_mib = 1024;

    let dir = WorkDir::new(test)?;
    let ns = Netns::new(1)?;
    let app = Appliance::start(&ns, dir.path(), &ApplianceConfig::full())?;
    let vm = VmBuilder::new("placeholder")
        .nic(ns.tap(0)?, mac)
        .disk(disk_bytes, DiskFormat::Qcow2, None)
        .smbios_serial(placeholder)
        .uuid(uuid)
        .fail_on(AGENT_LOAD_FAILED)
        .start(&ns, dir.path())?;
    let (m, _) = app.wait_for_machine(
        placeholder,
        MachineState::Available,
        REGISTER_TIMEOUT,
        Some(&vm),
    )?;
    announce(&format!(
        "TIMING {test}: power-on -> registered as available in {:.1} s",
        vm.uptime().as_secs_f64()
    ));
    let ctx = || format!("{m:#?}\n{}", vm.report());
    assert_eq!(m.identity_kind, IdentityKind::Uuid, "{}", ctx());
    assert_eq!(m.identity_key, format!("uuid:{uuid}"), "{}", ctx());
    assert!(m.serial_untrusted, "{}", ctx());
    assert_eq!(m.system_uuid.as_deref(), Some(uuid), "{}", ctx());
    assert_hardware(
        &m,
        &Expect {
            serial: placeholder,
            uuid: Some(uuid),
            macs: &[mac],
            disk_bytes,
            disk_serial: None,
            mem_mib,
        },
        &vm.report(),
    );
    // The operator's view says so too.
    let shown = app.cli(&["machine", "show", &m.id])?;
    assert!(
        shown.contains(&format!("uuid:{uuid}")) && shown.contains("placeholder, not trusted"),
        "`machine show`:\n{shown}"
    );
    Ok(())
}

#[test]
fn same_serial_with_other_macs_is_a_conflict() -> Result<()> {
    let test = "same_serial_with_other_macs_is_a_conflict";
    if !gate::require(test, &needs(false))? {
        return Ok(());
    }
    let serial = "RH-DUP-0001";
    let (mac_a, mac_b) = (test_mac(0x33, 1), test_mac(0x33, 2));
    let dir = WorkDir::new(test)?;
    let ns = Netns::new(2)?;
    let app = Appliance::start(&ns, dir.path(), &ApplianceConfig::full())?;

    let machine = |name: &str, tap: usize, mac: Mac| -> Result<VmBuilder> {
        Ok(VmBuilder::new(name)
            .nic(ns.tap(tap)?, mac)
            .disk(1 << 30, DiskFormat::Qcow2, None)
            .smbios_serial(serial)
            .fail_on(AGENT_LOAD_FAILED))
    };
    let first = {
        let vm = machine("dup-a", 0, mac_a)?.start(&ns, dir.path())?;
        let (m, _) =
            app.wait_for_machine(serial, MachineState::Available, REGISTER_TIMEOUT, Some(&vm))?;
        announce(&format!(
            "TIMING {test}: first machine registered as available in {:.1} s",
            vm.uptime().as_secs_f64()
        ));
        m
        // The first machine powers off here: its record is what counts.
    };
    assert_eq!(first.identity_key, format!("serial:{serial}"));

    let vm = machine("dup-b", 1, mac_b)?.start(&ns, dir.path())?;
    let (second, _) =
        app.wait_for_machine(serial, MachineState::Conflict, REGISTER_TIMEOUT, Some(&vm))?;
    announce(&format!(
        "TIMING {test}: second machine registered in conflict in {:.1} s",
        vm.uptime().as_secs_f64()
    ));
    let ctx = || format!("first {first:#?}\nsecond {second:#?}\n{}", vm.report());
    assert_ne!(second.id, first.id, "{}", ctx());
    assert_eq!(
        second.conflict_with.as_deref(),
        Some(first.id.as_str()),
        "{}",
        ctx()
    );
    assert!(
        second.macs.contains(&mac_b) && !second.macs.contains(&mac_a),
        "{}",
        ctx()
    );
    // The agent tells the console why it will not go on.
    vm.wait_for("MACHINE STATE IS CONFLICT", Duration::from_secs(60))?;
    // The first record is untouched.
    let first_now = app.machine(&first.id)?;
    assert_eq!(first_now.state, MachineState::Available, "{first_now:#?}");
    assert_eq!(first_now.macs, vec![mac_a], "{first_now:#?}");

    // `machine list --json` and the text table both show the conflict.
    let listed: Vec<MachineView> = serde_json::from_str(&app.cli(&["machine", "list", "--json"])?)
        .map_err(|source| rackhand_tests::Error::Decode {
            what: "machine list --json".into(),
            text: String::new(),
            source,
        })?;
    assert_eq!(listed.len(), 2, "{listed:#?}");
    let row = listed.iter().find(|m| m.id == second.id);
    assert_eq!(
        row.map(|m| (m.state, m.conflict_with.clone())),
        Some((MachineState::Conflict, Some(first.id.clone()))),
        "{listed:#?}"
    );
    let table = app.cli(&["machine", "list"])?;
    let line = table.lines().find(|l| l.starts_with(&second.id));
    assert!(
        line.is_some_and(|l| l.split_whitespace().nth(1) == Some("conflict")
            && l.contains(&format!("serial:{serial}"))
            && l.contains(&mac_b.to_string())),
        "`machine list`:\n{table}"
    );
    let only = app.cli(&["machine", "list", "--state", "conflict"])?;
    assert!(
        only.contains(&second.id) && !only.contains(&first.id),
        "`machine list --state conflict`:\n{only}"
    );
    Ok(())
}

#[test]
fn in_use_machine_boots_its_local_disk_untouched() -> Result<()> {
    let test = "in_use_machine_boots_its_local_disk_untouched";
    if !gate::require(test, &needs(false))? {
        return Ok(());
    }
    let serial = "RH-INUSE-0001";
    let uuid = "5e1ec7ed-0000-4000-8000-525400993401";
    let mac = test_mac(0x34, 1);
    let disk_bytes: u64 = 256 << 20;
    let dir = WorkDir::new(test)?;
    let disk = dir.path().join("inuse.disk.img");
    bootable_raw_disk(&disk, disk_bytes)?;
    let at_creation = sha256(&disk)?;

    let ns = Netns::new(1)?;
    let app = Appliance::start(&ns, dir.path(), &ApplianceConfig::full())?;
    let machine = |name: &str| -> Result<VmBuilder> {
        Ok(VmBuilder::new(name)
            .nic(ns.tap(0)?, mac)
            .existing_disk(&disk, DiskFormat::Raw, Some("RHINUSEDISK"))
            .smbios_serial(serial)
            .uuid(uuid)
            .fail_on(AGENT_LOAD_FAILED))
    };

    // First boot: the unknown machine registers.
    let vm = machine("inuse-1")?.start(&ns, dir.path())?;
    let (m, _) =
        app.wait_for_machine(serial, MachineState::Available, REGISTER_TIMEOUT, Some(&vm))?;
    let registered = vm.uptime();

    // The operator marks it in use through the API.
    let reply = app.operator_post(
        &format!("/api/v1/machines/{}/in-use", m.id),
        &serde_json::json!({}),
    )?;
    assert_eq!(reply.status, 200, "in-use: {}", reply.body);
    let after: MachineView =
        serde_json::from_str(&reply.body).map_err(|source| rackhand_tests::Error::Decode {
            what: "in-use reply".into(),
            text: reply.body.clone(),
            source,
        })?;
    assert_eq!(after.state, MachineState::InUse, "{after:#?}");
    // The running agent loses its token and reboots; `-no-reboot` turns that into an exit.
    let marked = Instant::now();
    vm.wait_exit(Duration::from_secs(180))?;
    let agent_left = marked.elapsed();
    let first_console = vm.console().text();
    assert!(
        first_console.contains("revoked"),
        "the agent did not say why it rebooted:\n{}",
        vm.report()
    );
    drop(vm);
    let before_reboot = sha256(&disk)?;
    assert_eq!(
        before_reboot, at_creation,
        "the discovering agent changed the disk"
    );

    // Power on again: same MAC, serial and disk.
    let vm = machine("inuse-2")?.start(&ns, dir.path())?;
    vm.wait_for(LOCAL_DISK_LINE, REGISTER_TIMEOUT)?;
    let booted = vm.wait_for(BOOT_SECTOR_MESSAGE, Duration::from_secs(120))?;
    // Give a wrongly started agent time to show itself before looking.
    std::thread::sleep(Duration::from_secs(3));
    let console = vm.console().text();
    assert!(
        !console.contains("pxeimage") && !console.contains("booting the agent"),
        "the agent started although the machine is in use:\n{}",
        vm.report()
    );
    assert_eq!(app.machine(&m.id)?.state, MachineState::InUse);
    vm.stop();
    drop(vm);
    let after_boot = sha256(&disk)?;
    assert_eq!(
        after_boot, before_reboot,
        "the local-disk boot changed the disk"
    );
    announce(&format!(
        "TIMING {test}: registered in {:.1} s; agent rebooted {:.1} s after in-use; \
         power-on -> local disk boot sector running in {:.1} s",
        registered.as_secs_f64(),
        agent_left.as_secs_f64(),
        booted.as_secs_f64()
    ));
    Ok(())
}

#[test]
fn three_machines_powered_on_together_register() -> Result<()> {
    let test = "three_machines_powered_on_together_register";
    if !gate::require(test, &needs(false))? {
        return Ok(());
    }
    const N: u8 = 3;
    let dir = WorkDir::new(test)?;
    let ns = Netns::new(usize::from(N))?;
    let app = Appliance::start(&ns, dir.path(), &ApplianceConfig::full())?;
    // Three VMs at once are more than the host's two slots: take every slot, so that nothing
    // else on the host runs a VM meanwhile, and run all three under that reservation.
    let reservation = Arc::new(slots::reserve_host(rackhand_tests::qemu::SLOT_TIMEOUT)?);
    let mut vms = Vec::new();
    for i in 1..=N {
        let vm = VmBuilder::new(&format!("trio-{i}"))
            .nic(ns.tap(usize::from(i - 1))?, test_mac(0x35, i))
            .disk(1 << 30, DiskFormat::Qcow2, None)
            .smbios_serial(&format!("RH-TRIO-000{i}"))
            .fail_on(AGENT_LOAD_FAILED)
            .start_reserved(&ns, dir.path(), &reservation)?;
        vms.push(vm);
    }
    let mut ids = Vec::new();
    let mut times = Vec::new();
    for (vm, i) in vms.iter().zip(1..=N) {
        let serial = format!("RH-TRIO-000{i}");
        let (m, _) =
            app.wait_for_machine(&serial, MachineState::Available, REGISTER_TIMEOUT, Some(vm))?;
        let mac = test_mac(0x35, i);
        assert_eq!(m.macs, vec![mac], "{m:#?}");
        assert_eq!(m.identity_key, format!("serial:{serial}"), "{m:#?}");
        ids.push(m.id);
        times.push(vm.uptime());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), usize::from(N), "{ids:?}");
    // Every machine got its own lease.
    let log = app.log_tail(400);
    let mut leases: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("DHCPACK"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("ip=")))
        .collect();
    leases.sort_unstable();
    leases.dedup();
    assert!(leases.len() >= usize::from(N), "leases {leases:?}\n{log}");
    let slowest = times.iter().max().copied().unwrap_or_default();
    announce(&format!(
        "TIMING {test}: {N} VMs at once, all registered {:.1} s after power-on \
         (each: {:?} s; waited {:.1} s for every host slot)",
        slowest.as_secs_f64(),
        times
            .iter()
            .map(|t| (t.as_secs_f64() * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
        reservation.waited().as_secs_f64()
    ));
    drop(vms);
    Ok(())
}
