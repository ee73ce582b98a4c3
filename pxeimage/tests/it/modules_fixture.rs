//! The module index read from a fixture `/lib/modules/<kver>` tree (a trimmed copy of what
//! `depmod` writes for the virtio/e1000/ahci set), resolved against real QEMU modaliases.

use std::path::PathBuf;

use pxeimage::modules::ModIndex;

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/modules")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn qemu_devices_resolve_to_loadable_plans() {
    let (idx, issues) = ModIndex::parse(
        &fixture("modules.dep"),
        &fixture("modules.alias"),
        &fixture("modules.softdep"),
    );
    assert!(issues.is_empty(), "{issues:?}");
    let cases: &[(&str, &[&str])] = &[
        // virtio-net-pci (modern) on QEMU's q35/pc
        (
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
            &["virtio_pci"],
        ),
        ("virtio:d00000001v00001AF4", &["virtio_net"]),
        ("virtio:d00000002v00001AF4", &["virtio_blk"]),
        // QEMU's e1000 (82540EM)
        (
            "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",
            &["e1000"],
        ),
        // ICH9 AHCI on q35
        (
            "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01",
            &["ahci"],
        ),
        // the host bridge needs no module
        ("pci:v00008086d000029C0sv00001AF4sd00001100bc06sc00i00", &[]),
    ];
    for (alias, want) in cases {
        assert_eq!(&idx.resolve(alias), want, "{alias}");
    }
    let plan = idx.load_plan("virtio_net").unwrap();
    let pos = |m: &str| plan.iter().position(|p| p.contains(m)).unwrap();
    assert!(pos("/failover.ko") < pos("net_failover.ko"), "{plan:?}");
    assert!(pos("net_failover.ko") < pos("virtio_net.ko"), "{plan:?}");
    assert!(pos("virtio_ring.ko") < pos("/virtio.ko"), "{plan:?}");
    assert_eq!(plan.len(), 5, "each module once: {plan:?}");
    assert_eq!(
        plan.last().copied(),
        Some("kernel/drivers/net/virtio_net.ko")
    );
    let plan = idx.load_plan("ahci").unwrap();
    assert_eq!(
        plan,
        vec![
            "kernel/drivers/scsi/scsi_common.ko",
            "kernel/drivers/scsi/scsi_mod.ko",
            "kernel/drivers/ata/libata.ko",
            "kernel/drivers/ata/libahci.ko",
            "kernel/drivers/ata/ahci.ko",
        ]
    );
}
