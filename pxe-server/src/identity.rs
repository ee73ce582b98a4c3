//! Machine identity: which reported fact names a machine, and what to do when identities collide.
//!
//! A machine is keyed by its SMBIOS serial number. Serials that vendors ship as placeholders
//! ("To be filled by O.E.M.", "Default string", all zeros…) name nothing, so they are not
//! trusted: the system UUID is used instead (unless it is a placeholder too), then the boot MAC.
//! The kind of key used is recorded with the machine.
//!
//! Pure: no I/O.

use pxe_api::{HardwareReport, IdentityKind, Mac};

/// Longest serial or UUID that is trusted as an identity (real ones are far shorter).
const MAX_TRUSTED_ID_LEN: usize = 128;

/// Known placeholder serials, compared case-insensitively after trimming.
const PLACEHOLDER_SERIALS: &[&str] = &[
    "to be filled by o.e.m.",
    "to be filled by oem",
    "system serial number",
    "chassis serial number",
    "base board serial number",
    "default string",
    "default",
    "not specified",
    "not applicable",
    "not available",
    "none",
    "null",
    "n/a",
    "na",
    "unknown",
    "serial",
    "serial number",
    "invalid",
    "oem",
    "o.e.m.",
    "empty",
    "0123456789",
    "1234567890",
    "123456789",
    "12345678",
    "01234567",
    "abcdefghij",
    "xxxxxxxxxxx",
];

/// Known placeholder SMBIOS UUIDs (lowercase).
const PLACEHOLDER_UUIDS: &[&str] = &[
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "03000200-0400-0500-0006-000700080009",
    "00020003-0004-0005-0006-000700080009",
    "12345678-1234-5678-90ab-cddeefaabbcc",
];

/// True if `serial` cannot identify a machine: empty, a known placeholder, one repeated
/// character, too long, or containing control characters.
pub fn is_placeholder_serial(serial: &str) -> bool {
    let s = serial.trim();
    if s.is_empty() || s.len() > MAX_TRUSTED_ID_LEN || s.chars().any(char::is_control) {
        return true;
    }
    let lower = s.to_lowercase();
    if PLACEHOLDER_SERIALS.contains(&lower.as_str()) {
        return true;
    }
    // All the same character ("0000000", "XXXXXX", "......"), ignoring separators.
    let mut significant = lower
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '_'));
    match significant.next() {
        None => true,
        Some(first) => significant.all(|c| c == first),
    }
}

/// The canonical form of an SMBIOS UUID (lowercase, hyphenated), or `None` if it is not a UUID
/// or is a known placeholder.
pub fn trusted_uuid(uuid: &str) -> Option<String> {
    let u = uuid.trim().to_ascii_lowercase();
    let hex: String = u.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let canon = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    if PLACEHOLDER_UUIDS.contains(&canon.as_str()) {
        return None;
    }
    let first = hex.as_bytes()[0];
    if hex.bytes().all(|b| b == first) {
        return None;
    }
    Some(canon)
}

/// The identity a report claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Which fact.
    pub kind: IdentityKind,
    /// `kind:value`.
    pub key: String,
    /// The reported serial was present but not trusted.
    pub serial_untrusted: bool,
}

/// Why a report cannot be identified at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no usable identity: serial and UUID are placeholders and no MAC was reported")]
pub struct NoIdentity;

/// Derives the identity from a report: serial, else UUID, else boot MAC (else the lowest MAC).
pub fn identify(report: &HardwareReport, boot_mac: Option<Mac>) -> Result<Identity, NoIdentity> {
    let serial = report.dmi.system_serial.as_deref().unwrap_or("");
    let serial_untrusted = is_placeholder_serial(serial);
    if !serial_untrusted {
        return Ok(Identity {
            kind: IdentityKind::Serial,
            key: format!("serial:{}", serial.trim()),
            serial_untrusted,
        });
    }
    if let Some(uuid) = report.dmi.system_uuid.as_deref().and_then(trusted_uuid) {
        return Ok(Identity {
            kind: IdentityKind::Uuid,
            key: format!("uuid:{uuid}"),
            serial_untrusted,
        });
    }
    let mac = boot_mac
        .or(report.boot_mac)
        .filter(|m| !m.is_unusable())
        .or_else(|| report.macs().into_iter().next())
        .ok_or(NoIdentity)?;
    Ok(Identity {
        kind: IdentityKind::Mac,
        key: format!("mac:{mac}"),
        serial_untrusted,
    })
}

/// An existing machine as identity resolution sees it.
#[derive(Debug, Clone)]
pub struct Known<'a> {
    /// Machine id.
    pub id: &'a str,
    /// Its MACs.
    pub macs: &'a [Mac],
}

/// What a registration does to the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A new machine.
    Create,
    /// The same machine again (facts are refreshed; its state is unchanged).
    Update(String),
    /// The identity or the MACs collide with another machine: a new record in `conflict`.
    Conflict {
        /// The machine it collides with.
        with: String,
    },
}

/// Decides whether a registration is a new machine, the same machine, or a collision.
///
/// - `by_key`: the machine already registered under the same identity key, if any.
/// - `mac_owners`: the machines that own any of the reported MACs.
///
/// The same identity with at least one shared MAC is the same machine (a replaced NIC keeps the
/// others). The same identity with entirely different MACs, or reported MACs that belong to a
/// machine with another identity, is a conflict: never merged silently.
pub fn resolve(by_key: Option<Known<'_>>, mac_owners: &[&str], reported: &[Mac]) -> Resolution {
    match by_key {
        Some(k) => {
            let foreign_mac = mac_owners.iter().any(|owner| *owner != k.id);
            let shares_mac = k.macs.is_empty() || reported.iter().any(|m| k.macs.contains(m));
            if foreign_mac || !shares_mac {
                Resolution::Conflict {
                    with: k.id.to_owned(),
                }
            } else {
                Resolution::Update(k.id.to_owned())
            }
        }
        None => match mac_owners.first() {
            None => Resolution::Create,
            Some(owner) => Resolution::Conflict {
                with: (*owner).to_owned(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pxe_api::hardware::Dmi;

    fn report(serial: Option<&str>, uuid: Option<&str>, macs: &[&str]) -> HardwareReport {
        HardwareReport {
            dmi: Dmi {
                system_serial: serial.map(String::from),
                system_uuid: uuid.map(String::from),
                ..Dmi::default()
            },
            nics: macs
                .iter()
                .enumerate()
                .map(|(i, m)| pxe_api::hardware::Nic {
                    name: format!("eth{i}"),
                    mac: m.parse().unwrap(),
                    driver: None,
                    link_up: None,
                    speed_mbps: None,
                    pci_address: None,
                })
                .collect(),
            ..HardwareReport::default()
        }
    }

    #[test]
    fn placeholder_serials_are_not_trusted() {
        for s in [
            "",
            "   ",
            "To be filled by O.E.M.",
            "System Serial Number",
            "Default string",
            "0123456789",
            "1234567890",
            "Not Specified",
            "00000000",
            "0",
            "XXXXXXXX",
            "aaaa-aaaa",
            "N/A",
            "None",
            "serial\nchain http://evil/",
            &"A".repeat(4096),
        ] {
            assert!(is_placeholder_serial(s), "{s:?} should be a placeholder");
        }
        for s in ["TESTSERIAL123", "CZ1234ABCD", "J301A2B3", "ABC 123", "10"] {
            assert!(!is_placeholder_serial(s), "{s:?} is a real serial");
        }
    }

    #[test]
    fn uuids_are_canonicalised_and_placeholders_refused() {
        assert_eq!(
            trusted_uuid("5E1EC7ED-0000-4000-8000-525400990001").as_deref(),
            Some("5e1ec7ed-0000-4000-8000-525400990001")
        );
        assert_eq!(trusted_uuid("00000000-0000-0000-0000-000000000000"), None);
        assert_eq!(trusted_uuid("03000200-0400-0500-0006-000700080009"), None);
        assert_eq!(trusted_uuid("not-a-uuid"), None);
        assert_eq!(trusted_uuid("${uuid}"), None);
    }

    #[test]
    fn identity_falls_back_serial_uuid_mac() {
        let r = report(
            Some("ABC123"),
            Some("5e1ec7ed-0000-4000-8000-525400990001"),
            &[],
        );
        let id = identify(&r, None).unwrap();
        assert_eq!(
            (id.kind, id.key.as_str()),
            (IdentityKind::Serial, "serial:ABC123")
        );
        assert!(!id.serial_untrusted);

        let r = report(
            Some("To be filled by O.E.M."),
            Some("5e1ec7ed-0000-4000-8000-525400990001"),
            &["52:54:00:00:00:01"],
        );
        let id = identify(&r, None).unwrap();
        assert_eq!(id.kind, IdentityKind::Uuid);
        assert_eq!(id.key, "uuid:5e1ec7ed-0000-4000-8000-525400990001");
        assert!(id.serial_untrusted);

        let r = report(
            Some("Default string"),
            Some("00000000-0000-0000-0000-000000000000"),
            &["52:54:00:00:00:02", "52:54:00:00:00:01"],
        );
        let boot: Mac = "52:54:00:00:00:02".parse().unwrap();
        let id = identify(&r, Some(boot)).unwrap();
        assert_eq!(id.key, "mac:52:54:00:00:00:02");
        let id = identify(&r, None).unwrap();
        assert_eq!(
            id.key, "mac:52:54:00:00:00:01",
            "lowest MAC without a boot MAC"
        );

        let r = report(None, None, &[]);
        assert_eq!(identify(&r, None), Err(NoIdentity));
    }

    #[test]
    fn resolution_table() {
        let a: Mac = "52:54:00:00:00:01".parse().unwrap();
        let b: Mac = "52:54:00:00:00:02".parse().unwrap();
        let c: Mac = "52:54:00:00:00:03".parse().unwrap();
        let ab = [a, b];
        let known_a = || {
            Some(Known {
                id: "m-a",
                macs: &ab[..],
            })
        };
        assert_eq!(resolve(None, &[], &[a]), Resolution::Create);
        assert_eq!(
            resolve(known_a(), &["m-a"], &[a, b]),
            Resolution::Update("m-a".into())
        );
        // One NIC replaced: still the same machine.
        assert_eq!(
            resolve(known_a(), &["m-a"], &[a, c]),
            Resolution::Update("m-a".into())
        );
        // Same serial, entirely different MACs: conflict.
        assert_eq!(
            resolve(known_a(), &[], &[c]),
            Resolution::Conflict { with: "m-a".into() }
        );
        // Same serial, but a MAC owned by another machine: conflict.
        assert_eq!(
            resolve(known_a(), &["m-a", "m-b"], &[a, c]),
            Resolution::Conflict { with: "m-a".into() }
        );
        // New identity claiming another machine's MAC: conflict.
        assert_eq!(
            resolve(None, &["m-b"], &[c]),
            Resolution::Conflict { with: "m-b".into() }
        );
    }
}
