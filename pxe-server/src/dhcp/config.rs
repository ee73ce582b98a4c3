//! DHCP configuration as the operator gives it ([`DhcpConfig`]) and as the decision core uses it
//! ([`Policy`], validated once by [`Policy::from_config`]).

use std::net::Ipv4Addr;

/// How the DHCP service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DhcpMode {
    /// Serve addresses from a range on the provisioning subnet, plus PXE boot information.
    #[default]
    Full,
    /// Another DHCP server hands out addresses; answer only PXE/HTTP-boot clients with boot
    /// information (proxyDHCP, UDP 67 and 4011).
    Proxy,
    /// No DHCP at all.
    Off,
}

impl DhcpMode {
    /// Stable lower-case name (`full`, `proxy`, `off`), as used by `--dhcp-mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            DhcpMode::Full => "full",
            DhcpMode::Proxy => "proxy",
            DhcpMode::Off => "off",
        }
    }
}

impl std::str::FromStr for DhcpMode {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(DhcpMode::Full),
            "proxy" => Ok(DhcpMode::Proxy),
            "off" => Ok(DhcpMode::Off),
            _ => Err(ConfigError::BadMode(s.to_owned())),
        }
    }
}

/// Boot file names handed to firmware that is not yet iPXE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    /// TFTP file for legacy BIOS PXE (arch 0).
    pub bios: String,
    /// TFTP file for x86-64 UEFI PXE (arch 7 and 9): `ipxe.efi` or `snponly.efi`.
    pub efi_x64: String,
    /// File under `<http_base>/assets/` for x86-64 UEFI HTTP boot (arch 16).
    pub efi_x64_http: String,
    /// TFTP file for arm64 UEFI PXE (arch 11); `None` means arm64 is not served.
    pub efi_arm64: Option<String>,
    /// File under `<http_base>/assets/` for arm64 UEFI HTTP boot (arch 19); `None` = not served.
    pub efi_arm64_http: Option<String>,
}

impl Default for BootFiles {
    fn default() -> Self {
        BootFiles {
            bios: "undionly.kpxe".to_owned(),
            efi_x64: "ipxe.efi".to_owned(),
            efi_x64_http: "ipxe.efi".to_owned(),
            efi_arm64: None,
            efi_arm64_http: None,
        }
    }
}

/// Operator-facing DHCP settings. The lead maps `--dhcp-mode`, `--dhcp-range START-END` and
/// `--interface` onto this.
#[derive(Debug, Clone, PartialEq)]
pub struct DhcpConfig {
    /// Full, proxy or off.
    pub mode: DhcpMode,
    /// The appliance's address on the provisioning interface; sent as option 54 and `siaddr`.
    pub server_ip: Ipv4Addr,
    /// Provisioning interface name (`SO_BINDTODEVICE`). Set it in production: with `None`
    /// the sockets listen on every interface, broadcasts leave wherever the routing table
    /// sends them, and no RAs or rogue probes are sent (they need the interface).
    pub interface: Option<String>,
    /// First address of the dynamic range (full mode).
    pub range_start: Ipv4Addr,
    /// Last address of the dynamic range, inclusive (full mode).
    pub range_end: Ipv4Addr,
    /// Subnet mask of the provisioning subnet.
    pub netmask: Ipv4Addr,
    /// Default gateway handed to clients (option 3), if any.
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6).
    pub dns: Vec<Ipv4Addr>,
    /// Lease time in seconds (option 51).
    pub lease_secs: u32,
    /// Base URL of the appliance's HTTP server, e.g. `http://10.99.0.1:8080` (no trailing `/`).
    pub http_base: String,
    /// Boot file names per firmware.
    pub boot_files: BootFiles,
    /// At most this many live leases may belong to MACs the inventory does not know.
    /// `None` means half the range (rounded up).
    pub unknown_max_leases: Option<u32>,
    /// Per-MAC rate limit: at most this many requests …
    pub rate_limit_max: u32,
    /// … per window of this many milliseconds.
    pub rate_limit_window_ms: u64,
    /// Distinct MACs the rate limiter tracks (memory bound). When that many windows are
    /// live, MACs it does not track yet are refused unless the inventory knows them.
    pub rate_limit_tracked_macs: u32,
    /// How long a DECLINEd address stays out of the pool (ms).
    pub decline_probation_ms: u64,
    /// How long an OFFERed address stays reserved for the client (ms).
    pub offer_hold_ms: u64,
    /// Send IPv6 router advertisements (lifetime 0) to end iPXE's IPv6 wait (~16 s per iPXE
    /// start otherwise). Consider turning it off in proxy mode, where the segment and its
    /// routers belong to someone else.
    pub router_advertisements: bool,
    /// Interval between unsolicited RAs (ms).
    pub ra_interval_ms: u64,
    /// Interval between rogue-server probe DISCOVERs (ms); `None` disables probing (passive
    /// listening on UDP 68 stays on).
    pub rogue_probe_interval_ms: Option<u64>,
}

impl DhcpConfig {
    /// A configuration with the defaults for everything but the addresses.
    pub fn new(
        mode: DhcpMode,
        server_ip: Ipv4Addr,
        range_start: Ipv4Addr,
        range_end: Ipv4Addr,
    ) -> Self {
        DhcpConfig {
            mode,
            server_ip,
            interface: None,
            range_start,
            range_end,
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            router: None,
            dns: Vec::new(),
            lease_secs: 3600,
            http_base: format!("http://{server_ip}:8080"),
            boot_files: BootFiles::default(),
            unknown_max_leases: None,
            rate_limit_max: 30,
            rate_limit_window_ms: 10_000,
            rate_limit_tracked_macs: 65_536,
            decline_probation_ms: 10 * 60_000,
            offer_hold_ms: 60_000,
            router_advertisements: true,
            ra_interval_ms: 60_000,
            rogue_probe_interval_ms: Some(300_000),
        }
    }
}

/// Why a [`DhcpConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `--dhcp-mode` is not `full`, `proxy` or `off`.
    #[error("invalid DHCP mode {0:?}: expected full, proxy or off")]
    BadMode(String),
    /// `--dhcp-range` is not `START-END`.
    #[error("invalid DHCP range {0:?}: expected START-END, e.g. 10.99.0.100-10.99.0.199")]
    BadRangeSyntax(String),
    /// Range start is after range end.
    #[error("DHCP range start {start} is after its end {end}")]
    RangeReversed {
        /// Start.
        start: Ipv4Addr,
        /// End.
        end: Ipv4Addr,
    },
    /// The range is not inside the server's subnet.
    #[error("DHCP range {start}-{end} is not inside the subnet of {server_ip}/{netmask}")]
    RangeOutsideSubnet {
        /// Start.
        start: Ipv4Addr,
        /// End.
        end: Ipv4Addr,
        /// Server address.
        server_ip: Ipv4Addr,
        /// Netmask.
        netmask: Ipv4Addr,
    },
    /// The netmask has holes.
    #[error("netmask {0} is not contiguous")]
    BadNetmask(Ipv4Addr),
    /// The HTTP base URL is not `http://…` or `https://…`, ends with `/`, or is too long.
    #[error(
        "HTTP base URL {0:?} must start with http:// or https://, not end with /, and be at most 120 bytes"
    )]
    BadHttpBase(String),
    /// A boot file name is empty or contains characters that do not belong in a DHCP file field.
    #[error("boot file name {0:?} is empty, too long or has characters outside [A-Za-z0-9._/-]")]
    BadBootFile(String),
    /// Lease time is zero.
    #[error("lease time must be at least 60 s")]
    LeaseTooShort,
    /// The range is larger than this server handles (a /16).
    #[error("DHCP range has {0} addresses; at most 1048576 (a /12) are supported")]
    RangeTooLarge(u64),
}

/// Parse `START-END` into two addresses.
pub fn parse_range(s: &str) -> Result<(Ipv4Addr, Ipv4Addr), ConfigError> {
    let bad = || ConfigError::BadRangeSyntax(s.to_owned());
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let start: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
    let end: Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
    Ok((start, end))
}

/// The validated policy the pure decision core works from.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Full or proxy (a config with mode `off` yields no policy use, but is still valid).
    pub mode: DhcpMode,
    /// Our server identifier.
    pub server_ip: Ipv4Addr,
    /// Range start (inclusive).
    pub range_start: Ipv4Addr,
    /// Range end (inclusive).
    pub range_end: Ipv4Addr,
    /// Netmask.
    pub netmask: Ipv4Addr,
    /// Router option.
    pub router: Option<Ipv4Addr>,
    /// DNS option.
    pub dns: Vec<Ipv4Addr>,
    /// Lease time (s).
    pub lease_secs: u32,
    /// HTTP base URL, no trailing slash.
    pub http_base: String,
    /// Boot files.
    pub boot_files: BootFiles,
    /// Max live leases for unknown MACs.
    pub unknown_max_leases: u32,
    /// How long an offer is held (ms).
    pub offer_hold_ms: u64,
    /// Decline probation (ms).
    pub decline_probation_ms: u64,
}

/// Most addresses one full-mode range may hold (a /12). The allocator's cost grows with the
/// leases handed out, not with the range, so this only bounds what an operator can ask for.
pub const MAX_RANGE_ADDRESSES: u64 = 1 << 20;

fn valid_file_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
        && !s.contains("..")
}

impl Policy {
    /// Validate a configuration.
    pub fn from_config(c: &DhcpConfig) -> Result<Policy, ConfigError> {
        let mask = u32::from(c.netmask);
        if mask.leading_ones() + mask.trailing_zeros() != 32 {
            return Err(ConfigError::BadNetmask(c.netmask));
        }
        let (s, e) = (u32::from(c.range_start), u32::from(c.range_end));
        if c.mode == DhcpMode::Full {
            if s > e {
                return Err(ConfigError::RangeReversed {
                    start: c.range_start,
                    end: c.range_end,
                });
            }
            let net = u32::from(c.server_ip) & mask;
            if s & mask != net || e & mask != net {
                return Err(ConfigError::RangeOutsideSubnet {
                    start: c.range_start,
                    end: c.range_end,
                    server_ip: c.server_ip,
                    netmask: c.netmask,
                });
            }
            let size = u64::from(e - s) + 1;
            if size > MAX_RANGE_ADDRESSES {
                return Err(ConfigError::RangeTooLarge(size));
            }
        }
        if !(c.http_base.starts_with("http://") || c.http_base.starts_with("https://"))
            || c.http_base.ends_with('/')
            || c.http_base.len() > 120
            || c.http_base
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(ConfigError::BadHttpBase(c.http_base.clone()));
        }
        let b = &c.boot_files;
        for f in [
            Some(&b.bios),
            Some(&b.efi_x64),
            Some(&b.efi_x64_http),
            b.efi_arm64.as_ref(),
            b.efi_arm64_http.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if !valid_file_name(f) {
                return Err(ConfigError::BadBootFile(f.clone()));
            }
        }
        if c.lease_secs < 60 {
            return Err(ConfigError::LeaseTooShort);
        }
        let range_size = if s <= e { e - s + 1 } else { 0 };
        let unknown_max = c.unknown_max_leases.unwrap_or(range_size.div_ceil(2));
        Ok(Policy {
            mode: c.mode,
            server_ip: c.server_ip,
            range_start: c.range_start,
            range_end: c.range_end,
            netmask: c.netmask,
            router: c.router,
            dns: c.dns.clone(),
            lease_secs: c.lease_secs,
            http_base: c.http_base.clone(),
            boot_files: c.boot_files.clone(),
            unknown_max_leases: unknown_max,
            offer_hold_ms: c.offer_hold_ms,
            decline_probation_ms: c.decline_probation_ms,
        })
    }

    /// True if `ip` is inside the dynamic range.
    pub fn in_range(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        v >= u32::from(self.range_start) && v <= u32::from(self.range_end)
    }

    /// True if `ip` is on the server's subnet.
    pub fn in_subnet(&self, ip: Ipv4Addr) -> bool {
        let m = u32::from(self.netmask);
        u32::from(ip) & m == u32::from(self.server_ip) & m
    }

    /// True if `ip` may be handed to a client: in range and not the server, router, network
    /// or broadcast address.
    pub fn assignable(&self, ip: Ipv4Addr) -> bool {
        let m = u32::from(self.netmask);
        let v = u32::from(ip);
        self.in_range(ip)
            && ip != self.server_ip
            && Some(ip) != self.router
            && v & !m != 0
            && v & !m != !m
    }

    /// The lease time in milliseconds.
    pub fn lease_ms(&self) -> u64 {
        u64::from(self.lease_secs) * 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DhcpConfig {
        DhcpConfig::new(
            DhcpMode::Full,
            Ipv4Addr::new(10, 99, 0, 1),
            Ipv4Addr::new(10, 99, 0, 100),
            Ipv4Addr::new(10, 99, 0, 199),
        )
    }

    #[test]
    fn range_size_is_bounded() {
        let mut c = cfg();
        c.netmask = Ipv4Addr::new(255, 0, 0, 0);
        c.range_start = Ipv4Addr::new(10, 16, 0, 0);
        c.range_end = Ipv4Addr::new(10, 31, 255, 255);
        let p = Policy::from_config(&c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.unknown_max_leases, 1 << 19);
        c.range_end = Ipv4Addr::new(10, 32, 0, 0);
        assert!(matches!(
            Policy::from_config(&c),
            Err(ConfigError::RangeTooLarge(n)) if n == MAX_RANGE_ADDRESSES + 1
        ));
    }

    #[test]
    fn validates() {
        let p = Policy::from_config(&cfg()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.unknown_max_leases, 50);
        let mut c = cfg();
        c.range_end = Ipv4Addr::new(10, 98, 0, 5);
        assert!(matches!(
            Policy::from_config(&c),
            Err(ConfigError::RangeReversed { .. })
        ));
        let mut c = cfg();
        c.range_end = Ipv4Addr::new(10, 99, 1, 5);
        assert!(matches!(
            Policy::from_config(&c),
            Err(ConfigError::RangeOutsideSubnet { .. })
        ));
        let mut c = cfg();
        c.netmask = Ipv4Addr::new(255, 0, 255, 0);
        assert!(matches!(
            Policy::from_config(&c),
            Err(ConfigError::BadNetmask(_))
        ));
        let mut c = cfg();
        c.boot_files.bios = "../etc/passwd".into();
        assert!(matches!(
            Policy::from_config(&c),
            Err(ConfigError::BadBootFile(_))
        ));
        let mut c = cfg();
        c.http_base = "http://x/".into();
        assert!(matches!(
            Policy::from_config(&c),
            Err(ConfigError::BadHttpBase(_))
        ));
    }

    #[test]
    fn parses_range_and_mode() {
        assert_eq!(
            parse_range("10.99.0.100-10.99.0.199"),
            Ok((Ipv4Addr::new(10, 99, 0, 100), Ipv4Addr::new(10, 99, 0, 199)))
        );
        assert!(parse_range("10.99.0.100").is_err());
        assert!(parse_range("a-b").is_err());
        assert_eq!("proxy".parse::<DhcpMode>(), Ok(DhcpMode::Proxy));
        assert!("PROXY".parse::<DhcpMode>().is_err());
    }

    #[test]
    fn assignable_excludes_special_addresses() {
        let mut c = cfg();
        c.range_start = Ipv4Addr::new(10, 99, 0, 0);
        c.range_end = Ipv4Addr::new(10, 99, 0, 255);
        c.router = Some(Ipv4Addr::new(10, 99, 0, 254));
        let p = Policy::from_config(&c).unwrap_or_else(|e| panic!("{e}"));
        assert!(!p.assignable(Ipv4Addr::new(10, 99, 0, 0)));
        assert!(!p.assignable(Ipv4Addr::new(10, 99, 0, 255)));
        assert!(!p.assignable(Ipv4Addr::new(10, 99, 0, 1)));
        assert!(!p.assignable(Ipv4Addr::new(10, 99, 0, 254)));
        assert!(p.assignable(Ipv4Addr::new(10, 99, 0, 2)));
    }
}
