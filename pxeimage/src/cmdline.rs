//! The agent's settings, parsed from the kernel command line. **Pure**: takes the text, opens
//! nothing.
//!
//! The appliance's iPXE script boots the kernel with, for example:
//!
//! ```text
//! rackhand.url=http://10.99.0.1:8080 rackhand.token=<64 lowercase hex>
//! BOOTIF=01-52-54-00-99-00-01 ip=10.99.0.100::10.99.0.1:255.255.255.0::::
//! console=ttyS0,115200n8 initrd=pxeimage.initramfs quiet panic=-1
//! ```
//!
//! Only namespaced `rackhand.*` keys, `BOOTIF` (pxelinux's `01-<mac>`) and `ip` (the kernel's
//! `client:server:gateway:netmask:hostname:device:autoconf:dns0:dns1`) are read; every other
//! word belongs to the kernel and is ignored. Unknown `rackhand.*` keys are reported as warnings
//! (a newer appliance may send keys this agent predates). A key we read that appears twice with
//! different values is an error: which one the kernel or iPXE meant is ambiguous.
//!
//! Errors name the key and carry a stable [`CmdlineError::code`]; they never echo the token.

use std::fmt;
use std::net::Ipv4Addr;

use pxe_api::Mac;
use pxe_api::routes::{CMDLINE_TOKEN, CMDLINE_URL};

/// `BOOTIF=`: the MAC of the NIC iPXE booted from, pxelinux style (`01-aa-bb-cc-dd-ee-ff`).
pub const KEY_BOOTIF: &str = "BOOTIF";
/// `ip=`: the address iPXE obtained, in the kernel's `ip=` format.
pub const KEY_IP: &str = "ip";
/// `rackhand.debug=1`: verbose console logs.
pub const KEY_DEBUG: &str = "rackhand.debug";
/// `rackhand.on_exit=reboot|poweroff|hold`: what PID 1 does when the agent is done.
pub const KEY_ON_EXIT: &str = "rackhand.on_exit";
/// The namespace of the agent's own keys.
const NAMESPACE: &str = "rackhand.";
/// Every key the parser reads, in the order errors are reported.
const KNOWN_KEYS: [&str; 6] = [
    CMDLINE_URL,
    CMDLINE_TOKEN,
    KEY_BOOTIF,
    KEY_IP,
    KEY_DEBUG,
    KEY_ON_EXIT,
];
/// Length of the per-boot token in hex digits (256 bits).
pub const TOKEN_HEX_LEN: usize = 64;

/// Everything the agent needs from the command line, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The appliance's base URL.
    pub url: BaseUrl,
    /// The per-boot bearer token.
    pub token: Token,
    /// The NIC to configure: the one iPXE booted from.
    pub boot_mac: Mac,
    /// The static IPv4 settings to put on it.
    pub ip: IpConfig,
    /// Verbose logging.
    pub debug: bool,
    /// What to do when the agent is done.
    pub on_exit: OnExit,
    /// Unknown `rackhand.*` keys, ignored (name only; values are not kept).
    pub unknown_keys: Vec<String>,
}

/// What PID 1 does once the agent has finished (or given up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnExit {
    /// `reboot(2)` with `RB_AUTOBOOT`: the next netboot gets a fresh script. The default.
    #[default]
    Reboot,
    /// `reboot(2)` with `RB_POWER_OFF` (handy in VM tests).
    PowerOff,
    /// Debug mode: stay up, idle, so the console can be read. Only when the cmdline asks.
    Hold,
}

impl OnExit {
    /// The cmdline spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnExit::Reboot => "reboot",
            OnExit::PowerOff => "poweroff",
            OnExit::Hold => "hold",
        }
    }
}

/// `http://<ipv4>[:port][/prefix]`, the appliance's base URL.
///
/// The host must be an IPv4 literal: the initramfs has no resolver configuration, so a name
/// could never be looked up. TLS is not built into this agent, so `https` is refused with a
/// clear message rather than failing later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// Appliance address.
    pub host: Ipv4Addr,
    /// TCP port (80 when absent).
    pub port: u16,
    /// Path prefix without a trailing `/` (usually empty).
    pub prefix: String,
}

impl BaseUrl {
    /// The absolute URL of an API route such as `/api/v1/agent/orders`.
    pub fn join(&self, route: &str) -> String {
        format!("{self}{route}")
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.prefix)
    }
}

/// The per-boot agent token: 64 lowercase hex digits. `Debug` and `Display` redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The secret itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Static IPv4 settings from `ip=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Our address.
    pub address: Ipv4Addr,
    /// Prefix length derived from the netmask.
    pub prefix_len: u8,
    /// Default gateway; `None` when the field is empty (appliance on the same segment).
    pub gateway: Option<Ipv4Addr>,
    /// Hostname field, when given.
    pub hostname: Option<String>,
    /// DNS servers, when given (kept for the record; the agent resolves no names).
    pub dns: Vec<Ipv4Addr>,
}

/// One problem with the command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    /// A required key is absent.
    #[error("{key}: missing (the appliance's iPXE script must set it)")]
    Missing {
        /// The key.
        key: &'static str,
    },
    /// A key's value is unusable.
    #[error("{key}: {reason}")]
    Malformed {
        /// The key.
        key: &'static str,
        /// What is wrong, without echoing secrets.
        reason: String,
    },
    /// A key appears more than once with different values.
    #[error("{key}: given more than once with different values")]
    Duplicate {
        /// The key.
        key: &'static str,
    },
}

impl CmdlineError {
    /// Stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            CmdlineError::Missing { .. } => "missing_key",
            CmdlineError::Malformed { .. } => "malformed_key",
            CmdlineError::Duplicate { .. } => "duplicate_key",
        }
    }

    /// The key the error is about.
    pub fn key(&self) -> &'static str {
        match self {
            CmdlineError::Missing { key }
            | CmdlineError::Malformed { key, .. }
            | CmdlineError::Duplicate { key } => key,
        }
    }
}

/// All problems found, in key order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_errors(.0))]
pub struct CmdlineErrors(pub Vec<CmdlineError>);

fn render_errors(errors: &[CmdlineError]) -> String {
    errors
        .iter()
        .map(|e| format!("[{}] {e}", e.code()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parses raw `/proc/cmdline` bytes. Invalid UTF-8 is replaced (U+FFFD), which then fails the
/// validation of any key it lands in, rather than failing the whole line.
pub fn parse_bytes(raw: &[u8]) -> Result<AgentConfig, CmdlineErrors> {
    parse(&String::from_utf8_lossy(raw))
}

/// Parses a kernel command line.
pub fn parse(cmdline: &str) -> Result<AgentConfig, CmdlineErrors> {
    let mut values: [Option<String>; KNOWN_KEYS.len()] = Default::default();
    let mut errors = Vec::new();
    let mut unknown_keys = Vec::new();
    for word in split_words(cmdline) {
        if word == "--" {
            // Everything after `--` is init's argv, not kernel parameters.
            break;
        }
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, v),
            None => (word.as_str(), ""),
        };
        if let Some(idx) = KNOWN_KEYS.iter().position(|k| *k == key) {
            let Some(slot) = values.get_mut(idx) else {
                continue;
            };
            match slot {
                Some(prev) if prev != value => {
                    let dup = CmdlineError::Duplicate {
                        key: KNOWN_KEYS.get(idx).copied().unwrap_or("?"),
                    };
                    if !errors.contains(&dup) {
                        errors.push(dup);
                    }
                }
                Some(_) => {}
                None => *slot = Some(value.to_owned()),
            }
        } else if key.starts_with(NAMESPACE) && !unknown_keys.iter().any(|k| k == key) {
            unknown_keys.push(sanitize_for_console(key));
        }
    }
    let [url, token, bootif, ip, debug, on_exit] = values;
    let dup = |key: &str| errors.iter().any(|e: &CmdlineError| e.key() == key);

    let mut problems: Vec<CmdlineError> = Vec::new();
    let mut check = |key: &'static str, v: Option<&String>, required: bool| -> Option<String> {
        if dup(key) {
            return None;
        }
        match v {
            Some(v) => Some(v.clone()),
            None if required => {
                problems.push(CmdlineError::Missing { key });
                None
            }
            None => None,
        }
    };
    let url_s = check(CMDLINE_URL, url.as_ref(), true);
    let token_s = check(CMDLINE_TOKEN, token.as_ref(), true);
    let bootif_s = check(KEY_BOOTIF, bootif.as_ref(), true);
    let ip_s = check(KEY_IP, ip.as_ref(), true);
    let debug_s = check(KEY_DEBUG, debug.as_ref(), false);
    let on_exit_s = check(KEY_ON_EXIT, on_exit.as_ref(), false);

    let url = url_s.and_then(|v| keep(parse_url(&v), &mut problems));
    let token = token_s.and_then(|v| keep(parse_token(&v), &mut problems));
    let boot_mac = bootif_s.and_then(|v| keep(parse_bootif(&v), &mut problems));
    let ip = ip_s.and_then(|v| keep(parse_ip(&v), &mut problems));
    let debug = match debug_s {
        None => Some(false),
        Some(v) => keep(parse_bool(KEY_DEBUG, &v), &mut problems),
    };
    let on_exit = match on_exit_s {
        None => Some(OnExit::default()),
        Some(v) => keep(parse_on_exit(&v), &mut problems),
    };

    errors.extend(problems);
    errors.sort_by_key(|e| KNOWN_KEYS.iter().position(|k| *k == e.key()));
    match (url, token, boot_mac, ip, debug, on_exit) {
        (Some(url), Some(token), Some(boot_mac), Some(ip), Some(debug), Some(on_exit))
            if errors.is_empty() =>
        {
            Ok(AgentConfig {
                url,
                token,
                boot_mac,
                ip,
                debug,
                on_exit,
                unknown_keys,
            })
        }
        _ => Err(CmdlineErrors(errors)),
    }
}

fn keep<T>(r: Result<T, CmdlineError>, problems: &mut Vec<CmdlineError>) -> Option<T> {
    r.map_err(|e| problems.push(e)).ok()
}

/// Splits like the kernel's `next_arg`: whitespace separates words except inside double
/// quotes; the quote characters themselves are dropped. An unterminated quote runs to the end.
fn split_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut has_word = false;
    for c in s.chars() {
        if c == '"' {
            in_quote = !in_quote;
            has_word = true;
        } else if c.is_ascii_whitespace() && !in_quote {
            if has_word {
                words.push(std::mem::take(&mut cur));
                has_word = false;
            }
        } else {
            cur.push(c);
            has_word = true;
        }
    }
    if has_word {
        words.push(cur);
    }
    words
}

/// Keeps a key name printable on a console: at most 64 chars, non-graphic chars replaced.
fn sanitize_for_console(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

fn malformed(key: &'static str, reason: impl Into<String>) -> CmdlineError {
    CmdlineError::Malformed {
        key,
        reason: reason.into(),
    }
}

fn parse_url(v: &str) -> Result<BaseUrl, CmdlineError> {
    let key = CMDLINE_URL;
    if v.is_empty() {
        return Err(malformed(key, "empty value"));
    }
    let rest = if let Some(r) = v.strip_prefix("http://") {
        r
    } else if v.starts_with("https://") {
        return Err(malformed(
            key,
            "https is not supported by this agent build (no TLS); use http://",
        ));
    } else {
        return Err(malformed(key, "must start with http://"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(malformed(key, "user info (`user@`) is not allowed"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => {
            let port: u16 = p
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| malformed(key, "port must be a number from 1 to 65535"))?;
            (h, port)
        }
        None => (authority, 80),
    };
    let host: Ipv4Addr = host.parse().map_err(|_| {
        malformed(
            key,
            "host must be an IPv4 address (the initramfs has no DNS resolver)",
        )
    })?;
    if host.is_unspecified() || host.is_broadcast() || host.is_multicast() {
        return Err(malformed(key, "host must be a unicast address"));
    }
    let ok_path = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~' | b'%'));
    if !ok_path {
        return Err(malformed(
            key,
            "path may only contain letters, digits and - _ . ~ % / (no query or fragment)",
        ));
    }
    Ok(BaseUrl {
        host,
        port,
        prefix: path.trim_end_matches('/').to_owned(),
    })
}

fn parse_token(v: &str) -> Result<Token, CmdlineError> {
    let key = CMDLINE_TOKEN;
    if v.chars().count() != TOKEN_HEX_LEN {
        return Err(malformed(
            key,
            format!(
                "must be {TOKEN_HEX_LEN} lowercase hex digits, got {} characters",
                v.chars().count()
            ),
        ));
    }
    if !v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(malformed(
            key,
            format!("must be {TOKEN_HEX_LEN} lowercase hex digits (found another character)"),
        ));
    }
    Ok(Token(v.to_owned()))
}

fn parse_bootif(v: &str) -> Result<Mac, CmdlineError> {
    let key = KEY_BOOTIF;
    let shape = "must be 01-aa-bb-cc-dd-ee-ff (hardware type 01, then the MAC)";
    let Some(mac) = v.strip_prefix("01-") else {
        return Err(malformed(key, shape));
    };
    if mac.len() != 17 || mac.contains(':') {
        return Err(malformed(key, shape));
    }
    let mac: Mac = mac.parse().map_err(|_| malformed(key, shape))?;
    if mac.is_unusable() {
        return Err(malformed(key, "all-zero or broadcast MAC"));
    }
    Ok(mac)
}

fn parse_ip(v: &str) -> Result<IpConfig, CmdlineError> {
    let key = KEY_IP;
    let fields: Vec<&str> = v.split(':').collect();
    if fields.len() == 1 {
        return Err(malformed(
            key,
            format!(
                "{:?} is not supported: the agent needs the static address iPXE obtained \
                 (ip=<client>::<gateway>:<netmask>::::)",
                sanitize_for_console(v)
            ),
        ));
    }
    if fields.len() < 4 || fields.len() > 9 {
        return Err(malformed(
            key,
            "expected client:server:gateway:netmask[:hostname:device:autoconf:dns0:dns1]",
        ));
    }
    let field = |i: usize| fields.get(i).copied().unwrap_or("");
    let addr = |name: &str, s: &str| -> Result<Ipv4Addr, CmdlineError> {
        s.parse()
            .map_err(|_| malformed(key, format!("{name} is not an IPv4 address")))
    };
    let opt_addr = |name: &str, s: &str| -> Result<Option<Ipv4Addr>, CmdlineError> {
        if s.is_empty() {
            Ok(None)
        } else {
            addr(name, s).map(Some)
        }
    };
    if field(0).is_empty() {
        return Err(malformed(key, "client address is empty"));
    }
    let address = addr("client address", field(0))?;
    let _server = opt_addr("server address", field(1))?;
    let gateway = opt_addr("gateway", field(2))?;
    if field(3).is_empty() {
        return Err(malformed(key, "netmask is empty"));
    }
    let prefix_len = netmask_to_prefix(addr("netmask", field(3))?)
        .ok_or_else(|| malformed(key, "netmask is not contiguous (e.g. 255.255.255.0)"))?;
    let hostname = Some(field(4))
        .filter(|h| !h.is_empty())
        .map(sanitize_for_console);
    // field(5), the device, is ignored: the NIC is chosen by BOOTIF's MAC.
    match field(6) {
        "" | "off" | "none" => {}
        other => {
            return Err(malformed(
                key,
                format!(
                    "autoconf {:?} is not supported; the agent configures the address statically",
                    sanitize_for_console(other)
                ),
            ));
        }
    }
    let mut dns = Vec::new();
    for (i, name) in [(7, "dns0"), (8, "dns1")] {
        dns.extend(opt_addr(name, field(i))?);
    }
    if address.is_unspecified()
        || address.is_broadcast()
        || address.is_multicast()
        || address.is_loopback()
    {
        return Err(malformed(key, "client address must be a unicast address"));
    }
    if let Some(gw) = gateway {
        if gw == address {
            return Err(malformed(key, "gateway equals the client address"));
        }
        if !same_subnet(address, gw, prefix_len) {
            return Err(malformed(
                key,
                "gateway is not in the client's subnet (not reachable on-link)",
            ));
        }
    }
    Ok(IpConfig {
        address,
        prefix_len,
        gateway,
        hostname,
        dns,
    })
}

/// `255.255.255.0` → `24`; `None` for a non-contiguous mask.
pub fn netmask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    if m.checked_shl(ones).unwrap_or(0) == 0 {
        u8::try_from(ones).ok()
    } else {
        None
    }
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

fn parse_bool(key: &'static str, v: &str) -> Result<bool, CmdlineError> {
    match v {
        "" | "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(malformed(key, "must be 1 or 0")),
    }
}

fn parse_on_exit(v: &str) -> Result<OnExit, CmdlineError> {
    match v {
        "reboot" => Ok(OnExit::Reboot),
        "poweroff" => Ok(OnExit::PowerOff),
        "hold" => Ok(OnExit::Hold),
        _ => Err(malformed(KEY_ON_EXIT, "must be reboot, poweroff or hold")),
    }
}

impl AgentConfig {
    /// A stable, line-per-setting rendering with the token redacted (for `debug-cmdline` and
    /// the boot log).
    pub fn render(&self) -> String {
        let ip = &self.ip;
        let mut out = String::new();
        let mut line = |k: &str, v: &dyn fmt::Display| out.push_str(&format!("{k}: {v}\n"));
        line("url", &self.url);
        line("token", &self.token);
        line("boot_mac", &self.boot_mac);
        line("address", &format_args!("{}/{}", ip.address, ip.prefix_len));
        line(
            "gateway",
            &ip.gateway
                .map_or_else(|| "none".to_owned(), |g| g.to_string()),
        );
        line("hostname", &ip.hostname.as_deref().unwrap_or("none"));
        let dns: Vec<String> = ip.dns.iter().map(ToString::to_string).collect();
        line(
            "dns",
            &if dns.is_empty() {
                "none".to_owned()
            } else {
                dns.join(",")
            },
        );
        line("debug", &self.debug);
        line("on_exit", &self.on_exit.as_str());
        if !self.unknown_keys.is_empty() {
            line("ignored_keys", &self.unknown_keys.join(","));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn base() -> String {
        format!(
            "rackhand.url=http://10.99.0.1:8080 rackhand.token={TOKEN} \
             BOOTIF=01-52-54-00-99-00-01 ip=10.99.0.100::10.99.0.1:255.255.255.0::::"
        )
    }

    #[test]
    fn parses_the_appliance_line() {
        let c = parse(&format!("{} console=ttyS0 quiet panic=-1", base())).unwrap();
        assert_eq!(c.url.host, Ipv4Addr::new(10, 99, 0, 1));
        assert_eq!(c.url.port, 8080);
        assert_eq!(
            c.url.join("/api/v1/agent/orders"),
            "http://10.99.0.1:8080/api/v1/agent/orders"
        );
        assert_eq!(c.token.expose(), TOKEN);
        assert_eq!(c.boot_mac, "52:54:00:99:00:01".parse().unwrap());
        assert_eq!(c.ip.prefix_len, 24);
        assert_eq!(c.ip.gateway, Some(Ipv4Addr::new(10, 99, 0, 1)));
        assert!(!c.debug);
        assert_eq!(c.on_exit, OnExit::Reboot);
        assert!(!format!("{c:?}").contains(TOKEN), "Debug leaks the token");
        assert!(!c.render().contains(TOKEN), "render leaks the token");
    }

    #[test]
    fn netmask_prefixes() {
        for (m, want) in [
            ("255.255.255.0", Some(24)),
            ("255.255.255.255", Some(32)),
            ("0.0.0.0", Some(0)),
            ("255.255.252.0", Some(22)),
            ("255.0.255.0", None),
            ("255.255.255.1", None),
        ] {
            assert_eq!(netmask_to_prefix(m.parse().unwrap()), want, "{m}");
        }
    }

    #[test]
    fn words_split_like_the_kernel() {
        assert_eq!(
            split_words(" a=1  b=\"x y\"\n\"c=d e\" "),
            vec!["a=1", "b=x y", "c=d e"]
        );
        assert_eq!(split_words("k=\"unterminated x"), vec!["k=unterminated x"]);
        assert_eq!(split_words("k=\"\""), vec!["k="]);
    }

    #[test]
    fn table_of_bad_values() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "rackhand.url=ftp://10.0.0.1",
                "rackhand.url",
                "malformed_key",
            ),
            (
                "rackhand.url=https://10.99.0.1",
                "rackhand.url",
                "malformed_key",
            ),
            (
                "rackhand.url=http://appliance:8080",
                "rackhand.url",
                "malformed_key",
            ),
            (
                "rackhand.url=http://10.99.0.1:0",
                "rackhand.url",
                "malformed_key",
            ),
            (
                "rackhand.url=http://10.99.0.1:99999",
                "rackhand.url",
                "malformed_key",
            ),
            (
                "rackhand.url=http://u@10.99.0.1",
                "rackhand.url",
                "malformed_key",
            ),
            (
                "rackhand.url=http://10.99.0.1/x?y",
                "rackhand.url",
                "malformed_key",
            ),
            ("rackhand.token=ABCDEF", "rackhand.token", "malformed_key"),
            ("BOOTIF=52-54-00-99-00-01", "BOOTIF", "malformed_key"),
            ("BOOTIF=01-52:54:00:99:00:01", "BOOTIF", "malformed_key"),
            ("BOOTIF=01-00-00-00-00-00-00", "BOOTIF", "malformed_key"),
            ("ip=dhcp", "ip", "malformed_key"),
            (
                "ip=10.99.0.100::10.99.0.1:255.0.255.0::::",
                "ip",
                "malformed_key",
            ),
            (
                "ip=10.99.0.100::10.98.0.1:255.255.255.0::::",
                "ip",
                "malformed_key",
            ),
            (
                "ip=10.99.0.100::10.99.0.1:255.255.255.0:::dhcp:",
                "ip",
                "malformed_key",
            ),
            ("ip=10.99.0.100::10.99.0.1", "ip", "malformed_key"),
            ("ip=::10.99.0.1:255.255.255.0::::", "ip", "malformed_key"),
            ("rackhand.debug=maybe", "rackhand.debug", "malformed_key"),
            (
                "rackhand.on_exit=explode",
                "rackhand.on_exit",
                "malformed_key",
            ),
        ];
        for (extra, key, code) in cases {
            let line = format!("{} {extra}", base());
            // the override must replace the base value, so strip the base key first
            let k = extra.split('=').next().unwrap();
            let line: String = line
                .split(' ')
                .filter(|w| !w.starts_with(&format!("{k}=")) || w == extra)
                .collect::<Vec<_>>()
                .join(" ");
            let err = parse(&line).expect_err(extra);
            assert_eq!(err.0.len(), 1, "{extra}: {err}");
            let e = &err.0[0];
            assert_eq!((e.key(), e.code()), (*key, *code), "{extra}: {e}");
            assert!(!e.to_string().contains(TOKEN));
        }
    }

    #[test]
    fn gateway_may_be_empty_and_options_parse() {
        let line = format!(
            "rackhand.url=http://10.99.0.1/rh/ rackhand.token={TOKEN} BOOTIF=01-52-54-00-99-00-0A \
             ip=10.99.0.7:::255.255.0.0:node7:eth0:off:10.99.0.1 rackhand.debug \
             rackhand.on_exit=poweroff rackhand.future=1"
        );
        let c = parse(&line).unwrap();
        assert_eq!(c.ip.gateway, None);
        assert_eq!(c.ip.prefix_len, 16);
        assert_eq!(c.ip.hostname.as_deref(), Some("node7"));
        assert_eq!(c.ip.dns, vec![Ipv4Addr::new(10, 99, 0, 1)]);
        assert_eq!(c.url.port, 80);
        assert_eq!(c.url.join("/x"), "http://10.99.0.1:80/rh/x");
        assert!(c.debug);
        assert_eq!(c.on_exit, OnExit::PowerOff);
        assert_eq!(c.unknown_keys, vec!["rackhand.future".to_owned()]);
    }

    #[test]
    fn identical_duplicates_are_fine_and_after_double_dash_is_ignored() {
        let line = format!(
            "{} BOOTIF=01-52-54-00-99-00-01 -- rackhand.token=zz",
            base()
        );
        assert!(parse(&line).is_ok());
    }
}
