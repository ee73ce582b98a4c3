//! The boot decision and its iPXE rendering.
//!
//! [`decide`] maps (machine record or none, request facts) to a [`BootDecision`]; [`render`]
//! turns a decision into an iPXE script. Both are pure: the token is generated and stored by the
//! caller, the base URL comes from validated configuration.
//!
//! Injection safety: nothing a machine reported (serial, hostname, role, reason text…) reaches a
//! script except through [`console_text`], which keeps a conservative character set (no `$`,
//! `{`, `}`, quotes, `#`, `&`, `|`, `;`, newlines or control characters) and bounds the length.
//! MACs are re-rendered from their parsed form and tokens are hex, so neither can carry syntax.

use pxe_api::{Mac, MachineState};
use serde::Serialize;

/// Facts iPXE passes when it asks for its script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootRequest {
    /// The MAC of the NIC iPXE booted from.
    pub mac: Mac,
    /// `${platform}`: firmware kind.
    pub platform: Option<Platform>,
    /// `${buildarch}`.
    pub buildarch: Option<String>,
}

/// iPXE's `${platform}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Legacy BIOS.
    Pcbios,
    /// UEFI.
    Efi,
}

impl Platform {
    /// Parses iPXE's platform names.
    pub fn parse(s: &str) -> Option<Platform> {
        match s {
            "pcbios" => Some(Platform::Pcbios),
            "efi" => Some(Platform::Efi),
            _ => None,
        }
    }
}

/// Why the agent is booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentPurpose {
    /// Unknown machine: inventory and register.
    Discover,
    /// Registered and available: wait for orders.
    Await,
    /// Install the assigned snapshot.
    Install,
    /// Wipe the disks.
    Recycle,
}

/// What a netbooting machine gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum BootDecision {
    /// Boot the pxeimage agent with a fresh per-boot token.
    Agent {
        /// Why.
        purpose: AgentPurpose,
    },
    /// Boot the local disk.
    LocalDisk,
    /// Print why nothing happens, and wait; never anything destructive.
    Hold {
        /// The machine's state.
        state: MachineState,
        /// The recorded reason, if any (sanitised at render time).
        reason: Option<String>,
    },
}

impl BootDecision {
    /// True if the rendered script will carry an agent token.
    pub fn needs_token(&self) -> bool {
        matches!(self, BootDecision::Agent { .. })
    }
}

/// The boot decision: a pure function of the machine's state.
pub fn decide(machine: Option<(MachineState, Option<&str>)>) -> BootDecision {
    match machine {
        None => BootDecision::Agent {
            purpose: AgentPurpose::Discover,
        },
        Some((state, reason)) => match state {
            MachineState::Available => BootDecision::Agent {
                purpose: AgentPurpose::Await,
            },
            MachineState::Installing => BootDecision::Agent {
                purpose: AgentPurpose::Install,
            },
            MachineState::Recycling => BootDecision::Agent {
                purpose: AgentPurpose::Recycle,
            },
            MachineState::InUse => BootDecision::LocalDisk,
            MachineState::Broken | MachineState::Conflict | MachineState::Retired => {
                BootDecision::Hold {
                    state,
                    reason: reason.map(str::to_owned),
                }
            }
        },
    }
}

/// Settings the scripts need, validated at configuration time.
#[derive(Debug, Clone)]
pub struct ScriptConfig {
    /// Appliance base URL as machines reach it, e.g. `http://10.99.0.1:8080` (no trailing `/`,
    /// validated: scheme http/https, host and port characters only).
    pub base_url: String,
    /// Kernel file name in the assets directory.
    pub kernel: String,
    /// Initramfs file name in the assets directory.
    pub initrd: String,
    /// Extra kernel arguments (validated: safe characters only).
    pub kernel_args: String,
    /// Seconds a held machine waits before asking again.
    pub hold_recheck_secs: u32,
}

/// Characters allowed in configuration values that go into scripts verbatim.
pub fn is_script_safe_config(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._~:/=,@+%".contains(c) || c == ' ')
}

/// Reduces free text to something `echo` prints literally: a conservative character set, at
/// most 200 characters.
pub fn console_text(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() >= 200 {
            out.push_str("...");
            break;
        }
        let safe = c.is_ascii_alphanumeric() || " .,:-_/()+=@".contains(c);
        out.push(if safe { c } else { '?' });
    }
    out
}

/// The script `GET /boot.ipxe` returns when iPXE did not say who it is: it asks again with its
/// facts. Everything in it is iPXE's own expansion syntax, nothing from a client. `netX` is
/// iPXE's name for the network device it booted from, which need not be `net0`.
pub fn render_chain(cfg: &ScriptConfig) -> String {
    format!(
        "#!ipxe\n\
         # rackhand: identify and ask again\n\
         :retry\n\
         chain --replace --autofree {base}/boot.ipxe?mac=${{netX/mac:hexhyp}}&platform=${{platform}}&buildarch=${{buildarch}}&serial=${{serial:uristring}}&uuid=${{uuid}} || goto failed\n\
         :failed\n\
         echo rackhand: could not reach the appliance, retrying in 10 s\n\
         sleep 10\n\
         goto retry\n",
        base = cfg.base_url
    )
}

/// Renders a decision for `req` as an iPXE script. `token` must be `Some` exactly when the
/// decision needs one; it is 64 lowercase hex digits.
pub fn render(
    decision: &BootDecision,
    req: &BootRequest,
    token: Option<&str>,
    cfg: &ScriptConfig,
) -> String {
    let base = &cfg.base_url;
    let mac = req.mac;
    match decision {
        BootDecision::Agent { purpose } => {
            let token: String = token
                .unwrap_or("")
                .chars()
                .filter(char::is_ascii_hexdigit)
                .collect();
            let purpose = match purpose {
                AgentPurpose::Discover => "discover",
                AgentPurpose::Await => "await orders",
                AgentPurpose::Install => "install",
                AgentPurpose::Recycle => "recycle",
            };
            let extra = if cfg.kernel_args.is_empty() {
                String::new()
            } else {
                format!(" {}", cfg.kernel_args)
            };
            format!(
                "#!ipxe\n\
                 # rackhand: {mac} boots the agent ({purpose})\n\
                 echo rackhand: {mac}: booting the agent ({purpose})\n\
                 kernel {base}/assets/{kernel} initrd={initrd} rackhand.url={base} rackhand.token={token} BOOTIF=01-{hyp} ip=${{netX/ip}}::${{netX/gateway}}:${{netX/netmask}}::::{extra} || goto failed\n\
                 initrd {base}/assets/{initrd} || goto failed\n\
                 boot || goto failed\n\
                 :failed\n\
                 echo rackhand: could not load the agent, retrying in 10 s\n\
                 sleep 10\n\
                 chain --replace --autofree {base}/boot.ipxe?mac={hyp}&platform=${{platform}}&buildarch=${{buildarch}} ||\n\
                 reboot\n",
                kernel = cfg.kernel,
                initrd = cfg.initrd,
                hyp = mac.hyphenated(),
            )
        }
        BootDecision::LocalDisk => {
            // BIOS: iPXE boots the first hard disk itself (INT 13h drive 0x80); if that fails,
            // leaving iPXE returns to the BIOS, which tries its next boot device.
            // UEFI: iPXE cannot boot a local disk, so it hands back to the firmware's boot
            // manager, which tries the next boot option (the disk on a machine set up to
            // netboot first). The non-zero status matters: an EFI boot option that returns
            // success makes the boot manager (edk2/OVMF, and firmware built from it) stop and
            // show its menu instead of trying the next option.
            let local = match req.platform {
                Some(Platform::Efi) => "exit 1\n".to_owned(),
                Some(Platform::Pcbios) => "sanboot --no-describe --drive 0x80 || exit\n".to_owned(),
                None => {
                    "iseq ${platform} efi && exit 1 ||\nsanboot --no-describe --drive 0x80 || exit\n"
                        .to_owned()
                }
            };
            format!(
                "#!ipxe\n\
                 # rackhand: {mac} is in use: boot the local disk\n\
                 echo rackhand: {mac}: in use, booting from the local disk\n\
                 {local}"
            )
        }
        BootDecision::Hold { state, reason } => {
            let reason = reason
                .as_deref()
                .map(console_text)
                .unwrap_or_else(|| "no reason recorded".into());
            format!(
                "#!ipxe\n\
                 # rackhand: {mac} is {state}: hold\n\
                 :hold\n\
                 echo rackhand: {mac}: this machine is {state}: {reason}\n\
                 echo rackhand: nothing will be done to it; an operator must act. Asking again in {secs} s\n\
                 sleep {secs}\n\
                 chain --replace --autofree {base}/boot.ipxe?mac={hyp}&platform=${{platform}}&buildarch=${{buildarch}} || goto hold\n",
                secs = cfg.hold_recheck_secs,
                hyp = mac.hyphenated(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ScriptConfig {
        ScriptConfig {
            base_url: "http://10.99.0.1:8080".into(),
            kernel: "vmlinuz".into(),
            initrd: "pxeimage.initramfs".into(),
            kernel_args: "console=ttyS0,115200n8 quiet panic=-1".into(),
            hold_recheck_secs: 300,
        }
    }

    fn req(platform: Option<Platform>) -> BootRequest {
        BootRequest {
            mac: "52:54:00:99:00:01".parse().unwrap(),
            platform,
            buildarch: Some("x86_64".into()),
        }
    }

    const TOKEN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn decision_per_state() {
        assert_eq!(
            decide(None),
            BootDecision::Agent {
                purpose: AgentPurpose::Discover
            }
        );
        let want = [
            (MachineState::Available, "agent"),
            (MachineState::Installing, "agent"),
            (MachineState::Recycling, "agent"),
            (MachineState::InUse, "local-disk"),
            (MachineState::Broken, "hold"),
            (MachineState::Conflict, "hold"),
            (MachineState::Retired, "hold"),
        ];
        for (s, d) in want {
            let got = decide(Some((s, Some("why"))));
            let tag = serde_json::to_value(&got).unwrap()["decision"].clone();
            assert_eq!(tag, d, "{s}");
            assert_eq!(got.needs_token(), d == "agent");
        }
    }

    /// Golden scripts: one per decision. Re-bless by copying the printed script if a change is
    /// intended.
    #[test]
    fn golden_agent_script() {
        let s = render(
            &decide(None),
            &req(Some(Platform::Pcbios)),
            Some(TOKEN),
            &cfg(),
        );
        let want = "#!ipxe
# rackhand: 52:54:00:99:00:01 boots the agent (discover)
echo rackhand: 52:54:00:99:00:01: booting the agent (discover)
kernel http://10.99.0.1:8080/assets/vmlinuz initrd=pxeimage.initramfs rackhand.url=http://10.99.0.1:8080 rackhand.token=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff BOOTIF=01-52-54-00-99-00-01 ip=${netX/ip}::${netX/gateway}:${netX/netmask}:::: console=ttyS0,115200n8 quiet panic=-1 || goto failed
initrd http://10.99.0.1:8080/assets/pxeimage.initramfs || goto failed
boot || goto failed
:failed
echo rackhand: could not load the agent, retrying in 10 s
sleep 10
chain --replace --autofree http://10.99.0.1:8080/boot.ipxe?mac=52-54-00-99-00-01&platform=${platform}&buildarch=${buildarch} ||
reboot
";
        assert_eq!(s, want, "got:\n{s}");
    }

    #[test]
    fn golden_local_disk_scripts() {
        let bios = render(
            &BootDecision::LocalDisk,
            &req(Some(Platform::Pcbios)),
            None,
            &cfg(),
        );
        assert_eq!(
            bios,
            "#!ipxe
# rackhand: 52:54:00:99:00:01 is in use: boot the local disk
echo rackhand: 52:54:00:99:00:01: in use, booting from the local disk
sanboot --no-describe --drive 0x80 || exit
"
        );
        let efi = render(
            &BootDecision::LocalDisk,
            &req(Some(Platform::Efi)),
            None,
            &cfg(),
        );
        // A failure status, so that the firmware's boot manager goes on to the disk.
        assert_eq!(
            efi,
            "#!ipxe
# rackhand: 52:54:00:99:00:01 is in use: boot the local disk
echo rackhand: 52:54:00:99:00:01: in use, booting from the local disk
exit 1
"
        );
        let unknown = render(&BootDecision::LocalDisk, &req(None), None, &cfg());
        assert_eq!(
            unknown,
            "#!ipxe
# rackhand: 52:54:00:99:00:01 is in use: boot the local disk
echo rackhand: 52:54:00:99:00:01: in use, booting from the local disk
iseq ${platform} efi && exit 1 ||
sanboot --no-describe --drive 0x80 || exit
"
        );
        for s in [&bios, &efi, &unknown] {
            assert!(!s.contains("kernel") && !s.contains("rackhand.token"));
        }
    }

    #[test]
    fn golden_hold_script() {
        let d = decide(Some((MachineState::Broken, Some("PSU failed"))));
        let s = render(&d, &req(None), None, &cfg());
        assert_eq!(
            s,
            "#!ipxe
# rackhand: 52:54:00:99:00:01 is broken: hold
:hold
echo rackhand: 52:54:00:99:00:01: this machine is broken: PSU failed
echo rackhand: nothing will be done to it; an operator must act. Asking again in 300 s
sleep 300
chain --replace --autofree http://10.99.0.1:8080/boot.ipxe?mac=52-54-00-99-00-01&platform=${platform}&buildarch=${buildarch} || goto hold
"
        );
    }

    #[test]
    fn hostile_reasons_cannot_inject() {
        for evil in [
            "x\nchain http://evil/",
            "#!ipxe\nshell",
            "${net0/mac} ${root-path}",
            "a; kernel http://evil/ || shell",
            "'\"`$(reboot)`\"'",
            &"A".repeat(4096),
            "\r\n\u{0}\u{1b}[2J",
        ] {
            let d = decide(Some((MachineState::Broken, Some(evil))));
            let s = render(&d, &req(None), None, &cfg());
            let echo = s
                .lines()
                .find(|l| l.contains("this machine is broken"))
                .unwrap();
            let text = echo.split("broken: ").nth(1).unwrap();
            assert!(
                !text.contains(['$', '{', '}', '#', '"', '\'', ';', '&', '|', '`', '\n']),
                "{text:?}"
            );
            assert!(text.len() <= 203);
            // The script has exactly the hold lines, nothing more.
            assert_eq!(s.lines().count(), 7, "{s}");
        }
    }

    #[test]
    fn chain_script_uses_only_ipxe_expansions() {
        let s = render_chain(&cfg());
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.contains("boot.ipxe?mac=${netX/mac:hexhyp}&platform=${platform}"));
    }
}
