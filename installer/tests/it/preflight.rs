//! Preflight refusals over fixture trees built per test (sysfs/procfs/dev shapes as on a live
//! system, holding only the files preflight reads). No root needed.

use std::fs;
use std::path::{Path, PathBuf};

use installer::preflight::{ExistingPartitions, SystemPaths, check};
use installer::{DiskRule, TargetDisk};

const SECTORS: u64 = 2 * 1024 * 1024; // 1 GiB in 512-byte sectors

struct Tree {
    root: tempfile::TempDir,
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

impl Tree {
    /// One SATA disk `sda` (8:0, 1 GiB, serial via VPD page 0x80, WWN), not mounted.
    fn new() -> Self {
        let t = Tree {
            root: tempfile::tempdir().unwrap(),
        };
        let d = t.sys("block/sda");
        write(&d.join("dev"), "8:0\n");
        write(&d.join("size"), &format!("{SECTORS}\n"));
        write(&d.join("ro"), "0\n");
        write(&d.join("removable"), "0\n");
        fs::create_dir_all(d.join("holders")).unwrap();
        let mut vpd = vec![0u8, 0x80, 0, 10];
        vpd.extend_from_slice(b"SATA-SER-3");
        fs::create_dir_all(d.join("device")).unwrap();
        fs::write(d.join("device/vpd_pg80"), vpd).unwrap();
        write(&d.join("device/wwid"), "naa.5000c50015ea71ad\n");
        // Another disk that is busy: never a reason to refuse sda.
        let o = t.sys("block/sdb");
        write(&o.join("dev"), "8:16\n");
        write(&o.join("size"), "1000\n");
        write(
            &t.root.path().join("proc/self/mountinfo"),
            "21 1 8:17 / / rw,relatime shared:1 - ext4 /dev/sdb1 rw\n\
             22 21 0:5 / /dev rw - devtmpfs devtmpfs rw\n",
        );
        write(
            &t.root.path().join("proc/swaps"),
            "Filename\tType\tSize\tUsed\tPriority\n/dev/sdb2 partition 1000 0 -2\n",
        );
        // A regular file where the node would be: the last check refuses it.
        write(&t.root.path().join("dev/sda"), "");
        t
    }

    fn sys(&self, rel: &str) -> PathBuf {
        self.root.path().join("sys").join(rel)
    }

    fn partition(&self, name: &str, dev: &str) {
        let p = self.sys("block/sda").join(name);
        write(&p.join("partition"), "1\n");
        write(&p.join("dev"), &format!("{dev}\n"));
        fs::create_dir_all(p.join("holders")).unwrap();
    }

    fn holder(&self, rel: &str, holder: &str) {
        write(&self.sys(rel).join("holders").join(holder), "");
    }

    fn paths(&self) -> SystemPaths {
        SystemPaths::under(self.root.path())
    }
}

fn target() -> TargetDisk {
    TargetDisk {
        name: "sda".into(),
        size_bytes: SECTORS * 512,
        logical_block_size: Some(512),
        serial: Some("SATA-SER-3".into()),
        wwn: Some("naa.5000c50015ea71ad".into()),
        model: None,
        rule: DiskRule::Smallest,
    }
}

fn code(tree: &Tree, target: &TargetDisk, existing: ExistingPartitions) -> &'static str {
    match check(target, &tree.paths(), 1 << 20, existing) {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

/// Each case mutates a fresh tree; `not_block_device` means every check before the node
/// passed (a fixture cannot hold a real block device).
#[test]
fn refusals() {
    type Setup = Box<dyn Fn(&Tree, &mut TargetDisk)>;
    let cases: Vec<(&str, Setup, ExistingPartitions, &str)> = vec![
        (
            "all clear",
            Box::new(|_, _| {}),
            ExistingPartitions::Refuse,
            "not_block_device",
        ),
        (
            "disk gone",
            Box::new(|_, t| t.name = "sdq".into()),
            ExistingPartitions::Refuse,
            "disk_missing",
        ),
        (
            "hostile name",
            Box::new(|_, t| t.name = "../sda".into()),
            ExistingPartitions::Refuse,
            "invalid_disk_name",
        ),
        (
            "size changed (another disk took the name)",
            Box::new(|tr, _| write(&tr.sys("block/sda/size"), "4096\n")),
            ExistingPartitions::Refuse,
            "identity_changed",
        ),
        (
            "serial changed",
            Box::new(|_, t| t.serial = Some("OTHER".into())),
            ExistingPartitions::Refuse,
            "identity_changed",
        ),
        (
            "serial no longer readable",
            Box::new(|tr, _| fs::remove_file(tr.sys("block/sda/device/vpd_pg80")).unwrap()),
            ExistingPartitions::Refuse,
            "identity_changed",
        ),
        (
            "a plain serial attribute wins over VPD",
            Box::new(|tr, t| {
                write(&tr.sys("block/sda/device/serial"), "  PLAIN-1 \n");
                t.serial = Some("PLAIN-1".into());
            }),
            ExistingPartitions::Refuse,
            "not_block_device",
        ),
        (
            "WWN changed",
            Box::new(|tr, _| write(&tr.sys("block/sda/device/wwid"), "naa.5000c500ffffffff\n")),
            ExistingPartitions::Refuse,
            "identity_changed",
        ),
        (
            "no identity recorded: size alone",
            Box::new(|_, t| {
                t.serial = None;
                t.wwn = None;
            }),
            ExistingPartitions::Refuse,
            "not_block_device",
        ),
        (
            "read-only",
            Box::new(|tr, _| write(&tr.sys("block/sda/ro"), "1\n")),
            ExistingPartitions::Refuse,
            "disk_read_only",
        ),
        (
            "garbled read-only flag counts as read-only",
            Box::new(|tr, _| write(&tr.sys("block/sda/ro"), "yes\n")),
            ExistingPartitions::Refuse,
            "disk_read_only",
        ),
        (
            "removable",
            Box::new(|tr, _| write(&tr.sys("block/sda/removable"), "1\n")),
            ExistingPartitions::Refuse,
            "disk_removable",
        ),
        (
            "partitions present",
            Box::new(|tr, _| tr.partition("sda1", "8:1")),
            ExistingPartitions::Refuse,
            "disk_has_partitions",
        ),
        (
            "partitions present, overwrite allowed",
            Box::new(|tr, _| tr.partition("sda1", "8:1")),
            ExistingPartitions::Overwrite,
            "not_block_device",
        ),
        (
            "partition mounted (by device number)",
            Box::new(|tr, _| {
                tr.partition("sda1", "8:1");
                write(
                    &tr.root.path().join("proc/self/mountinfo"),
                    "30 1 8:1 / /mnt/old rw - xfs /dev/root rw\n",
                );
            }),
            ExistingPartitions::Overwrite,
            "disk_mounted",
        ),
        (
            "partition mounted (btrfs: anonymous device number, by source)",
            Box::new(|tr, _| {
                tr.partition("sda2", "8:2");
                write(
                    &tr.root.path().join("proc/self/mountinfo"),
                    "30 1 0:45 / /data rw - btrfs /dev/sda2 rw\n",
                );
            }),
            ExistingPartitions::Overwrite,
            "disk_mounted",
        ),
        (
            "whole disk mounted",
            Box::new(|tr, _| {
                write(
                    &tr.root.path().join("proc/self/mountinfo"),
                    "30 1 8:0 / /mnt rw - ext4 /dev/sda rw\n",
                )
            }),
            ExistingPartitions::Overwrite,
            "disk_mounted",
        ),
        (
            "partition is swap",
            Box::new(|tr, _| {
                tr.partition("sda3", "8:3");
                write(
                    &tr.root.path().join("proc/swaps"),
                    "Filename Type Size Used Priority\n/dev/sda3 partition 8 0 -2\n",
                );
            }),
            ExistingPartitions::Overwrite,
            "disk_swap",
        ),
        (
            "disk held by md",
            Box::new(|tr, _| tr.holder("block/sda", "md0")),
            ExistingPartitions::Overwrite,
            "disk_held",
        ),
        (
            "partition held by device-mapper",
            Box::new(|tr, _| {
                tr.partition("sda1", "8:1");
                tr.holder("block/sda/sda1", "dm-0");
            }),
            ExistingPartitions::Overwrite,
            "disk_held",
        ),
        (
            "no mountinfo or swaps at all is not a refusal",
            Box::new(|tr, _| {
                fs::remove_file(tr.root.path().join("proc/self/mountinfo")).unwrap();
                fs::remove_file(tr.root.path().join("proc/swaps")).unwrap();
            }),
            ExistingPartitions::Refuse,
            "not_block_device",
        ),
        (
            "garbage device number",
            Box::new(|tr, _| write(&tr.sys("block/sda/dev"), "eight\n")),
            ExistingPartitions::Refuse,
            "io_error",
        ),
    ];
    for (what, setup, existing, want) in cases {
        let tree = Tree::new();
        let mut t = target();
        setup(&tree, &mut t);
        assert_eq!(code(&tree, &t, existing), want, "{what}");
    }
}

#[test]
fn an_image_larger_than_the_disk_is_refused() {
    let tree = Tree::new();
    let err = check(
        &target(),
        &tree.paths(),
        SECTORS * 512 + 512,
        ExistingPartitions::Refuse,
    )
    .unwrap_err();
    assert_eq!(err.code(), "device_too_small");
}

#[test]
fn errors_name_what_is_in_use() {
    let tree = Tree::new();
    tree.partition("sda1", "8:1");
    tree.holder("block/sda/sda1", "dm-0");
    tree.holder("block/sda/sda1", "dm-1");
    let err = check(&target(), &tree.paths(), 1, ExistingPartitions::Overwrite).unwrap_err();
    assert_eq!(err.to_string(), "sda1 is held by dm-0, dm-1");
}

/// A node that is a real block device but not the disk sysfs describes (stale or forged).
#[test]
fn a_node_with_the_wrong_device_number_is_refused() {
    let Some(real) = ["/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/loop0"]
        .into_iter()
        .map(Path::new)
        .find(|p| {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            // Any block device except 8:0, the number the fixture's sysfs gives `sda`.
            fs::metadata(p)
                .is_ok_and(|m| m.file_type().is_block_device() && m.rdev() != libc_makedev(8, 0))
        })
    else {
        eprintln!("skipped: no block device node on this machine to point the fixture at");
        return;
    };
    let tree = Tree::new();
    fs::remove_file(tree.root.path().join("dev/sda")).unwrap();
    std::os::unix::fs::symlink(real, tree.root.path().join("dev/sda")).unwrap();
    let err = check(&target(), &tree.paths(), 1, ExistingPartitions::Refuse).unwrap_err();
    assert_eq!(err.code(), "device_node_mismatch", "{err}");
}

fn libc_makedev(major: u64, minor: u64) -> u64 {
    nix::sys::stat::makedev(major, minor)
}
