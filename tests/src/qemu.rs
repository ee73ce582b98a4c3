//! QEMU machines on a namespace's taps.
//!
//! Always TCG (`-accel tcg`): the build host's `/dev/kvm` cannot run firmware (NOTES.md,
//! "KVM does not work"). The firmware paths are the four of the netboot recipe:
//!
//! | [`Firmware`] | firmware | network boot by |
//! |---|---|---|
//! | `Bios` | SeaBIOS | QEMU's iPXE option ROM (Debian `ipxe-qemu`) |
//! | `UefiPxe` | OVMF | OVMF's own PXE (NIC `romfile=` empty) → TFTP |
//! | `UefiHttp` | OVMF | OVMF's own HTTP boot (PXE and IPv6 off via fw_cfg) |
//! | `UefiIpxe` | OVMF | the NIC's iPXE EFI option ROM |
//!
//! A [`Vm`] borrows its [`Netns`], so it is always stopped (SIGTERM, 5 s, SIGKILL) before its
//! namespace goes away; the namespace's own teardown is the second line of defence.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pxe_api::Mac;

use crate::error::{Error, Result};
use crate::netns::{Netns, NsCommand, ProcId};
use crate::paths;
use crate::proc;
use crate::serial::{Abort, Console, TAIL_LINES, tail_lines};
use crate::slots::{self, HostReservation, VmSlot};

/// How long [`VmBuilder::start`] waits for a free VM slot.
pub const SLOT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Which firmware boots the machine and how it reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS with QEMU's iPXE ROM on the NIC.
    Bios,
    /// OVMF's own UEFI PXE: the NIC has no option ROM.
    UefiPxe,
    /// OVMF's own UEFI HTTP boot: no option ROM, PXE and IPv6 switched off.
    UefiHttp,
    /// OVMF running the NIC's iPXE EFI option ROM.
    UefiIpxe,
}

impl Firmware {
    /// True for the OVMF variants.
    pub fn is_uefi(self) -> bool {
        !matches!(self, Firmware::Bios)
    }

    /// True when OVMF's own network stack must boot (the NIC gets `romfile=`).
    fn firmware_netboot(self) -> bool {
        matches!(self, Firmware::UefiPxe | Firmware::UefiHttp)
    }
}

/// Image format of a blank virtual disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    /// qcow2, made with `qemu-img create`.
    Qcow2,
    /// A sparse raw file.
    Raw,
}

impl DiskFormat {
    fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

#[derive(Debug, Clone)]
struct NicSpec {
    tap: String,
    mac: Mac,
}

#[derive(Debug, Clone)]
struct DiskSpec {
    size_bytes: u64,
    format: DiskFormat,
    serial: Option<String>,
    /// An image that already exists (kept as it is, not created): see
    /// [`VmBuilder::existing_disk`].
    existing: Option<PathBuf>,
    /// Attached as an NVMe controller (`-device nvme`) instead of virtio-blk.
    nvme: bool,
}

/// A Linux kernel booted directly by QEMU (`-kernel`, `-initrd`, `-append`), no firmware
/// netboot.
#[derive(Debug, Clone)]
struct DirectKernel {
    kernel: PathBuf,
    initrd: PathBuf,
    append: String,
}

/// The files of one VM inside its work directory.
#[derive(Debug, Clone)]
pub struct VmFiles {
    /// Guest serial console (`-serial file:`).
    pub serial_log: PathBuf,
    /// QEMU's own stdout and stderr.
    pub qemu_log: PathBuf,
    /// One image per disk.
    pub disks: Vec<PathBuf>,
    /// The VM's private copy of the OVMF variable store (UEFI only).
    pub ovmf_vars: PathBuf,
    /// The QMP socket, if enabled.
    pub qmp: PathBuf,
}

impl VmFiles {
    /// The layout for a VM called `name` in `dir`.
    pub fn in_dir(dir: &Path, name: &str, disks: usize) -> Self {
        VmFiles {
            serial_log: dir.join(format!("{name}.serial.log")),
            qemu_log: dir.join(format!("{name}.qemu.log")),
            disks: (0..disks)
                .map(|i| dir.join(format!("{name}.disk{i}.img")))
                .collect(),
            ovmf_vars: dir.join(format!("{name}.OVMF_VARS.fd")),
            qmp: dir.join(format!("{name}.qmp")),
        }
    }
}

/// Describes a VM; [`VmBuilder::start`] boots it.
#[derive(Debug, Clone)]
pub struct VmBuilder {
    name: String,
    firmware: Firmware,
    memory_mib: u32,
    cpus: u32,
    nics: Vec<NicSpec>,
    disks: Vec<DiskSpec>,
    smbios_serial: Option<String>,
    uuid: Option<String>,
    no_reboot: bool,
    qmp: bool,
    boot_network: bool,
    boot_index: bool,
    direct_kernel: Option<DirectKernel>,
    fail_patterns: Vec<String>,
}

/// Console text after which the firmware will never boot anything: waits fail at once.
/// SeaBIOS halts after "No bootable device." (no reboot timeout is set); OVMF's boot manager
/// says the second when every boot option failed.
pub const DEFAULT_FAIL_PATTERNS: &[&str] = &[
    "No bootable device.",
    "No bootable option or device was found",
];

impl VmBuilder {
    /// A VM called `name` (letters, digits, `-`, `_`): SeaBIOS, 1024 MiB, one vCPU, network
    /// boot, `-no-reboot`, no NICs or disks yet.
    pub fn new(name: &str) -> Self {
        VmBuilder {
            name: name.to_owned(),
            firmware: Firmware::Bios,
            memory_mib: 1024,
            cpus: 1,
            nics: Vec::new(),
            disks: Vec::new(),
            smbios_serial: None,
            uuid: None,
            no_reboot: true,
            qmp: false,
            boot_network: true,
            boot_index: false,
            direct_kernel: None,
            fail_patterns: DEFAULT_FAIL_PATTERNS
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
        }
    }

    /// Also treat `pattern` on the console as a dead end (see [`DEFAULT_FAIL_PATTERNS`]).
    pub fn fail_on(mut self, pattern: &str) -> Self {
        self.fail_patterns.push(pattern.to_owned());
        self
    }

    /// Forget the default and added dead-end patterns (e.g. to watch a firmware give up).
    pub fn no_fail_patterns(mut self) -> Self {
        self.fail_patterns.clear();
        self
    }

    /// The firmware path.
    pub fn firmware(mut self, f: Firmware) -> Self {
        self.firmware = f;
        self
    }

    /// Guest RAM in MiB.
    pub fn memory_mib(mut self, m: u32) -> Self {
        self.memory_mib = m;
        self
    }

    /// A virtio-net NIC on `tap` (a tap of the VM's namespace) with this MAC.
    pub fn nic(mut self, tap: &str, mac: Mac) -> Self {
        self.nics.push(NicSpec {
            tap: tap.to_owned(),
            mac,
        });
        self
    }

    /// A blank virtio-blk disk of `size_bytes`, with an optional disk serial.
    pub fn disk(mut self, size_bytes: u64, format: DiskFormat, serial: Option<&str>) -> Self {
        self.disks.push(DiskSpec {
            size_bytes,
            format,
            serial: serial.map(str::to_owned),
            existing: None,
            nvme: false,
        });
        self
    }

    /// A virtio-blk disk backed by an image that already exists (e.g. the disk of an earlier
    /// VM of the same test, to "reboot" a machine): it is used as it is, never created or
    /// truncated. Its size is read when the VM starts.
    pub fn existing_disk(mut self, path: &Path, format: DiskFormat, serial: Option<&str>) -> Self {
        self.disks.push(DiskSpec {
            size_bytes: 0,
            format,
            serial: serial.map(str::to_owned),
            existing: Some(path.to_path_buf()),
            nvme: false,
        });
        self
    }

    /// Like [`VmBuilder::existing_disk`], but attached as the namespace of an emulated NVMe
    /// controller (`-device nvme,serial=…`; the guest sees `nvme0n1`). NVMe needs a serial.
    pub fn existing_nvme_disk(mut self, path: &Path, format: DiskFormat, serial: &str) -> Self {
        self.disks.push(DiskSpec {
            size_bytes: 0,
            format,
            serial: Some(serial.to_owned()),
            existing: Some(path.to_path_buf()),
            nvme: true,
        });
        self
    }

    /// Boot this kernel and initramfs directly (`-kernel`, `-initrd`, `-append`) instead of
    /// netbooting through firmware: SeaBIOS only runs QEMU's linuxboot ROM.
    pub fn direct_kernel(mut self, kernel: &Path, initrd: &Path, append: &str) -> Self {
        self.direct_kernel = Some(DirectKernel {
            kernel: kernel.to_path_buf(),
            initrd: initrd.to_path_buf(),
            append: append.to_owned(),
        });
        self
    }

    /// SMBIOS type 1 system serial (`-smbios type=1,serial=…`).
    pub fn smbios_serial(mut self, s: &str) -> Self {
        self.smbios_serial = Some(s.to_owned());
        self
    }

    /// SMBIOS system UUID (`-uuid`).
    pub fn uuid(mut self, u: &str) -> Self {
        self.uuid = Some(u.to_owned());
        self
    }

    /// `-no-reboot`: a guest reboot ends QEMU (default on).
    pub fn no_reboot(mut self, on: bool) -> Self {
        self.no_reboot = on;
        self
    }

    /// Open a QMP socket (see [`VmFiles::qmp`]).
    pub fn qmp(mut self, on: bool) -> Self {
        self.qmp = on;
        self
    }

    /// Boot from the network first (default) or from disk first.
    pub fn boot_network(mut self, on: bool) -> Self {
        self.boot_network = on;
        self
    }

    /// Also give every NIC and disk a QEMU `bootindex`, in the order [`VmBuilder::boot_network`]
    /// says (NICs then disks, or disks then NICs). OVMF ignores `-boot order=` and, without
    /// `bootindex`, tries a disk with `\EFI\BOOT\BOOTX64.EFI` before the network; with it,
    /// OVMF's boot order is the network first and the disk next, as on a server set up for
    /// netbooting. Off by default.
    pub fn boot_index(mut self, on: bool) -> Self {
        self.boot_index = on;
        self
    }

    /// The `bootindex` of NIC `i` (`nic`) or of disk `i`, if [`VmBuilder::boot_index`] is on.
    fn bootindex(&self, nic: bool, i: usize) -> Option<usize> {
        let before = if nic == self.boot_network {
            0
        } else if nic {
            self.disks.len()
        } else {
            self.nics.len()
        };
        self.boot_index.then_some(1 + before + i)
    }

    /// Checks names and values that end up inside QEMU option strings.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: &str| Err(Error::Invalid(format!("{what} {v:?}")));
        let ident = |s: &str, max: usize, extra: &[char]| {
            !s.is_empty()
                && s.len() <= max
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || extra.contains(&c))
        };
        if !ident(&self.name, 40, &['_']) {
            return bad("VM name", &self.name);
        }
        if !(64..=65536).contains(&self.memory_mib) {
            return bad("memory MiB", &self.memory_mib.to_string());
        }
        if !(1..=8).contains(&self.cpus) {
            return bad("vCPUs", &self.cpus.to_string());
        }
        // Spaces are allowed: vendors' placeholders ("To be filled by O.E.M.") contain them,
        // and each QEMU argument is one argv word. A ',' would start another option.
        if let Some(s) = &self.smbios_serial
            && (!ident(s, 64, &['_', '.', ' ']) || s.trim() != s)
        {
            return bad("SMBIOS serial", s);
        }
        if let Some(u) = &self.uuid {
            let shape = u.len() == 36
                && u.char_indices().all(|(i, c)| match i {
                    8 | 13 | 18 | 23 => c == '-',
                    _ => c.is_ascii_hexdigit(),
                });
            if !shape {
                return bad("UUID", u);
            }
        }
        for n in &self.nics {
            if !ident(&n.tap, 15, &[]) {
                return bad("tap", &n.tap);
            }
            if n.mac.is_unusable() || n.mac.0[0] & 1 == 1 {
                return bad("NIC MAC (must be unicast)", &n.mac.to_string());
            }
        }
        if let Some(k) = &self.direct_kernel {
            if self.firmware.is_uefi() {
                return bad(
                    "direct kernel boot with firmware",
                    &format!("{:?}", self.firmware),
                );
            }
            for p in [&k.kernel, &k.initrd] {
                if p.to_string_lossy().contains(',') {
                    return bad("path for QEMU (contains ',')", &p.display().to_string());
                }
            }
            if k.append.len() > 2048 || k.append.chars().any(|c| c.is_control()) {
                return bad("kernel command line", &k.append);
            }
        }
        for d in &self.disks {
            if d.existing.is_some() {
                if d.size_bytes != 0 {
                    return bad("existing disk with a size", &d.size_bytes.to_string());
                }
            } else if d.size_bytes == 0 || d.size_bytes % 512 != 0 {
                return bad(
                    "disk size (a non-zero multiple of 512)",
                    &d.size_bytes.to_string(),
                );
            }
            if let Some(s) = &d.serial
                && !ident(s, 20, &[])
            {
                return bad("disk serial (virtio-blk: at most 20)", s);
            }
        }
        Ok(())
    }

    /// The QEMU command line (without the program) for the given file layout. Pure.
    pub fn args(&self, files: &VmFiles) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| (*s).to_owned()));
        push(&["-name", &self.name, "-machine", "q35", "-accel", "tcg"]);
        push(&[
            "-m",
            &self.memory_mib.to_string(),
            "-smp",
            &self.cpus.to_string(),
        ]);
        push(&["-nodefaults", "-no-user-config", "-nographic"]);
        push(&["-monitor", "none"]);
        push(&["-serial", &format!("file:{}", files.serial_log.display())]);
        if self.no_reboot {
            push(&["-no-reboot"]);
        }
        if self.qmp {
            push(&[
                "-qmp",
                &format!("unix:{},server=on,wait=off", files.qmp.display()),
            ]);
        }
        if let Some(u) = &self.uuid {
            push(&["-uuid", u]);
        }
        let mut smbios = String::from("type=1,manufacturer=rackhand,product=TestVM");
        if let Some(s) = &self.smbios_serial {
            smbios.push_str(",serial=");
            smbios.push_str(s);
        }
        push(&["-smbios", &smbios]);
        if self.firmware.is_uefi() {
            push(&[
                "-drive",
                &format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    paths::OVMF_CODE
                ),
                "-drive",
                &format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    files.ovmf_vars.display()
                ),
                // Pitfall 4: each failing OVMF boot option costs 30-60 s under TCG.
                "-fw_cfg",
                "name=opt/org.tianocore/IPv6Support,string=no",
            ]);
            if self.firmware == Firmware::UefiHttp {
                push(&["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no"]);
            }
        }
        for (i, (d, path)) in self.disks.iter().zip(&files.disks).enumerate() {
            push(&[
                "-drive",
                &format!(
                    "file={},if=none,id=disk{i},format={}",
                    path.display(),
                    d.format.as_str()
                ),
            ]);
            let mut dev = if d.nvme {
                format!("nvme,drive=disk{i}")
            } else {
                format!("virtio-blk-pci,drive=disk{i}")
            };
            if let Some(s) = &d.serial {
                dev.push_str(",serial=");
                dev.push_str(s);
            }
            if let Some(b) = self.bootindex(false, i) {
                dev.push_str(&format!(",bootindex={b}"));
            }
            push(&["-device", &dev]);
        }
        if let Some(k) = &self.direct_kernel {
            push(&[
                "-kernel",
                &k.kernel.display().to_string(),
                "-initrd",
                &k.initrd.display().to_string(),
                "-append",
                &k.append,
            ]);
        }
        for (i, n) in self.nics.iter().enumerate() {
            push(&[
                "-netdev",
                &format!("tap,id=net{i},ifname={},script=no,downscript=no", n.tap),
            ]);
            let mut dev = format!("virtio-net-pci,netdev=net{i},mac={}", n.mac);
            if self.firmware.firmware_netboot() || self.direct_kernel.is_some() {
                // Pitfall 5: without a ROM, OVMF's own PXE/HTTP stack drives the NIC. A
                // directly booted kernel needs no network boot ROM at all.
                dev.push_str(",romfile=");
            }
            if let Some(b) = self.bootindex(true, i) {
                dev.push_str(&format!(",bootindex={b}"));
            }
            push(&["-device", &dev]);
        }
        if self.direct_kernel.is_none() {
            push(&[
                "-boot",
                if self.boot_network {
                    "order=n"
                } else {
                    "order=cn"
                },
            ]);
        }
        a
    }

    /// Creates the disks (and the OVMF variable copy) in `dir`, takes a VM slot, and starts
    /// QEMU inside `ns`.
    pub fn start<'ns>(self, ns: &'ns Netns, dir: &Path) -> Result<Vm<'ns>> {
        self.start_with(ns, dir, None)
    }

    /// Like [`VmBuilder::start`], but the VM runs under a [`HostReservation`] (every slot of
    /// the host, held by this test) instead of taking a slot of its own.
    pub fn start_reserved<'ns>(
        self,
        ns: &'ns Netns,
        dir: &Path,
        reservation: &Arc<HostReservation>,
    ) -> Result<Vm<'ns>> {
        self.start_with(ns, dir, Some(reservation))
    }

    fn start_with<'ns>(
        self,
        ns: &'ns Netns,
        dir: &Path,
        reservation: Option<&Arc<HostReservation>>,
    ) -> Result<Vm<'ns>> {
        self.validate()?;
        for n in &self.nics {
            if !ns.taps().contains(&n.tap) {
                return Err(Error::Invalid(format!(
                    "tap {} is not in namespace {}",
                    n.tap,
                    ns.name()
                )));
            }
        }
        let mut files = VmFiles::in_dir(dir, &self.name, self.disks.len());
        for (d, path) in self.disks.iter().zip(files.disks.iter_mut()) {
            if let Some(existing) = &d.existing {
                if !existing.is_file() {
                    return Err(Error::Invalid(format!(
                        "existing disk {} is not a file",
                        existing.display()
                    )));
                }
                path.clone_from(existing);
            }
        }
        // Paths go into QEMU option strings (',' separates options); a unix socket path
        // must fit in sun_path (108 bytes with the NUL).
        let all = [&files.serial_log, &files.ovmf_vars, &files.qmp]
            .into_iter()
            .chain(&files.disks);
        for p in all {
            let too_long = self.qmp && p == &files.qmp && p.as_os_str().len() > 107;
            if too_long || p.to_string_lossy().contains(',') {
                return Err(Error::Invalid(format!(
                    "unusable path for QEMU: {}",
                    p.display()
                )));
            }
        }
        for (d, path) in self.disks.iter().zip(&files.disks) {
            if d.existing.is_none() {
                create_disk(path, d.size_bytes, d.format)?;
            }
        }
        if self.firmware.is_uefi() {
            std::fs::copy(paths::OVMF_VARS, &files.ovmf_vars)
                .map_err(|e| Error::io("copying OVMF_VARS to", &files.ovmf_vars, e))?;
        }
        let qemu = paths::which("qemu-system-x86_64")
            .ok_or_else(|| Error::Invalid("qemu-system-x86_64 not found on PATH".into()))?;
        let slot = match reservation {
            Some(r) => {
                r.enter()?;
                SlotHold::Shared(Arc::clone(r))
            }
            None => SlotHold::Own(slots::acquire(SLOT_TIMEOUT)?),
        };
        let args = self.args(&files);
        let started = Instant::now();
        let proc = ns.spawn(
            &format!("qemu {}", self.name),
            &NsCommand::new(qemu).args(&args).log(&files.qemu_log),
        )?;
        Ok(Vm {
            ns,
            proc,
            fail_patterns: self.fail_patterns,
            name: self.name,
            console: Console::new(&files.serial_log, started),
            files,
            started,
            slot,
        })
    }
}

fn create_disk(path: &Path, size: u64, format: DiskFormat) -> Result<()> {
    match format {
        DiskFormat::Qcow2 => {
            proc::run_ok(
                Command::new("qemu-img")
                    .args(["create", "-q", "-f", "qcow2"])
                    .arg(path)
                    .arg(size.to_string()),
                Duration::from_secs(60),
            )?;
        }
        DiskFormat::Raw => {
            let f = std::fs::File::create(path).map_err(|e| Error::io("creating", path, e))?;
            f.set_len(size).map_err(|e| Error::io("sizing", path, e))?;
        }
    }
    Ok(())
}

/// How a running VM holds its place on the host.
#[derive(Debug)]
enum SlotHold {
    /// A slot of its own.
    Own(VmSlot),
    /// A share of a reservation of every slot.
    Shared(Arc<HostReservation>),
}

impl SlotHold {
    fn waited(&self) -> Duration {
        match self {
            SlotHold::Own(s) => s.waited(),
            SlotHold::Shared(r) => r.waited(),
        }
    }
}

impl Drop for SlotHold {
    fn drop(&mut self) {
        if let SlotHold::Shared(r) = self {
            r.leave();
        }
    }
}

/// A running QEMU machine. Dropping it stops QEMU.
#[derive(Debug)]
pub struct Vm<'ns> {
    ns: &'ns Netns,
    proc: ProcId,
    fail_patterns: Vec<String>,
    name: String,
    console: Console,
    files: VmFiles,
    started: Instant,
    slot: SlotHold,
}

impl Vm<'_> {
    /// The VM's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// QEMU's PID (the real QEMU process, not a wrapper).
    pub fn pid(&self) -> Option<u32> {
        self.ns.pid(self.proc)
    }

    /// The serial console.
    pub fn console(&self) -> &Console {
        &self.console
    }

    /// The VM's files.
    pub fn files(&self) -> &VmFiles {
        &self.files
    }

    /// Time since QEMU was started (power-on).
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// How long the VM waited for a free slot before it started.
    pub fn slot_wait(&self) -> Duration {
        self.slot.waited()
    }

    /// QEMU's exit status, if it has exited.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.ns.try_wait(self.proc)
    }

    /// The last lines of QEMU's own output.
    pub fn qemu_log_tail(&self, n: usize) -> String {
        let text = std::fs::read(&self.files.qemu_log).unwrap_or_default();
        tail_lines(&String::from_utf8_lossy(&text), n)
    }

    /// An abort check for waits: QEMU has exited, or the console shows a dead end (see
    /// [`DEFAULT_FAIL_PATTERNS`]).
    pub fn failed(&self) -> Option<Abort> {
        if let Some(st) = self.try_wait() {
            return Some(Abort {
                what: format!("QEMU {}", self.name),
                why: format!("{st}; QEMU output:\n{}", self.qemu_log_tail(TAIL_LINES)),
            });
        }
        let text = self.console.text();
        self.fail_patterns
            .iter()
            .find(|p| text.contains(p.as_str()))
            .map(|p| Abort {
                what: format!("VM {}", self.name),
                why: format!("its console shows the dead end {p:?}"),
            })
    }

    /// Waits for `pattern` on the console; fails early if QEMU exits or the console shows a
    /// dead end. Returns the time
    /// since power-on.
    pub fn wait_for(&self, pattern: &str, timeout: Duration) -> Result<Duration> {
        self.wait_for_any(&[pattern], timeout).map(|(_, t)| t)
    }

    /// Waits for any of `patterns`; returns which and the time since power-on.
    pub fn wait_for_any(&self, patterns: &[&str], timeout: Duration) -> Result<(usize, Duration)> {
        self.console
            .wait_for_any_or(patterns, timeout, || self.failed())
    }

    /// Calls `check` every `step` until it yields a value (or an error); fails early if QEMU
    /// exits or the console shows a dead end, and after `timeout`. `what` names the wait in
    /// errors ("waiting for WHAT", "WHAT on VM").
    pub fn watch<T>(
        &self,
        what: &str,
        timeout: Duration,
        step: Duration,
        mut check: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check()? {
                return Ok(value);
            }
            if let Some(a) = self.failed() {
                return Err(Error::ExitedEarly {
                    what: format!("waiting for {what}"),
                    status: format!("{}: {}", a.what, a.why),
                    detail: self.report(),
                });
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("{what} on {}", self.name),
                    after: timeout,
                    detail: self.report(),
                });
            }
            std::thread::sleep(step);
        }
    }

    /// Waits for QEMU to exit by itself (e.g. the guest powered off under `-no-reboot`).
    pub fn wait_exit(&self, timeout: Duration) -> Result<(ExitStatus, Duration)> {
        proc::poll_until(timeout, Duration::from_millis(200), || self.try_wait())
            .map(|st| (st, self.started.elapsed()))
            .ok_or_else(|| Error::Timeout {
                what: format!("QEMU {} to exit", self.name),
                after: timeout,
                detail: self.report(),
            })
    }

    /// Waits for QEMU to exit after the agent ended its boot. The agent's PID 1 prints
    /// `; on_exit=` just before it reboots; if that line is on the console but the guest has
    /// not gone down within `timeout` (a TCG guest starved on a loaded host can hang in its
    /// reboot path: soft lockups, RCU stalls), the VM is stopped like a machine that is
    /// power-cycled, with a warning, and `Ok(false)` is returned. Without that line a timeout
    /// is an error, as with [`Vm::wait_exit`].
    pub fn wait_end_of_boot(&self, timeout: Duration) -> Result<bool> {
        match self.wait_exit(timeout) {
            Ok(_) => Ok(true),
            Err(e) if self.console().text().contains("; on_exit=") => {
                crate::gate::announce(&format!(
                    "WARN {}: the agent ended its boot but the guest did not go down within                      {timeout:?}; stopping it ({})",
                    self.name,
                    e.to_string().lines().next().unwrap_or_default()
                ));
                self.stop();
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Console and QEMU output tails, for failure messages.
    pub fn report(&self) -> String {
        format!(
            "--- {} console tail ({}):\n{}\n--- QEMU output ({}):\n{}",
            self.name,
            self.files.serial_log.display(),
            self.console.tail(TAIL_LINES),
            self.files.qemu_log.display(),
            self.qemu_log_tail(TAIL_LINES)
        )
    }

    /// Stops QEMU now (SIGTERM, 5 s, SIGKILL); returns its exit status.
    pub fn stop(&self) -> Option<ExitStatus> {
        self.ns.stop(self.proc)
    }
}

impl Drop for Vm<'_> {
    fn drop(&mut self) {
        let _ = self.ns.stop(self.proc);
        // `slot` is dropped after this, i.e. after QEMU has stopped.
    }
}

/// A locally administered-looking QEMU MAC `52:54:00:99:<a>:<b>`.
pub fn test_mac(a: u8, b: u8) -> Mac {
    Mac([0x52, 0x54, 0x00, 0x99, a, b])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> VmFiles {
        VmFiles::in_dir(Path::new("/w"), "vm1", 1)
    }

    fn has_pair(a: &[String], k: &str, v: &str) -> bool {
        a.windows(2).any(|w| w[0] == k && w[1] == v)
    }

    #[test]
    fn bios_command_line() {
        let b = VmBuilder::new("vm1")
            .nic("rhtap0", test_mac(0, 1))
            .nic("rhtap1", test_mac(0, 2))
            .disk(4 << 30, DiskFormat::Qcow2, Some("RHDISK0"))
            .smbios_serial("RH-E2E-0001")
            .uuid("5e1ec7ed-0000-4000-8000-525400990001");
        b.validate().unwrap();
        let a = b.args(&files());
        assert!(has_pair(&a, "-accel", "tcg"));
        assert!(has_pair(&a, "-m", "1024"));
        assert!(has_pair(&a, "-serial", "file:/w/vm1.serial.log"));
        assert!(has_pair(
            &a,
            "-uuid",
            "5e1ec7ed-0000-4000-8000-525400990001"
        ));
        assert!(has_pair(
            &a,
            "-smbios",
            "type=1,manufacturer=rackhand,product=TestVM,serial=RH-E2E-0001"
        ));
        assert!(has_pair(
            &a,
            "-netdev",
            "tap,id=net1,ifname=rhtap1,script=no,downscript=no"
        ));
        assert!(has_pair(
            &a,
            "-device",
            "virtio-net-pci,netdev=net0,mac=52:54:00:99:00:01"
        ));
        assert!(has_pair(
            &a,
            "-drive",
            "file=/w/vm1.disk0.img,if=none,id=disk0,format=qcow2"
        ));
        assert!(has_pair(
            &a,
            "-device",
            "virtio-blk-pci,drive=disk0,serial=RHDISK0"
        ));
        assert!(has_pair(&a, "-boot", "order=n"));
        for flag in ["-nodefaults", "-nographic", "-no-reboot"] {
            assert!(a.iter().any(|x| x == flag), "{flag}");
        }
        assert!(has_pair(&a, "-monitor", "none"));
        // SeaBIOS: no pflash, no fw_cfg knobs, the NIC keeps its iPXE ROM.
        assert!(
            !a.iter()
                .any(|x| x.contains("pflash") || x == "-fw_cfg" || x.contains("romfile"))
        );
        assert!(!a.iter().any(|x| x == "-qmp"));
    }

    #[test]
    fn uefi_variants_differ_only_where_the_recipe_says() {
        let base = VmBuilder::new("vm1")
            .nic("rhtap0", test_mac(0, 1))
            .qmp(true);
        let f = files();
        let pxe = base.clone().firmware(Firmware::UefiPxe).args(&f);
        let http = base.clone().firmware(Firmware::UefiHttp).args(&f);
        let ipxe = base.firmware(Firmware::UefiIpxe).args(&f);
        let code = format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            paths::OVMF_CODE
        );
        let ipv6 = "name=opt/org.tianocore/IPv6Support,string=no";
        let pxe4 = "name=opt/org.tianocore/IPv4PXESupport,string=no";
        let rom_off = "virtio-net-pci,netdev=net0,mac=52:54:00:99:00:01,romfile=";
        let rom_on = "virtio-net-pci,netdev=net0,mac=52:54:00:99:00:01";
        for a in [&pxe, &http, &ipxe] {
            assert!(has_pair(a, "-drive", &code));
            assert!(has_pair(
                a,
                "-drive",
                "if=pflash,format=raw,unit=1,file=/w/vm1.OVMF_VARS.fd"
            ));
            assert!(has_pair(a, "-fw_cfg", ipv6));
            assert!(has_pair(a, "-qmp", "unix:/w/vm1.qmp,server=on,wait=off"));
        }
        assert!(has_pair(&pxe, "-device", rom_off) && !has_pair(&pxe, "-fw_cfg", pxe4));
        assert!(has_pair(&http, "-device", rom_off) && has_pair(&http, "-fw_cfg", pxe4));
        assert!(has_pair(&ipxe, "-device", rom_on) && !has_pair(&ipxe, "-fw_cfg", pxe4));
    }

    #[test]
    fn boot_index_orders_nics_and_disks() {
        let b = VmBuilder::new("vm1")
            .firmware(Firmware::UefiPxe)
            .nic("rhtap0", test_mac(0, 1))
            .disk(4096, DiskFormat::Raw, None)
            .disk(4096, DiskFormat::Raw, None);
        let mut f = files();
        f.disks.push(PathBuf::from("/w/vm1.disk1.img"));
        let plain = b.clone().args(&f);
        assert!(!plain.iter().any(|x| x.contains("bootindex")));
        let net = b.clone().boot_index(true).args(&f);
        let nic = "virtio-net-pci,netdev=net0,mac=52:54:00:99:00:01,romfile=";
        assert!(has_pair(&net, "-device", &format!("{nic},bootindex=1")));
        assert!(has_pair(
            &net,
            "-device",
            "virtio-blk-pci,drive=disk0,bootindex=2"
        ));
        assert!(has_pair(
            &net,
            "-device",
            "virtio-blk-pci,drive=disk1,bootindex=3"
        ));
        let disk = b.boot_network(false).boot_index(true).args(&f);
        assert!(has_pair(
            &disk,
            "-device",
            "virtio-blk-pci,drive=disk0,bootindex=1"
        ));
        assert!(has_pair(
            &disk,
            "-device",
            "virtio-blk-pci,drive=disk1,bootindex=2"
        ));
        assert!(has_pair(&disk, "-device", &format!("{nic},bootindex=3")));
    }

    #[test]
    fn direct_kernel_and_existing_disk_command_line() {
        let b = VmBuilder::new("vm1")
            .nic("rhtap0", test_mac(0, 1))
            .existing_disk(Path::new("/w/old.img"), DiskFormat::Raw, None)
            .smbios_serial("To be filled by O.E.M.")
            .direct_kernel(
                Path::new("/d/vmlinuz"),
                Path::new("/d/initrd"),
                "rackhand.url=http://10.99.0.1:8080 ip=10.99.0.50::10.99.0.1:255.255.255.0::::",
            );
        b.validate().unwrap();
        let mut f = files();
        f.disks = vec![PathBuf::from("/w/old.img")];
        let a = b.args(&f);
        assert!(has_pair(&a, "-kernel", "/d/vmlinuz"));
        assert!(has_pair(&a, "-initrd", "/d/initrd"));
        assert!(has_pair(
            &a,
            "-append",
            "rackhand.url=http://10.99.0.1:8080 ip=10.99.0.50::10.99.0.1:255.255.255.0::::"
        ));
        assert!(has_pair(
            &a,
            "-smbios",
            "type=1,manufacturer=rackhand,product=TestVM,serial=To be filled by O.E.M."
        ));
        assert!(has_pair(
            &a,
            "-drive",
            "file=/w/old.img,if=none,id=disk0,format=raw"
        ));
        // No network boot: no boot order, no NIC ROM.
        assert!(!a.iter().any(|x| x == "-boot"));
        assert!(has_pair(
            &a,
            "-device",
            "virtio-net-pci,netdev=net0,mac=52:54:00:99:00:01,romfile="
        ));
    }

    #[test]
    fn validate_rejects_values_that_would_inject_qemu_options() {
        let ok = || VmBuilder::new("vm1").nic("rhtap0", test_mac(0, 1));
        ok().validate().unwrap();
        let cases = [
            ok().smbios_serial("A,serial=B"),
            ok().smbios_serial(""),
            ok().smbios_serial(" padded"),
            ok().existing_disk(Path::new("/w/a.img"), DiskFormat::Raw, None)
                .disk(0, DiskFormat::Raw, None),
            ok().direct_kernel(Path::new("/a,b"), Path::new("/i"), "x"),
            ok().direct_kernel(Path::new("/k"), Path::new("/i"), "a\nb"),
            ok().firmware(Firmware::UefiPxe)
                .direct_kernel(Path::new("/k"), Path::new("/i"), "x"),
            ok().uuid("not-a-uuid"),
            ok().uuid("5e1ec7ed-0000-4000-8000-52540099000g"),
            ok().nic("tap,x", test_mac(0, 2)),
            ok().nic("rhtap1", Mac([0x53, 0, 0, 0, 0, 1])),
            ok().nic("rhtap1", Mac([0; 6])),
            ok().disk(1000, DiskFormat::Raw, None),
            ok().disk(4096, DiskFormat::Raw, Some("A,B")),
            ok().disk(4096, DiskFormat::Raw, Some("012345678901234567890")),
            ok().memory_mib(16),
            VmBuilder::new("a b"),
        ];
        for (i, b) in cases.iter().enumerate() {
            assert!(matches!(b.validate(), Err(Error::Invalid(_))), "case {i}");
        }
    }
}
