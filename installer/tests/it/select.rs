//! Selection over reports that `recon` produced from its captured fixture trees
//! (`recon/tests/fixtures/{qemu-q35,build-host}`, rendered once to JSON).

use installer::{DiskRule, TargetDisk, select};
use pxe_api::HardwareReport;

fn report(name: &str) -> HardwareReport {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn pick(report: &HardwareReport, rule: &str, image: u64) -> Result<TargetDisk, String> {
    let rule: DiskRule = rule
        .parse()
        .map_err(|e: installer::select::RuleError| e.code().to_owned())?;
    select(report, &rule, image).map_err(|e| e.code().to_owned())
}

const MIB: u64 = 1 << 20;

#[test]
fn qemu_q35_three_disks() {
    // vda 64 MiB virtio, sda 96 MiB SATA (WWN), nvme0n1 128 MiB (4096-byte sectors).
    let r = report("qemu-q35");
    let table: &[(&str, u64, Result<&str, &str>)] = &[
        ("smallest", 10 * MIB, Ok("vda")),
        ("smallest", 64 * MIB, Ok("vda")),
        ("smallest", 65 * MIB, Ok("sda")),
        ("smallest", 100 * MIB, Ok("nvme0n1")),
        ("smallest", 129 * MIB, Err("no_disk_fits")),
        ("serial=SATA-SER-3", MIB, Ok("sda")),
        ("serial=NVME-SER-2", MIB, Ok("nvme0n1")),
        ("serial=SATA-SER-9", MIB, Err("pinned_disk_missing")),
        ("wwn=0x5000c50015ea71ad", MIB, Ok("sda")),
        ("wwn=naa.5000C50015EA71AD", MIB, Ok("sda")),
        (
            "wwn=nvme.1b36-4e564d452d5345522d32-51454d55204e564d65204374726c-00000001",
            MIB,
            Ok("nvme0n1"),
        ),
        ("size=90M-100M", MIB, Ok("sda")),
        ("size=60M-200M", MIB, Err("ambiguous")),
        ("size=1G-", MIB, Err("pinned_disk_missing")),
        ("name=vda", 65 * MIB, Err("disk_too_small")),
        ("path=/dev/nvme0n1", MIB, Ok("nvme0n1")),
        ("name=sr0", MIB, Err("pinned_disk_missing")),
        ("biggest", MIB, Err("invalid_rule")),
    ];
    for (rule, image, want) in table {
        let got = pick(&r, rule, *image);
        assert_eq!(
            got.as_ref()
                .map(|t| t.name.as_str())
                .map_err(String::as_str),
            *want,
            "{rule} for {image}"
        );
    }
    let t = pick(&r, "smallest", 65 * MIB).unwrap();
    assert_eq!(t.serial.as_deref(), Some("SATA-SER-3"));
    assert_eq!(t.logical_block_size, Some(512));
    assert_eq!(t.size_bytes, 96 * MIB);
}

#[test]
fn build_host_single_virtio_disk() {
    let r = report("build-host");
    assert_eq!(pick(&r, "smallest", 1 << 30).unwrap().name, "vda");
    assert_eq!(pick(&r, "serial=overlayblk", 1 << 30).unwrap().name, "vda");
    assert_eq!(pick(&r, "smallest", 300 << 30).unwrap_err(), "no_disk_fits");
}
