//! Shared pieces of the end-to-end scenarios: the standard test machine, the assertions on a
//! registered machine's record, disk hashing and the boot sector that proves a local-disk boot.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pxe_api::{IdentityKind, Mac, MachineView};
use rackhand_tests::gate::Need;
use rackhand_tests::proc::run_ok;
use rackhand_tests::{Appliance, Error, Netns, Result, Vm, VmBuilder};

/// Power-on to registration: 10–40 s in the quiet case depending on the firmware; TCG on a
/// busy 2-core host is slower.
pub(crate) const REGISTER_TIMEOUT: Duration = Duration::from_secs(600);

/// What every VM scenario needs (UEFI ones add [`Need::Ovmf`]).
pub(crate) const VM_NEEDS: &[Need] = &[
    Need::Root,
    Need::Iproute,
    Need::Qemu,
    Need::Curl,
    Need::Dist,
];

/// The facts a test machine was given, to compare with its record.
#[derive(Debug, Clone)]
pub(crate) struct Expect<'a> {
    /// SMBIOS system serial.
    pub(crate) serial: &'a str,
    /// SMBIOS system UUID (lowercase), if one was set.
    pub(crate) uuid: Option<&'a str>,
    /// Every NIC MAC.
    pub(crate) macs: &'a [Mac],
    /// Size of the one test disk.
    pub(crate) disk_bytes: u64,
    /// Its virtio serial, if set.
    pub(crate) disk_serial: Option<&'a str>,
    /// Guest RAM.
    pub(crate) mem_mib: u32,
}

/// Asserts that a machine registered by its serial: identity by serial, every MAC on the
/// record and in the hardware report, the disk, and memory of this VM's size. `context` is
/// printed on failure (console tails).
pub(crate) fn assert_registered_by_serial(m: &MachineView, want: &Expect<'_>, context: &str) {
    let ctx = || format!("{m:#?}\n{context}");
    assert_eq!(m.identity_kind, IdentityKind::Serial, "{}", ctx());
    assert_eq!(
        m.identity_key,
        format!("serial:{}", want.serial),
        "{}",
        ctx()
    );
    assert!(!m.serial_untrusted, "{}", ctx());
    assert_eq!(m.conflict_with, None, "{}", ctx());
    assert_hardware(m, want, context);
}

/// The hardware part of the assertions: serial and UUID as reported, every MAC on the record
/// and among the NICs, the disk (by size, and serial if the kernel shows one), the memory.
pub(crate) fn assert_hardware(m: &MachineView, want: &Expect<'_>, context: &str) {
    let ctx = || format!("{m:#?}\n{context}");
    assert_eq!(m.serial.as_deref(), Some(want.serial), "{}", ctx());
    for mac in want.macs {
        assert!(m.macs.contains(mac), "MAC {mac} missing: {}", ctx());
    }
    let Some(hw) = m.hardware.as_ref() else {
        panic!("no hardware report: {}", ctx());
    };
    assert_eq!(
        hw.dmi.system_serial.as_deref(),
        Some(want.serial),
        "{}",
        ctx()
    );
    if let Some(uuid) = want.uuid {
        assert_eq!(
            hw.dmi
                .system_uuid
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some(uuid),
            "{}",
            ctx()
        );
    }
    let nic_macs: Vec<Mac> = hw.nics.iter().map(|n| n.mac).collect();
    for mac in want.macs {
        assert!(nic_macs.contains(mac), "NIC {mac} not reported: {}", ctx());
    }
    let Some(disk) = hw.disks.iter().find(|d| d.size_bytes == want.disk_bytes) else {
        panic!("no {}-byte disk: {}", want.disk_bytes, ctx());
    };
    if let (Some(got), Some(want)) = (&disk.serial, want.disk_serial) {
        assert_eq!(got, want, "{}", ctx());
    }
    // The kernel keeps some RAM for itself, but the report must be about this VM's memory.
    let Some(total) = hw.memory.total_bytes else {
        panic!("no memory total: {}", ctx());
    };
    let ram = u64::from(want.mem_mib) << 20;
    assert!(
        total > ram / 2 && total <= ram,
        "memory {total} for -m {}: {}",
        want.mem_mib,
        ctx()
    );
}

/// Text printed on the first serial port by [`BOOT_SECTOR`].
pub(crate) const BOOT_SECTOR_MESSAGE: &str = "rackhand-test: the local disk's boot sector runs";

/// A 512-byte MBR boot sector that writes [`BOOT_SECTOR_MESSAGE`] to COM1 (port 0x3f8) and
/// halts: proof on the console that the firmware booted the local disk. 16-bit real mode,
/// loaded at 0000:7c00:
///
/// ```text
/// 7c00 fa          cli
/// 7c01 fc          cld
/// 7c02 31 c0       xor  ax, ax
/// 7c04 8e d8       mov  ds, ax
/// 7c06 be 18 7c    mov  si, 0x7c18      ; the message
/// 7c09 ba f8 03    mov  dx, 0x3f8       ; COM1 data register
/// 7c0c ac          lodsb                ; next:
/// 7c0d 84 c0       test al, al
/// 7c0f 74 03       jz   7c14
/// 7c11 ee          out  dx, al
/// 7c12 eb f8       jmp  7c0c
/// 7c14 f4          hlt                  ; done:
/// 7c15 eb fd       jmp  7c14
/// 7c17 90          nop
/// 7c18 "…\r\n\0"
/// ```
pub(crate) fn boot_sector() -> [u8; 512] {
    const CODE: [u8; 24] = [
        0xfa, 0xfc, 0x31, 0xc0, 0x8e, 0xd8, 0xbe, 0x18, 0x7c, 0xba, 0xf8, 0x03, 0xac, 0x84, 0xc0,
        0x74, 0x03, 0xee, 0xeb, 0xf8, 0xf4, 0xeb, 0xfd, 0x90,
    ];
    let mut s = [0u8; 512];
    let msg = format!("{BOOT_SECTOR_MESSAGE}\r\n\0");
    for (dst, src) in s.iter_mut().zip(CODE.iter().chain(msg.as_bytes())) {
        *dst = *src;
    }
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

/// Creates a sparse raw disk image of `size` bytes with [`boot_sector`] in sector 0 and a
/// recognisable 64 KiB pattern at 1 MiB (so that a wipe of either shows in the hash).
pub(crate) fn bootable_raw_disk(path: &Path, size: u64) -> Result<()> {
    let io = |op: &'static str| move |e: std::io::Error| Error::IoOther { op, source: e };
    let mut f = std::fs::File::create(path).map_err(io("creating the test disk"))?;
    f.set_len(size).map_err(io("sizing the test disk"))?;
    f.write_all(&boot_sector())
        .map_err(io("writing the boot sector"))?;
    f.seek(SeekFrom::Start(1 << 20))
        .map_err(io("seeking in the test disk"))?;
    let pattern: Vec<u8> = (0..65536u32)
        .map(|i| u8::try_from(i.wrapping_mul(2_654_435_761) >> 24).unwrap_or(0))
        .collect();
    f.write_all(&pattern).map_err(io("writing the pattern"))?;
    f.sync_all().map_err(io("syncing the test disk"))
}

/// `sha256sum` of a file (the whole file, holes included).
pub(crate) fn sha256(path: &Path) -> Result<String> {
    let out = run_ok(
        Command::new("sha256sum").arg(path),
        Duration::from_secs(120),
    )?;
    out.split_whitespace()
        .next()
        .filter(|h| h.len() == 64)
        .map(str::to_owned)
        .ok_or_else(|| Error::Invalid(format!("sha256sum printed {out:?}")))
}

#[test]
fn boot_sector_layout() {
    let s = boot_sector();
    assert_eq!(&s[510..], &[0x55, 0xaa]);
    // `mov si, 0x7c18` must point at the message, which must end in NUL.
    assert_eq!(&s[6..9], &[0xbe, 0x18, 0x7c]);
    let msg = &s[0x18..];
    assert!(msg.starts_with(BOOT_SECTOR_MESSAGE.as_bytes()));
    let end = 0x18 + BOOT_SECTOR_MESSAGE.len();
    assert_eq!(&s[end..end + 3], b"\r\n\0");
    // Each short jump (opcode, rel8 at `at`) lands on the instruction it is meant to.
    let target = |at: usize| {
        let next = i32::try_from(at + 1).unwrap();
        usize::try_from(next + i32::from(i8::from_ne_bytes([s[at]]))).unwrap()
    };
    assert_eq!((s[0x0f], s[target(0x10)]), (0x74, 0xf4), "jz -> hlt");
    assert_eq!((s[0x12], s[target(0x13)]), (0xeb, 0xac), "jmp -> lodsb");
    assert_eq!((s[0x15], s[target(0x16)]), (0xeb, 0xf4), "jmp -> hlt");
}

/// One 4 KiB canary block for wipe tests: a recognisable header and the block's index.
pub(crate) fn canary_block(i: u64) -> Vec<u8> {
    let mut b = format!("RACKHAND-CANARY-BLOCK-{i:012}-").into_bytes();
    b.resize(4096, 0xA5);
    b
}

/// Creates `path` as `size` bytes of [`canary_block`]s.
pub(crate) fn fill_with_canaries(path: &Path, size: u64) -> Result<()> {
    let io = |op: &'static str| move |e: std::io::Error| Error::IoOther { op, source: e };
    let mut f = std::fs::File::create(path).map_err(io("creating the canary disk"))?;
    for i in 0..size / 4096 {
        f.write_all(&canary_block(i))
            .map_err(io("writing canaries"))?;
    }
    f.sync_all().map_err(io("syncing the canary disk"))
}

/// Number of 4 KiB blocks of `path` that still hold a canary header.
pub(crate) fn canary_blocks(path: &Path) -> Result<u64> {
    let io = |op: &'static str| move |e: std::io::Error| Error::IoOther { op, source: e };
    let mut f = std::fs::File::open(path).map_err(io("opening the disk image"))?;
    let mut buf = vec![0u8; 4096];
    let mut found = 0;
    loop {
        match std::io::Read::read_exact(&mut f, &mut buf) {
            Ok(()) => found += u64::from(buf.starts_with(b"RACKHAND-CANARY-BLOCK-")),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(found),
            Err(e) => return Err(io("scanning the disk image")(e)),
        }
    }
}

/// The recycle of a registered machine whose agent is waiting (`waiting`, booted for its
/// registration): orders the recycle with `body` (400/409 fail the test), lets the waiting
/// boot end (the agent's token dies with the state change), powers the machine on again with
/// `next` for the recycle, and waits until it is `available`. Returns the machine, the order's
/// reply body and how long the recycle boot took.
pub(crate) fn recycle_to_available(
    app: &Appliance,
    ns: &Netns,
    dir: &Path,
    waiting: Vm<'_>,
    m: &MachineView,
    body: &serde_json::Value,
    next: VmBuilder,
) -> Result<(MachineView, String, Duration)> {
    let reply = app.operator_post(&format!("/api/v1/machines/{}/recycle", m.id), body)?;
    assert_eq!(reply.status, 200, "recycle: {}", reply.body);
    waiting.wait_end_of_boot(Duration::from_secs(180))?;
    drop(waiting);

    // The agent boots for the recycle order, wipes, verifies, reports, and reboots.
    let vm = next.start(ns, dir)?;
    let started = std::time::Instant::now();
    vm.wait_end_of_boot(REGISTER_TIMEOUT)?;
    let took = started.elapsed();
    drop(vm);
    let serial = m
        .serial
        .as_deref()
        .expect("a machine registered by its serial");
    let (m, _) = app.wait_for_machine(
        serial,
        pxe_api::MachineState::Available,
        Duration::from_secs(30),
        None,
    )?;
    Ok((m, reply.body, took))
}
