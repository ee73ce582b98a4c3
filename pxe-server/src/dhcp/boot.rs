//! PXE boot-file selection and client classification (pure, table-tested).
//!
//! * A client that is already iPXE (option 77 = `iPXE`, or option 175 present) gets the boot
//!   script URL `<http_base>/boot.ipxe`; the HTTP handler answers that URL with a chain script
//!   that appends `mac=${net0/mac}` etc. This breaks the chain-load loop.
//! * Otherwise the boot file depends on the client architecture (option 93, RFC 4578):
//!   0 → BIOS TFTP file, 7/9 → x86-64 EFI TFTP file, 16 → UEFI HTTP boot URL, 11/19 → arm64
//!   when configured, 6 → explicitly unsupported, anything else → no boot file.

use std::fmt;

use super::config::Policy;
use super::wire::RequestView;

/// What kind of boot client sent a request, from options 60/77/175.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// Not a network-boot client (no `PXEClient`/`HTTPClient` vendor class, not iPXE).
    Plain,
    /// Firmware PXE (vendor class starts with `PXEClient`).
    Pxe,
    /// UEFI HTTP boot (vendor class starts with `HTTPClient`).
    HttpBoot,
    /// iPXE (user class `iPXE` or option 175 present).
    Ipxe,
}

/// Classify a request.
pub fn classify(req: &RequestView) -> ClientKind {
    if is_ipxe(req) {
        return ClientKind::Ipxe;
    }
    match req.vendor_class.as_deref() {
        Some(v) if v.starts_with(b"HTTPClient") => ClientKind::HttpBoot,
        Some(v) if v.starts_with(b"PXEClient") => ClientKind::Pxe,
        _ => ClientKind::Plain,
    }
}

/// iPXE sends user class 77 as the raw string `iPXE` (not RFC 3004 format); accept both
/// spellings, and option 175.
pub fn is_ipxe(req: &RequestView) -> bool {
    if req.ipxe_options {
        return true;
    }
    match req.user_class.as_deref() {
        Some(b"iPXE") => true,
        Some(uc) => rfc3004_classes(uc).any(|c| c == b"iPXE"),
        None => false,
    }
}

/// Iterate RFC 3004 user-class instances (length-prefixed); stops at a malformed length.
fn rfc3004_classes(mut b: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (&len, rest) = b.split_first()?;
        let item = rest.get(..usize::from(len))?;
        b = rest.get(usize::from(len)..)?;
        Some(item)
    })
}

/// The client architecture: option 93, else the `Arch:NNNNN` field of a PXE/HTTP vendor class.
pub fn client_arch(req: &RequestView) -> Option<u16> {
    if let Some(a) = req.client_arch {
        return Some(a);
    }
    let v = req.vendor_class.as_deref()?;
    let s = std::str::from_utf8(v).ok()?;
    let rest = s.split(':').skip_while(|p| *p != "Arch").nth(1)?;
    rest.parse().ok()
}

/// The boot file decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootChoice {
    /// A file fetched over TFTP from `siaddr`.
    Tftp(String),
    /// An absolute URL for UEFI HTTP boot (the reply must carry option 60 `HTTPClient`).
    HttpBoot(String),
    /// The iPXE boot script URL.
    IpxeScript(String),
    /// No boot file; the reason is logged.
    None(NoBootReason),
}

impl BootChoice {
    /// The string for the `file` field / option 67, if any.
    pub fn file(&self) -> Option<&str> {
        match self {
            BootChoice::Tftp(f) | BootChoice::HttpBoot(f) | BootChoice::IpxeScript(f) => Some(f),
            BootChoice::None(_) => None,
        }
    }
}

/// Why no boot file is handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoBootReason {
    /// Not a network-boot client.
    NotBootClient,
    /// The architecture is known but not served (e.g. 6 = IA32 EFI, or arm64 without a file).
    UnsupportedArch(u16),
    /// The architecture is not one we know.
    UnknownArch(u16),
    /// A PXE client without option 93 or an `Arch:` vendor-class field.
    MissingArch,
}

impl NoBootReason {
    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            NoBootReason::NotBootClient => "not_boot_client",
            NoBootReason::UnsupportedArch(_) => "unsupported_arch",
            NoBootReason::UnknownArch(_) => "unknown_arch",
            NoBootReason::MissingArch => "missing_arch",
        }
    }
}

impl fmt::Display for NoBootReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoBootReason::UnsupportedArch(a) | NoBootReason::UnknownArch(a) => {
                write!(f, "{} (arch {a})", self.code())
            }
            _ => f.write_str(self.code()),
        }
    }
}

/// The iPXE boot script URL handed to iPXE clients.
pub fn boot_script_url(policy: &Policy) -> String {
    format!("{}/boot.ipxe", policy.http_base)
}

/// Pick the boot file for a request.
pub fn select_boot(req: &RequestView, policy: &Policy) -> BootChoice {
    let kind = classify(req);
    match kind {
        ClientKind::Plain => return BootChoice::None(NoBootReason::NotBootClient),
        ClientKind::Ipxe => return BootChoice::IpxeScript(boot_script_url(policy)),
        ClientKind::Pxe | ClientKind::HttpBoot => {}
    }
    let Some(arch) = client_arch(req) else {
        return BootChoice::None(NoBootReason::MissingArch);
    };
    let files = &policy.boot_files;
    let asset = |f: &str| format!("{}/assets/{f}", policy.http_base);
    match arch {
        0 => BootChoice::Tftp(files.bios.clone()),
        7 | 9 => BootChoice::Tftp(files.efi_x64.clone()),
        16 => BootChoice::HttpBoot(asset(&files.efi_x64_http)),
        11 => files.efi_arm64.clone().map_or(
            BootChoice::None(NoBootReason::UnsupportedArch(arch)),
            BootChoice::Tftp,
        ),
        19 => files
            .efi_arm64_http
            .as_deref()
            .map_or(BootChoice::None(NoBootReason::UnsupportedArch(arch)), |f| {
                BootChoice::HttpBoot(asset(f))
            }),
        // Known RFC 4578 / IANA values we do not serve: IA32 EFI, Itanium, arm32, HTTP variants.
        1..=6 | 8 | 10 | 12..=15 | 17 | 18 | 20..=41 => {
            BootChoice::None(NoBootReason::UnsupportedArch(arch))
        }
        _ => BootChoice::None(NoBootReason::UnknownArch(arch)),
    }
}

/// Normalise option 97 (client machine identifier) to the UUID string Linux shows in
/// `/sys/class/dmi/id/product_uuid`.
///
/// Option 97 is a type byte (0) followed by the 16-byte SMBIOS UUID in SMBIOS byte order: the
/// first three fields (4, 2 and 2 bytes) are little-endian, so they are byte-swapped against
/// the canonical string. A 16-byte body without the type byte is accepted too.
pub fn normalize_client_uuid(opt97: &[u8]) -> Option<String> {
    let g: &[u8] = match opt97.len() {
        17 if opt97.first() == Some(&0) => opt97.get(1..)?,
        16 => opt97,
        _ => return None,
    };
    let g: [u8; 16] = g.try_into().ok()?;
    if g == [0; 16] || g == [0xff; 16] {
        return None;
    }
    let b = [
        g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13],
        g[14], g[15],
    ];
    let h = hex::encode(b);
    Some(format!(
        "{}-{}-{}-{}-{}",
        h.get(0..8)?,
        h.get(8..12)?,
        h.get(12..16)?,
        h.get(16..20)?,
        h.get(20..32)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_from_qemu_capture() {
        // `-uuid 5e1ec7ed-0000-4000-8000-525400990001` as OVMF/iPXE sent it.
        let raw = hex::decode("00edc71e5e000000408000525400990001").expect("hex");
        assert_eq!(
            normalize_client_uuid(&raw).as_deref(),
            Some("5e1ec7ed-0000-4000-8000-525400990001")
        );
        assert_eq!(
            normalize_client_uuid(&raw[1..]).as_deref(),
            Some("5e1ec7ed-0000-4000-8000-525400990001")
        );
        assert_eq!(normalize_client_uuid(&raw[..10]), None);
        assert_eq!(normalize_client_uuid(&[0u8; 17]), None);
        let mut typed = raw.clone();
        typed[0] = 1;
        assert_eq!(normalize_client_uuid(&typed), None);
    }

    #[test]
    fn rfc3004_user_class() {
        let v: Vec<&[u8]> = rfc3004_classes(&[4, b'i', b'P', b'X', b'E', 2, b'a', b'b']).collect();
        assert_eq!(v, vec![&b"iPXE"[..], &b"ab"[..]]);
        assert_eq!(rfc3004_classes(&[9, 1]).count(), 0);
    }
}
