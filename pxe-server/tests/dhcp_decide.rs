//! Table tests of the pure DHCP decision over packets captured from real firmware (see
//! `tests/fixtures/dhcp/README.md`), plus lease-allocation properties.

use std::net::{Ipv4Addr, SocketAddrV4};

use proptest::prelude::*;
use pxe_api::Mac;
use pxe_server::dhcp::boot::{BootChoice, ClientKind, NoBootReason, classify, client_arch};
use pxe_server::dhcp::wire::{Arrival, ClientMessage, Destination, ReplyKind, parse_request};
use pxe_server::dhcp::{
    Decision, DhcpConfig, DhcpMode, IgnoreReason, Lease, LeaseOp, LeaseState, LeaseTable,
    LeaseView, NakReason, Policy, RecordEvent, RequestView, decide, normalize_client_uuid,
};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const QEMU_MAC: Mac = Mac([0x52, 0x54, 0x00, 0x99, 0x00, 0x01]);

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/dhcp/{name}.hex",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    hex::decode(text.trim()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn arrival(port: u16) -> Arrival {
    Arrival {
        local_port: port,
        src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
    }
}

fn req(name: &str) -> RequestView {
    parse_request(&fixture(name), arrival(67)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn config(mode: DhcpMode) -> DhcpConfig {
    let mut c = DhcpConfig::new(
        mode,
        SERVER,
        Ipv4Addr::new(10, 99, 0, 100),
        Ipv4Addr::new(10, 99, 0, 199),
    );
    c.http_base = "http://10.99.0.1:8080".into();
    c.router = Some(SERVER);
    c.dns = vec![SERVER];
    c
}

fn policy(mode: DhcpMode) -> Policy {
    Policy::from_config(&config(mode)).expect("valid config")
}

fn view(table: &LeaseTable) -> LeaseView<'_> {
    LeaseView {
        table,
        known: true,
        rate_limited: false,
    }
}

fn unknown(table: &LeaseTable) -> LeaseView<'_> {
    LeaseView {
        table,
        known: false,
        rate_limited: false,
    }
}

/// Apply a decision's table changes as the service does after persisting.
fn apply(table: &mut LeaseTable, d: &Decision, known: bool) {
    let ops = match d {
        Decision::Offer { ops, .. } | Decision::Ack { ops, .. } | Decision::Record { ops, .. } => {
            ops.clone()
        }
        _ => Vec::new(),
    };
    for op in &ops {
        table.apply(op, known);
    }
}

fn opt(d: &Decision, code: u8) -> Option<&[u8]> {
    d.reply().and_then(|r| r.option(code))
}

fn file67(d: &Decision) -> Option<String> {
    opt(d, 67).map(|b| String::from_utf8_lossy(b.strip_suffix(&[0]).unwrap_or(b)).into_owned())
}

#[test]
fn fixtures_decode_as_the_notes_describe() {
    let cases: &[(&str, ClientMessage, ClientKind, Option<u16>)] = &[
        (
            "bios-ipxe-rom-discover",
            ClientMessage::Discover,
            ClientKind::Ipxe,
            Some(0),
        ),
        (
            "bios-ipxe-rom-request",
            ClientMessage::Request,
            ClientKind::Ipxe,
            Some(0),
        ),
        (
            "uefi-ipxe-rom-discover",
            ClientMessage::Discover,
            ClientKind::Ipxe,
            Some(7),
        ),
        (
            "uefi-pxe-discover",
            ClientMessage::Discover,
            ClientKind::Pxe,
            Some(7),
        ),
        (
            "uefi-pxe-request",
            ClientMessage::Request,
            ClientKind::Pxe,
            Some(7),
        ),
        (
            "uefi-pxe-chained-ipxe-discover",
            ClientMessage::Discover,
            ClientKind::Ipxe,
            Some(7),
        ),
        (
            "uefi-http-discover",
            ClientMessage::Discover,
            ClientKind::HttpBoot,
            Some(16),
        ),
        (
            "uefi-http-request",
            ClientMessage::Request,
            ClientKind::HttpBoot,
            Some(16),
        ),
        (
            "uefi-http-chained-ipxe-request",
            ClientMessage::Request,
            ClientKind::Ipxe,
            Some(7),
        ),
    ];
    for (name, msg, kind, arch) in cases {
        let r = req(name);
        assert_eq!(r.msg, *msg, "{name}");
        assert_eq!(classify(&r), *kind, "{name}");
        assert_eq!(client_arch(&r), *arch, "{name}");
        assert_eq!(r.mac, QEMU_MAC, "{name}");
        let uuid = r.client_uuid.as_deref().and_then(normalize_client_uuid);
        assert_eq!(
            uuid.as_deref(),
            Some("5e1ec7ed-0000-4000-8000-525400990001"),
            "{name}"
        );
    }
}

#[test]
fn full_mode_boot_file_per_firmware() {
    let p = policy(DhcpMode::Full);
    let script = "http://10.99.0.1:8080/boot.ipxe";
    // (fixture, expected boot choice, expected option 60, expect 175.176)
    let cases: &[(&str, BootChoice, Option<&[u8]>, bool)] = &[
        (
            "bios-ipxe-rom-discover",
            BootChoice::IpxeScript(script.into()),
            None,
            true,
        ),
        (
            "uefi-ipxe-rom-discover",
            BootChoice::IpxeScript(script.into()),
            None,
            true,
        ),
        (
            "uefi-pxe-discover",
            BootChoice::Tftp("ipxe.efi".into()),
            None,
            false,
        ),
        (
            "uefi-pxe-chained-ipxe-discover",
            BootChoice::IpxeScript(script.into()),
            None,
            true,
        ),
        (
            "uefi-http-discover",
            BootChoice::HttpBoot("http://10.99.0.1:8080/assets/ipxe.efi".into()),
            Some(b"HTTPClient"),
            false,
        ),
        (
            "uefi-http-chained-ipxe-discover",
            BootChoice::IpxeScript(script.into()),
            None,
            true,
        ),
    ];
    for (name, want, want60, want175) in cases {
        let table = LeaseTable::new();
        let d = decide(&req(name), &view(&table), &p, 1_000);
        let Decision::Offer { reply, boot, .. } = &d else {
            panic!("{name}: {d:?}")
        };
        assert_eq!(boot, want, "{name}");
        assert_eq!(reply.kind, ReplyKind::Offer);
        assert_eq!(reply.yiaddr, Ipv4Addr::new(10, 99, 0, 100), "{name}");
        assert_eq!(reply.file.as_deref(), want.file(), "{name}");
        assert_eq!(file67(&d).as_deref(), want.file(), "{name}");
        assert_eq!(reply.siaddr, SERVER);
        assert_eq!(opt(&d, 54), Some(&SERVER.octets()[..]));
        assert_eq!(
            opt(&d, 60),
            *want60,
            "{name}: never echo PXEClient in full mode"
        );
        assert_eq!(
            opt(&d, 175) == Some(&[176, 1, 1, 255][..]),
            *want175,
            "{name}"
        );
        assert_eq!(opt(&d, 43), None, "{name}");
        assert_eq!(opt(&d, 51), Some(&3600u32.to_be_bytes()[..]));
        assert_eq!(reply.dest, Destination::Broadcast);
    }
}

#[test]
fn snponly_is_configurable() {
    let mut c = config(DhcpMode::Full);
    c.boot_files.efi_x64 = "snponly.efi".into();
    let p = Policy::from_config(&c).expect("valid");
    let table = LeaseTable::new();
    let d = decide(&req("uefi-pxe-discover"), &view(&table), &p, 0);
    assert_eq!(file67(&d).as_deref(), Some("snponly.efi"));
}

#[test]
fn arch_table() {
    let p = policy(DhcpMode::Full);
    let mut base = req("uefi-pxe-discover");
    base.client_uuid = None;
    let cases: &[(u16, BootChoice)] = &[
        (0, BootChoice::Tftp("undionly.kpxe".into())),
        (6, BootChoice::None(NoBootReason::UnsupportedArch(6))),
        (7, BootChoice::Tftp("ipxe.efi".into())),
        (9, BootChoice::Tftp("ipxe.efi".into())),
        (11, BootChoice::None(NoBootReason::UnsupportedArch(11))),
        (
            16,
            BootChoice::HttpBoot("http://10.99.0.1:8080/assets/ipxe.efi".into()),
        ),
        (19, BootChoice::None(NoBootReason::UnsupportedArch(19))),
        (4242, BootChoice::None(NoBootReason::UnknownArch(4242))),
    ];
    for (arch, want) in cases {
        let mut r = base.clone();
        r.client_arch = Some(*arch);
        let table = LeaseTable::new();
        let d = decide(&r, &view(&table), &p, 0);
        let Decision::Offer { boot, reply, .. } = &d else {
            panic!("arch {arch}: {d:?}")
        };
        assert_eq!(boot, want, "arch {arch}");
        if want.file().is_none() {
            assert_eq!(reply.file, None);
            assert_eq!(reply.option(67), None);
            assert_eq!(
                reply.yiaddr,
                Ipv4Addr::new(10, 99, 0, 100),
                "still gets an address"
            );
        }
    }
    // No option 93: the arch comes from the vendor class `Arch:00000`.
    let mut r = base.clone();
    r.client_arch = None;
    r.vendor_class = Some(b"PXEClient:Arch:00000:UNDI:002001".to_vec());
    let table = LeaseTable::new();
    let d = decide(&r, &view(&table), &p, 0);
    assert_eq!(file67(&d).as_deref(), Some("undionly.kpxe"));
    // arm64 when configured.
    let mut c = config(DhcpMode::Full);
    c.boot_files.efi_arm64 = Some("ipxe-arm64.efi".into());
    let p2 = Policy::from_config(&c).expect("valid");
    let mut r = base.clone();
    r.client_arch = Some(11);
    let d = decide(&r, &view(&table), &p2, 0);
    assert_eq!(file67(&d).as_deref(), Some("ipxe-arm64.efi"));
    // A plain client (no PXE vendor class) gets an address and no boot file.
    let mut r = base;
    r.vendor_class = None;
    r.client_arch = None;
    let d = decide(&r, &view(&table), &p, 0);
    let Decision::Offer { boot, .. } = &d else {
        panic!("{d:?}")
    };
    assert_eq!(boot, &BootChoice::None(NoBootReason::NotBootClient));
}

#[test]
fn dora_and_rom_to_ipxe_handover_keep_one_address() {
    let p = policy(DhcpMode::Full);
    let mut table = LeaseTable::new();
    // Another machine takes the first address so the test can tell allocation from luck.
    let mut other = req("uefi-pxe-discover");
    other.mac = Mac([0x52, 0x54, 0, 0, 0, 0x77]);
    let d = decide(&other, &view(&table), &p, 0);
    apply(&mut table, &d, true);
    let mut other_req = req("uefi-pxe-request");
    other_req.mac = other.mac;
    let d = decide(&other_req, &view(&table), &p, 10);
    assert!(matches!(d, Decision::Ack { .. }), "{d:?}");
    apply(&mut table, &d, true);

    let mut t = 1_000;
    let mut addr = None;
    for (disc, reqn) in [
        ("uefi-pxe-discover", "uefi-pxe-request"),
        (
            "uefi-pxe-chained-ipxe-discover",
            "uefi-pxe-chained-ipxe-request",
        ),
        ("uefi-http-discover", "uefi-http-request"),
        (
            "uefi-http-chained-ipxe-discover",
            "uefi-http-chained-ipxe-request",
        ),
    ] {
        let d = decide(&req(disc), &view(&table), &p, t);
        let Decision::Offer { reply, .. } = &d else {
            panic!("{disc}: {d:?}")
        };
        let ip = reply.yiaddr;
        assert_eq!(
            *addr.get_or_insert(ip),
            ip,
            "{disc}: same MAC, same address"
        );
        apply(&mut table, &d, true);
        // The captured REQUEST asks for dnsmasq's .100; the client would ask for our offer.
        let mut r = req(reqn);
        r.requested_ip = Some(ip);
        let d = decide(&r, &view(&table), &p, t + 100);
        let Decision::Ack { reply, ops, .. } = &d else {
            panic!("{reqn}: {d:?}")
        };
        assert_eq!(reply.yiaddr, ip);
        let Some(LeaseOp::Upsert(lease)) = ops.last() else {
            panic!("{ops:?}")
        };
        assert_eq!(
            (lease.mac, lease.ip, lease.state),
            (QEMU_MAC, ip, LeaseState::Bound)
        );
        apply(&mut table, &d, true);
        t += 10_000;
    }
    assert_eq!(addr, Some(Ipv4Addr::new(10, 99, 0, 101)));
    assert_eq!(table.len(), 2);
    // After a restart the table is rebuilt from the stored rows: same answer.
    let rows: Vec<Lease> = table.iter().cloned().collect();
    let reloaded = LeaseTable::from_leases(rows, &|_| true);
    let d = decide(&req("bios-ipxe-rom-discover"), &view(&reloaded), &p, t);
    assert_eq!(d.reply().map(|r| r.yiaddr), addr);
}

#[test]
fn request_states() {
    let p = policy(DhcpMode::Full);
    let mut table = LeaseTable::new();
    let d = decide(&req("uefi-pxe-discover"), &view(&table), &p, 0);
    apply(&mut table, &d, true);
    // SELECTING another server's offer: silent.
    let mut r = req("uefi-pxe-request");
    r.server_id = Some(Ipv4Addr::new(10, 99, 0, 254));
    assert_eq!(
        decide(&r, &view(&table), &p, 1),
        Decision::Ignore {
            reason: IgnoreReason::OtherServerSelected
        }
    );
    // SELECTING us with an address we did not offer: NAK, broadcast.
    let mut r = req("uefi-pxe-request");
    r.requested_ip = Some(Ipv4Addr::new(10, 99, 0, 150));
    let d = decide(&r, &view(&table), &p, 1);
    let Decision::Nak { reason, reply } = &d else {
        panic!("{d:?}")
    };
    assert_eq!(*reason, NakReason::NotOffered);
    assert_eq!(
        (reply.yiaddr, reply.dest),
        (Ipv4Addr::UNSPECIFIED, Destination::Broadcast)
    );
    // SELECTING the offer: ACK.
    let d = decide(&req("uefi-pxe-request"), &view(&table), &p, 2);
    assert!(matches!(d, Decision::Ack { .. }), "{d:?}");
    apply(&mut table, &d, true);

    // INIT-REBOOT (no option 54) for its own address: ACK; for another subnet: NAK.
    let mut r = req("uefi-pxe-request");
    r.server_id = None;
    assert!(matches!(
        decide(&r, &view(&table), &p, 3),
        Decision::Ack { .. }
    ));
    r.requested_ip = Some(Ipv4Addr::new(192, 168, 1, 5));
    assert!(matches!(
        decide(&r, &view(&table), &p, 3),
        Decision::Nak {
            reason: NakReason::WrongSubnet,
            ..
        }
    ));
    // INIT-REBOOT for a different address while bound to .100: NAK.
    r.requested_ip = Some(Ipv4Addr::new(10, 99, 0, 120));
    assert!(matches!(
        decide(&r, &view(&table), &p, 3),
        Decision::Nak {
            reason: NakReason::WrongAddress,
            ..
        }
    ));

    // RENEWING: ciaddr set, unicast ACK to ciaddr:68 with ciaddr copied.
    let mut r = req("uefi-pxe-request");
    r.server_id = None;
    r.requested_ip = None;
    r.ciaddr = Ipv4Addr::new(10, 99, 0, 100);
    let d = decide(&r, &view(&table), &p, 4);
    let Decision::Ack { reply, .. } = &d else {
        panic!("{d:?}")
    };
    assert_eq!(
        reply.dest,
        Destination::Unicast(SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 100), 68))
    );
    assert_eq!(reply.ciaddr, Ipv4Addr::new(10, 99, 0, 100));
    // RENEWING an address of another network: not ours, silent.
    r.ciaddr = Ipv4Addr::new(172, 16, 0, 9);
    assert_eq!(
        decide(&r, &view(&table), &p, 4),
        Decision::Ignore {
            reason: IgnoreReason::RenewNotOurs
        }
    );

    // Store lost: INIT-REBOOT of a free address re-creates the binding; of a taken one, NAK.
    let empty = LeaseTable::new();
    let mut r = req("bios-ipxe-rom-request");
    r.server_id = None;
    r.requested_ip = Some(Ipv4Addr::new(10, 99, 0, 140));
    assert!(matches!(
        decide(&r, &view(&empty), &p, 5),
        Decision::Ack { .. }
    ));
    r.mac = Mac([0x52, 0x54, 0, 0, 0, 0x42]);
    r.requested_ip = Some(Ipv4Addr::new(10, 99, 0, 100));
    assert!(matches!(
        decide(&r, &view(&table), &p, 5),
        Decision::Nak {
            reason: NakReason::AddressUnavailable,
            ..
        }
    ));
    // In the subnet but outside the range.
    r.requested_ip = Some(Ipv4Addr::new(10, 99, 0, 20));
    assert!(matches!(
        decide(&r, &view(&empty), &p, 5),
        Decision::Nak {
            reason: NakReason::OutOfRange,
            ..
        }
    ));
}

#[test]
fn relay_routing() {
    let p = policy(DhcpMode::Full);
    let table = LeaseTable::new();
    let mut r = req("uefi-pxe-discover");
    r.giaddr = Ipv4Addr::new(10, 99, 0, 254);
    r.relay_agent_info = Some(vec![1, 3, b'e', b't', b'h']);
    let d = decide(&r, &view(&table), &p, 0);
    let Decision::Offer { reply, .. } = &d else {
        panic!("{d:?}")
    };
    assert_eq!(
        reply.dest,
        Destination::Unicast(SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 254), 67))
    );
    assert_eq!(reply.giaddr, Ipv4Addr::new(10, 99, 0, 254));
    assert_eq!(
        reply.option(82),
        Some(&[1, 3, b'e', b't', b'h'][..]),
        "option 82 echoed"
    );
    r.giaddr = Ipv4Addr::new(192, 0, 2, 1);
    assert_eq!(
        decide(&r, &view(&table), &p, 0),
        Decision::Ignore {
            reason: IgnoreReason::ForeignRelay
        }
    );
    // Not relayed but from an address of another network (a routed unicast): dropped; from
    // 0.0.0.0 or our subnet: served.
    let mut r = req("uefi-pxe-discover");
    for (src, served) in [
        (Ipv4Addr::new(192, 0, 2, 7), false),
        (Ipv4Addr::UNSPECIFIED, true),
        (Ipv4Addr::new(10, 99, 0, 77), true),
    ] {
        r.arrival.src = SocketAddrV4::new(src, 68);
        let d = decide(&r, &view(&table), &p, 0);
        if served {
            assert!(matches!(d, Decision::Offer { .. }), "{src}: {d:?}");
        } else {
            assert_eq!(
                d,
                Decision::Ignore {
                    reason: IgnoreReason::ForeignSource
                },
                "{src}"
            );
        }
    }
}

#[test]
fn release_decline_inform() {
    let mut p = policy(DhcpMode::Full);
    p.decline_probation_ms = 60_000;
    let mut table = LeaseTable::new();
    let d = decide(&req("uefi-pxe-discover"), &view(&table), &p, 0);
    apply(&mut table, &d, true);
    let d = decide(&req("uefi-pxe-request"), &view(&table), &p, 1);
    apply(&mut table, &d, true);
    let dot100 = Ipv4Addr::new(10, 99, 0, 100);

    // DECLINE from someone else for .100: ignored (no pool poisoning by strangers).
    let mut dec = req("uefi-pxe-request");
    dec.msg = ClientMessage::Decline;
    dec.mac = Mac([0x52, 0x54, 0, 0, 0, 0x99]);
    assert_eq!(
        decide(&dec, &view(&table), &p, 2),
        Decision::Ignore {
            reason: IgnoreReason::DeclineNotOurs
        }
    );
    // DECLINE from the holder: quarantined.
    dec.mac = QEMU_MAC;
    let d = decide(&dec, &view(&table), &p, 2);
    assert!(
        matches!(
            d,
            Decision::Record {
                event: RecordEvent::Declined,
                ..
            }
        ),
        "{d:?}"
    );
    apply(&mut table, &d, true);
    assert!(table.quarantined(dot100, 1_000));
    // Next DISCOVER from the same client: a different address.
    let d = decide(&req("uefi-pxe-discover"), &view(&table), &p, 1_000);
    assert_eq!(
        d.reply().map(|r| r.yiaddr),
        Some(Ipv4Addr::new(10, 99, 0, 101))
    );
    apply(&mut table, &d, true);
    let mut r = req("uefi-pxe-request");
    r.requested_ip = Some(Ipv4Addr::new(10, 99, 0, 101));
    let d = decide(&r, &view(&table), &p, 1_001);
    apply(&mut table, &d, true);
    // Another client cannot get .100 during probation, but can after it.
    let mut other = req("uefi-pxe-discover");
    other.mac = Mac([0x52, 0x54, 0, 0, 0, 0x55]);
    other.requested_ip = Some(dot100);
    let d = decide(&other, &view(&table), &p, 30_000);
    assert_ne!(d.reply().map(|r| r.yiaddr), Some(dot100));
    let d = decide(&other, &view(&table), &p, 61_000);
    assert_eq!(d.reply().map(|r| r.yiaddr), Some(dot100));

    // RELEASE: recorded; the address stays with the MAC for the next boot.
    let mut rel = req("uefi-pxe-request");
    rel.msg = ClientMessage::Release;
    rel.requested_ip = None;
    rel.ciaddr = Ipv4Addr::new(10, 99, 0, 101);
    let d = decide(&rel, &view(&table), &p, 2_000);
    let Decision::Record {
        event: RecordEvent::Released,
        ops,
    } = &d
    else {
        panic!("{d:?}")
    };
    let Some(LeaseOp::Upsert(l)) = ops.first() else {
        panic!("{ops:?}")
    };
    assert_eq!(l.state, LeaseState::Released);
    apply(&mut table, &d, true);
    let d = decide(&req("uefi-pxe-discover"), &view(&table), &p, 3_000);
    assert_eq!(
        d.reply().map(|r| r.yiaddr),
        Some(Ipv4Addr::new(10, 99, 0, 101))
    );
    // A second RELEASE (nothing bound) is ignored.
    assert_eq!(
        decide(&rel, &view(&table), &p, 2_001),
        Decision::Ignore {
            reason: IgnoreReason::ReleaseNotOurs
        }
    );

    // INFORM: ACK without yiaddr or lease time, unicast to ciaddr.
    let mut inf = req("uefi-pxe-chained-ipxe-discover");
    inf.msg = ClientMessage::Inform;
    inf.ciaddr = Ipv4Addr::new(10, 99, 0, 50);
    let d = decide(&inf, &view(&table), &p, 4_000);
    let Decision::Ack { reply, ops, .. } = &d else {
        panic!("{d:?}")
    };
    assert!(ops.is_empty());
    assert_eq!(reply.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(reply.option(51), None);
    assert_eq!(
        reply.dest,
        Destination::Unicast(SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 50), 68))
    );
    inf.ciaddr = Ipv4Addr::UNSPECIFIED;
    assert_eq!(
        decide(&inf, &view(&table), &p, 4_000),
        Decision::Ignore {
            reason: IgnoreReason::InformWithoutCiaddr
        }
    );
}

#[test]
fn unknown_clients_get_a_bounded_share() {
    let mut c = config(DhcpMode::Full);
    c.unknown_max_leases = Some(3);
    c.offer_hold_ms = 5_000;
    let p = Policy::from_config(&c).expect("valid");
    let mut table = LeaseTable::new();
    let base = req("uefi-pxe-discover");
    for n in 0..3u8 {
        let mut r = base.clone();
        r.mac = Mac([2, 0, 0, 0, 1, n]);
        let d = decide(&r, &unknown(&table), &p, 0);
        assert!(matches!(d, Decision::Offer { .. }), "{d:?}");
        apply(&mut table, &d, false);
    }
    let mut fourth = base.clone();
    fourth.mac = Mac([2, 0, 0, 0, 1, 9]);
    assert_eq!(
        decide(&fourth, &unknown(&table), &p, 10),
        Decision::Ignore {
            reason: IgnoreReason::UnknownShareExhausted
        }
    );
    // An unknown client already holding an offer is still answered.
    let mut again = base.clone();
    again.mac = Mac([2, 0, 0, 0, 1, 0]);
    assert!(matches!(
        decide(&again, &unknown(&table), &p, 10),
        Decision::Offer { .. }
    ));
    // A known machine is served.
    assert!(matches!(
        decide(&base, &view(&table), &p, 10),
        Decision::Offer { .. }
    ));
    // Once the offer holds expire, unknown clients get room again.
    assert!(matches!(
        decide(&fourth, &unknown(&table), &p, 6_000),
        Decision::Offer { .. }
    ));
    // The share check also guards INIT-REBOOT re-creation.
    let mut ir = req("uefi-pxe-request");
    ir.mac = fourth.mac;
    ir.server_id = None;
    ir.requested_ip = Some(Ipv4Addr::new(10, 99, 0, 150));
    assert!(matches!(
        decide(&ir, &unknown(&table), &p, 10),
        Decision::Nak {
            reason: NakReason::UnknownShareExhausted,
            ..
        }
    ));
}

#[test]
fn expiry_frees_addresses_and_pool_exhaustion() {
    let mut c = config(DhcpMode::Full);
    c.range_start = Ipv4Addr::new(10, 99, 0, 100);
    c.range_end = Ipv4Addr::new(10, 99, 0, 100);
    c.lease_secs = 60;
    let p = Policy::from_config(&c).expect("valid");
    let mut table = LeaseTable::new();
    let a = req("uefi-pxe-discover");
    let d = decide(&a, &view(&table), &p, 0);
    apply(&mut table, &d, true);
    let d = decide(&req("uefi-pxe-request"), &view(&table), &p, 1);
    apply(&mut table, &d, true);
    let mut b = a.clone();
    b.mac = Mac([0x52, 0x54, 0, 0, 0, 0xbb]);
    assert_eq!(
        decide(&b, &view(&table), &p, 30_000),
        Decision::Ignore {
            reason: IgnoreReason::PoolExhausted
        }
    );
    // After the lease (60 s) has expired, B gets the address; A's record is removed on ACK.
    let d = decide(&b, &view(&table), &p, 61_002);
    assert_eq!(
        d.reply().map(|r| r.yiaddr),
        Some(Ipv4Addr::new(10, 99, 0, 100))
    );
    apply(&mut table, &d, true);
    let mut breq = req("uefi-pxe-request");
    breq.mac = b.mac;
    let d = decide(&breq, &view(&table), &p, 61_003);
    let Decision::Ack { ops, .. } = &d else {
        panic!("{d:?}")
    };
    assert_eq!(ops.first(), Some(&LeaseOp::Remove(QEMU_MAC)));
    apply(&mut table, &d, true);
    assert_eq!(table.holder(Ipv4Addr::new(10, 99, 0, 100)), Some(b.mac));
    assert!(table.get(QEMU_MAC).is_none());
}

#[test]
fn rate_limited_and_off() {
    let p = policy(DhcpMode::Full);
    let table = LeaseTable::new();
    let v = LeaseView {
        table: &table,
        known: true,
        rate_limited: true,
    };
    assert_eq!(
        decide(&req("uefi-pxe-discover"), &v, &p, 0),
        Decision::Ignore {
            reason: IgnoreReason::RateLimited
        }
    );
    let off = policy(DhcpMode::Off);
    assert_eq!(
        decide(&req("uefi-pxe-discover"), &view(&table), &off, 0),
        Decision::Ignore {
            reason: IgnoreReason::ModeOff
        }
    );
}

#[test]
fn proxy_mode() {
    let p = policy(DhcpMode::Proxy);
    let table = LeaseTable::new();
    // PXE DISCOVER on 67: ProxyDHCPOFFER without yiaddr, with 43/60/97/54, siaddr and file.
    let r = req("uefi-pxe-discover");
    let d = decide(&r, &view(&table), &p, 0);
    let Decision::Offer { reply, ops, .. } = &d else {
        panic!("{d:?}")
    };
    assert!(ops.is_empty(), "proxy mode holds no leases");
    assert_eq!(reply.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(reply.siaddr, SERVER);
    assert_eq!(reply.file.as_deref(), Some("ipxe.efi"));
    assert_eq!(reply.option(43), Some(&[6, 1, 8, 255][..]));
    assert_eq!(reply.option(60), Some(&b"PXEClient"[..]));
    assert_eq!(reply.option(54), Some(&SERVER.octets()[..]));
    assert_eq!(reply.option(97), r.client_uuid.as_deref());
    assert_eq!(reply.option(51), None);
    assert_eq!(reply.option(175), None);
    // The same client's REQUEST on 4011: ACK unicast back to the source.
    let src = SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 57), 68);
    let r4011 = parse_request(
        &fixture("uefi-pxe-request"),
        Arrival {
            local_port: 4011,
            src,
        },
    )
    .expect("valid");
    let d = decide(&r4011, &view(&table), &p, 0);
    let Decision::Ack { reply, .. } = &d else {
        panic!("{d:?}")
    };
    assert_eq!(reply.dest, Destination::Unicast(src));
    assert_eq!(reply.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(reply.option(43), Some(&[6, 1, 8, 255][..]));
    // A REQUEST on 67 naming the address server: not ours.
    let mut r = req("uefi-pxe-request");
    r.server_id = Some(Ipv4Addr::new(10, 99, 0, 254));
    assert_eq!(
        decide(&r, &view(&table), &p, 0),
        Decision::Ignore {
            reason: IgnoreReason::OtherServerSelected
        }
    );
    // iPXE via proxy: the script, no 175.176 (we are the ProxyDHCP server it would wait for).
    let d = decide(&req("bios-ipxe-rom-discover"), &view(&table), &p, 0);
    assert_eq!(
        file67(&d).as_deref(),
        Some("http://10.99.0.1:8080/boot.ipxe")
    );
    assert_eq!(opt(&d, 175), None);
    // UEFI HTTP boot via proxy: HTTPClient echo and the URL, no option 43.
    let d = decide(&req("uefi-http-discover"), &view(&table), &p, 0);
    assert_eq!(opt(&d, 60), Some(&b"HTTPClient"[..]));
    assert_eq!(opt(&d, 43), None);
    assert_eq!(d.reply().map(|r| r.yiaddr), Some(Ipv4Addr::UNSPECIFIED));
    assert_eq!(
        file67(&d).as_deref(),
        Some("http://10.99.0.1:8080/assets/ipxe.efi")
    );
    // A non-PXE client: ignored.
    let mut plain = req("uefi-pxe-discover");
    plain.vendor_class = Some(b"MSFT 5.0".to_vec());
    assert_eq!(
        decide(&plain, &view(&table), &p, 0),
        Decision::Ignore {
            reason: IgnoreReason::NotPxeClient
        }
    );
    // Unknown arch: nothing to offer.
    let mut odd = req("uefi-pxe-discover");
    odd.client_arch = Some(999);
    assert_eq!(
        decide(&odd, &view(&table), &p, 0),
        Decision::Ignore {
            reason: IgnoreReason::NoBootFile
        }
    );
    // RELEASE etc. are not proxy business.
    let mut rel = req("uefi-pxe-request");
    rel.msg = ClientMessage::Release;
    assert_eq!(
        decide(&rel, &view(&table), &p, 0),
        Decision::Ignore {
            reason: IgnoreReason::NotHandledInProxy
        }
    );
}

#[test]
fn full_mode_ignores_port_4011() {
    let p = policy(DhcpMode::Full);
    let table = LeaseTable::new();
    let r = parse_request(&fixture("uefi-pxe-request"), arrival(4011)).expect("valid");
    assert_eq!(
        decide(&r, &view(&table), &p, 0),
        Decision::Ignore {
            reason: IgnoreReason::WrongPort
        }
    );
}

fn mutate(mut p: Vec<u8>, edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    for (i, b) in edits {
        let n = p.len();
        if n > 0
            && let Some(x) = p.get_mut(i % n)
        {
            *x = *b;
        }
    }
    if let Some(c) = cut {
        p.truncate(c);
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// No mutation of a captured packet panics the parser or the decision, in either mode.
    #[test]
    fn mutated_packets_never_panic(
        which in 0usize..6,
        edits in proptest::collection::vec((0usize..600, any::<u8>()), 0..8),
        cut in proptest::option::of(0usize..600),
    ) {
        let names = [
            "bios-ipxe-rom-discover", "uefi-pxe-discover", "uefi-pxe-request",
            "uefi-http-discover", "uefi-http-request", "uefi-ipxe-rom-request",
        ];
        let raw = mutate(fixture(names[which]), &edits, cut);
        let table = LeaseTable::new();
        for mode in [DhcpMode::Full, DhcpMode::Proxy] {
            let p = policy(mode);
            for port in [67, 4011] {
                if let Ok(r) = parse_request(&raw, arrival(port)) {
                    let _ = decide(&r, &view(&table), &p, 0);
                    let _ = decide(&r, &unknown(&table), &p, 0);
                }
            }
        }
    }
}
