//! Configuration of `pxe-server serve`: TOML keys mirror the command-line flags; flags override
//! the file; the file overrides the embedded defaults.
//!
//! Two layers: [`FileConfig`] is the file format (serde, unknown keys refused); [`ServeConfig`]
//! is the validated result. Parsing takes `&str`; loading adds the path to errors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::boot::is_script_safe_config;
use crate::lifecycle::RetryPolicy;

/// DHCP service mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// No DHCP: a plain start never disturbs a LAN.
    #[default]
    Off,
    /// Serve addresses and boot information on the provisioning interface.
    Full,
    /// Another server hands out addresses; answer PXE clients with boot information only.
    Proxy,
}

/// The configuration file (`rackhand.toml`). Every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory (store, operator token).
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address.
    pub http: Option<SocketAddr>,
    /// Assets directory (kernel, initramfs, iPXE binaries, snapshots).
    pub assets: Option<PathBuf>,
    /// Base URL machines use to reach this appliance (default: from `http`).
    pub public_url: Option<String>,
    /// Provisioning interface.
    pub interface: Option<String>,
    /// DHCP mode.
    pub dhcp_mode: Option<DhcpMode>,
    /// DHCP range `START-END`.
    pub dhcp_range: Option<String>,
    /// At most this many live leases for MACs the inventory does not know (default: half the
    /// range), so unknown clients cannot exhaust the pool for known machines.
    pub dhcp_unknown_max: Option<u32>,
    /// How many MACs the per-MAC DHCP rate limiter tracks per window (default 65,536). When
    /// that many distinct MACs are live in the window, further unknown MACs are refused (a
    /// MAC-spoofing flood); known machines are always served.
    pub dhcp_rate_limit_macs: Option<u32>,
    /// TFTP listen address.
    pub tftp: Option<SocketAddr>,
    /// Extra kernel arguments for the agent.
    pub kernel_args: Option<String>,
    /// Delay before retrying a failed install/recycle, in seconds (doubles per failure).
    pub retry_base_secs: Option<u64>,
    /// Longest delay between attempts of a failed order, in seconds.
    pub retry_cap_secs: Option<u64>,
    /// Failed attempts of an order after which the machine goes `broken`.
    pub retry_max_attempts: Option<u32>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// HTTP listen address.
    pub http: SocketAddr,
    /// Assets directory.
    pub assets: PathBuf,
    /// Base URL for scripts, without a trailing slash.
    pub public_url: String,
    /// Provisioning interface.
    pub interface: Option<String>,
    /// DHCP mode.
    pub dhcp_mode: DhcpMode,
    /// DHCP range.
    pub dhcp_range: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
    /// Cap on live leases for unknown MACs (None: half the range).
    pub dhcp_unknown_max: Option<u32>,
    /// MACs tracked by the DHCP rate limiter per window (None: 65,536).
    pub dhcp_rate_limit_macs: Option<u32>,
    /// TFTP listen address (None: TFTP off).
    pub tftp: Option<SocketAddr>,
    /// Extra kernel arguments for the agent.
    pub kernel_args: String,
    /// Retries of failed install/recycle orders.
    pub retry: RetryPolicy,
}

/// Embedded defaults.
pub const DEFAULT_DATA_DIR: &str = "rackhand-data";
/// Default HTTP address: loopback, so a plain start exposes nothing.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
/// Default assets directory.
pub const DEFAULT_ASSETS: &str = "target/dist";
/// Default kernel arguments for the agent: serial and VGA console, quiet, reboot on panic.
pub const DEFAULT_KERNEL_ARGS: &str = "console=tty0 console=ttyS0,115200n8 quiet panic=10";
/// Longest configurable delay between attempts of a failed order: one day.
pub const MAX_RETRY_SECS: u64 = 86_400;
/// Most configurable attempts of an order.
pub const MAX_RETRY_ATTEMPTS: u32 = 100;
/// File name of the default config written into the data directory on first start.
pub const CONFIG_FILE: &str = "rackhand.toml";

/// A configuration value is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid TOML or has unknown keys.
    #[error("parsing {path}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: toml::de::Error,
    },
    /// The file could not be read.
    #[error("reading {path}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A value is out of its domain.
    #[error("invalid {key}: {why}")]
    Invalid {
        /// Key.
        key: &'static str,
        /// Why.
        why: String,
    },
}

impl FileConfig {
    /// Parses TOML text.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// `self` with every key set in `over` replaced.
    pub fn overridden_by(self, over: FileConfig) -> FileConfig {
        FileConfig {
            data_dir: over.data_dir.or(self.data_dir),
            http: over.http.or(self.http),
            assets: over.assets.or(self.assets),
            public_url: over.public_url.or(self.public_url),
            interface: over.interface.or(self.interface),
            dhcp_mode: over.dhcp_mode.or(self.dhcp_mode),
            dhcp_range: over.dhcp_range.or(self.dhcp_range),
            dhcp_unknown_max: over.dhcp_unknown_max.or(self.dhcp_unknown_max),
            dhcp_rate_limit_macs: over.dhcp_rate_limit_macs.or(self.dhcp_rate_limit_macs),
            tftp: over.tftp.or(self.tftp),
            kernel_args: over.kernel_args.or(self.kernel_args),
            retry_base_secs: over.retry_base_secs.or(self.retry_base_secs),
            retry_cap_secs: over.retry_cap_secs.or(self.retry_cap_secs),
            retry_max_attempts: over.retry_max_attempts.or(self.retry_max_attempts),
        }
    }

    /// Validates and fills defaults.
    pub fn validate(self) -> Result<ServeConfig, ConfigError> {
        let http = match self.http {
            Some(a) => a,
            None => DEFAULT_HTTP.parse().map_err(|_| ConfigError::Invalid {
                key: "http",
                why: "bad default".into(),
            })?,
        };
        let public_url = match self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let host = if http.ip().is_unspecified() {
                    "127.0.0.1".to_owned()
                } else {
                    http.ip().to_string()
                };
                format!("http://{host}:{}", http.port())
            }
        };
        let rest = public_url
            .strip_prefix("http://")
            .or_else(|| public_url.strip_prefix("https://"));
        match rest {
            Some(r)
                if !r.is_empty()
                    && r.chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)) => {}
            _ => {
                return Err(ConfigError::Invalid {
                    key: "public_url",
                    why: format!("{public_url:?} must be http(s)://host[:port] with no path"),
                });
            }
        }
        let kernel_args = self
            .kernel_args
            .unwrap_or_else(|| DEFAULT_KERNEL_ARGS.to_owned());
        if !is_script_safe_config(&kernel_args) || kernel_args.contains("rackhand.") {
            return Err(ConfigError::Invalid {
                key: "kernel_args",
                why: "only letters, digits, spaces and -._~:/=,@+% are allowed, and rackhand.* \
                      keys are set by the appliance"
                    .into(),
            });
        }
        let dhcp_range = match self.dhcp_range {
            None => None,
            Some(r) => {
                let (a, b) = r.split_once('-').ok_or_else(|| ConfigError::Invalid {
                    key: "dhcp_range",
                    why: format!("{r:?} is not START-END"),
                })?;
                let a: std::net::Ipv4Addr = a.trim().parse().map_err(|_| ConfigError::Invalid {
                    key: "dhcp_range",
                    why: format!("{a:?} is not an IPv4 address"),
                })?;
                let b: std::net::Ipv4Addr = b.trim().parse().map_err(|_| ConfigError::Invalid {
                    key: "dhcp_range",
                    why: format!("{b:?} is not an IPv4 address"),
                })?;
                if u32::from(a) > u32::from(b) {
                    return Err(ConfigError::Invalid {
                        key: "dhcp_range",
                        why: "start is after end".into(),
                    });
                }
                Some((a, b))
            }
        };
        let dhcp_mode = self.dhcp_mode.unwrap_or_default();
        if dhcp_mode == DhcpMode::Full && dhcp_range.is_none() {
            return Err(ConfigError::Invalid {
                key: "dhcp_range",
                why: "--dhcp-mode full needs --dhcp-range START-END".into(),
            });
        }
        if dhcp_mode != DhcpMode::Off && self.interface.is_none() {
            return Err(ConfigError::Invalid {
                key: "interface",
                why: "DHCP needs --interface (the provisioning interface)".into(),
            });
        }
        if let Some(i) = &self.interface
            && (i.is_empty()
                || i.len() > 15
                || !i
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            return Err(ConfigError::Invalid {
                key: "interface",
                why: format!("{i:?} is not an interface name"),
            });
        }
        let retry = validate_retry(
            self.retry_base_secs,
            self.retry_cap_secs,
            self.retry_max_attempts,
        )?;
        Ok(ServeConfig {
            data_dir: self.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            http,
            assets: self.assets.unwrap_or_else(|| DEFAULT_ASSETS.into()),
            public_url,
            interface: self.interface,
            dhcp_mode,
            dhcp_range,
            dhcp_unknown_max: self.dhcp_unknown_max,
            dhcp_rate_limit_macs: self.dhcp_rate_limit_macs,
            tftp: self.tftp,
            kernel_args,
            retry,
        })
    }
}

/// The retry policy from its three keys (each defaulting to [`RetryPolicy::default`]).
fn validate_retry(
    base_secs: Option<u64>,
    cap_secs: Option<u64>,
    max_attempts: Option<u32>,
) -> Result<RetryPolicy, ConfigError> {
    let d = RetryPolicy::default();
    let base = base_secs.map_or(d.base_ms, |s| s.saturating_mul(1000));
    let cap = cap_secs.map_or(d.cap_ms.max(base), |s| s.saturating_mul(1000));
    if base > MAX_RETRY_SECS * 1000 || cap > MAX_RETRY_SECS * 1000 {
        return Err(ConfigError::Invalid {
            key: if base > MAX_RETRY_SECS * 1000 {
                "retry_base_secs"
            } else {
                "retry_cap_secs"
            },
            why: format!("at most {MAX_RETRY_SECS} s (one day)"),
        });
    }
    if cap < base {
        return Err(ConfigError::Invalid {
            key: "retry_cap_secs",
            why: format!(
                "{} s is below retry_base_secs ({} s)",
                cap / 1000,
                base / 1000
            ),
        });
    }
    let max_attempts = max_attempts.unwrap_or(d.max_attempts);
    if !(1..=MAX_RETRY_ATTEMPTS).contains(&max_attempts) {
        return Err(ConfigError::Invalid {
            key: "retry_max_attempts",
            why: format!("{max_attempts} is not in 1..={MAX_RETRY_ATTEMPTS}"),
        });
    }
    Ok(RetryPolicy {
        base_ms: base,
        cap_ms: cap,
        max_attempts,
    })
}

/// The default configuration file written on first start, with every key explained.
pub const DEFAULT_FILE: &str = r#"# rackhand appliance configuration. Every key mirrors a `pxe-server serve` flag
# (data_dir = --data-dir, ...); flags override this file.

# HTTP: API, boot scripts, assets. Loopback by default; use the provisioning address in production.
# http = "127.0.0.1:8080"

# Base URL that netbooting machines use to reach this appliance (default: from `http`).
# public_url = "http://10.99.0.1:8080"

# Kernel, initramfs, iPXE binaries and OS snapshots.
# assets = "target/dist"

# Provisioning interface; DHCP/TFTP/HTTP bind there.
# interface = "eth1"

# off (default), full (serve addresses) or proxy (another DHCP server gives addresses).
# dhcp_mode = "off"
# dhcp_range = "10.99.0.100-10.99.0.199"
# At most this many leases for MACs the inventory does not know (default: half the range).
# dhcp_unknown_max = 50
# Distinct MACs the per-MAC rate limiter tracks per 10 s window; past that, new unknown MACs
# are refused until the window moves on (a MAC-spoofing flood). Known machines always pass.
# dhcp_rate_limit_macs = 65536

# TFTP for firmware that cannot boot over HTTP.
# tftp = "0.0.0.0:69"

# Extra kernel arguments for the agent.
# kernel_args = "console=tty0 console=ttyS0,115200n8 quiet panic=10"

# A failed install or recycle is retried after retry_base_secs, doubling per failure up to
# retry_cap_secs; after retry_max_attempts failures the machine goes `broken` with the reason.
# retry_base_secs = 30
# retry_cap_secs = 900
# retry_max_attempts = 5
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_parses_and_validates() {
        let f = FileConfig::parse(DEFAULT_FILE, Path::new("x")).unwrap();
        assert_eq!(f, FileConfig::default());
        let c = f.validate().unwrap();
        assert_eq!(c.public_url, "http://127.0.0.1:8080");
        assert_eq!(c.dhcp_mode, DhcpMode::Off);
        assert_eq!(c.retry, RetryPolicy::default());
        // The commented keys are the defaults.
        let uncommented: String = DEFAULT_FILE
            .lines()
            .filter(|l| l.contains(" = "))
            .filter_map(|l| l.strip_prefix("# retry_"))
            .map(|l| format!("retry_{l}\n"))
            .collect();
        let c = FileConfig::parse(&uncommented, Path::new("x"))
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(c.retry, RetryPolicy::default());
    }

    #[test]
    fn retry_keys_are_read_and_checked() {
        let c = FileConfig::parse(
            "retry_base_secs = 0\nretry_cap_secs = 2\nretry_max_attempts = 2\n",
            Path::new("f"),
        )
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(
            c.retry,
            RetryPolicy {
                base_ms: 0,
                cap_ms: 2000,
                max_attempts: 2
            }
        );
        // A base above the default cap raises the default cap with it.
        let c = FileConfig::parse("retry_base_secs = 3600", Path::new("f"))
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!((c.retry.base_ms, c.retry.cap_ms), (3_600_000, 3_600_000));
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../../example.toml");
        let c = FileConfig::parse(text, Path::new("example.toml"))
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(c.dhcp_mode, DhcpMode::Full);
        assert_eq!(c.interface.as_deref(), Some("eth1"));
    }

    #[test]
    fn flags_override_file() {
        let file = FileConfig::parse(
            "http = \"0.0.0.0:80\"\nkernel_args = \"quiet\"\n",
            Path::new("f"),
        )
        .unwrap();
        let flags = FileConfig {
            http: Some("127.0.0.1:9000".parse().unwrap()),
            ..FileConfig::default()
        };
        let c = file.overridden_by(flags).validate().unwrap();
        assert_eq!(c.http.port(), 9000);
        assert_eq!(c.kernel_args, "quiet");
    }

    #[test]
    fn invalid_values_are_refused() {
        for (text, key) in [
            ("bogus = 1", None),
            ("public_url = \"http://x/evil path\"", Some("public_url")),
            ("public_url = \"ftp://x\"", Some("public_url")),
            ("kernel_args = \"quiet\\nshell\"", Some("kernel_args")),
            ("kernel_args = \"${evil}\"", Some("kernel_args")),
            ("kernel_args = \"rackhand.token=x\"", Some("kernel_args")),
            (
                "dhcp_mode = \"full\"\ninterface = \"eth1\"",
                Some("dhcp_range"),
            ),
            ("dhcp_mode = \"proxy\"", Some("interface")),
            ("dhcp_range = \"10.0.0.9-10.0.0.1\"", Some("dhcp_range")),
            ("dhcp_range = \"10.0.0.1\"", Some("dhcp_range")),
            ("interface = \"eth1; reboot\"", Some("interface")),
            ("retry_max_attempts = 0", Some("retry_max_attempts")),
            ("retry_max_attempts = 101", Some("retry_max_attempts")),
            (
                "retry_base_secs = 60\nretry_cap_secs = 10",
                Some("retry_cap_secs"),
            ),
            ("retry_cap_secs = 86401", Some("retry_cap_secs")),
            ("retry_base_secs = 86401", Some("retry_base_secs")),
            ("retry_base_secs = -1", None),
        ] {
            let r = FileConfig::parse(text, Path::new("f")).and_then(FileConfig::validate);
            match (r, key) {
                (Err(ConfigError::Parse { .. }), None) => {}
                (Err(ConfigError::Invalid { key: k, .. }), Some(want)) => {
                    assert_eq!(k, want, "{text}")
                }
                (other, _) => panic!("{text}: unexpected {other:?}"),
            }
        }
    }
}
