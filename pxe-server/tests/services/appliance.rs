//! The real `pxe-server serve` binary in the server namespace.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use super::netns::{Netns, Proc, SRV_IF};

/// The appliance's address on the test network.
pub const SERVER_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 99, 0, 1);

/// How to start the appliance.
#[derive(Debug, Clone)]
pub struct Opts {
    /// `full`, `proxy` or `off`.
    pub dhcp_mode: &'static str,
    /// `START-END` (full mode).
    pub dhcp_range: Option<String>,
    /// Serve TFTP on `<server ip>:69`.
    pub tftp: bool,
    /// `RUST_LOG` for the child.
    pub log_filter: &'static str,
    /// The server address (also used for HTTP on port 8080 and the public URL).
    pub server_ip: std::net::Ipv4Addr,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            dhcp_mode: "full",
            dhcp_range: Some("10.99.0.10-10.99.0.249".into()),
            tftp: false,
            log_filter: "info",
            server_ip: SERVER_IP,
        }
    }
}

/// Data, assets and log locations of one appliance (kept across restarts).
#[derive(Debug)]
pub struct Dirs {
    _tmp: tempfile::TempDir,
    /// `--data-dir`.
    pub data: PathBuf,
    /// `--assets`.
    pub assets: PathBuf,
    /// stdout+stderr of every start, appended.
    pub log: PathBuf,
}

impl Dirs {
    /// Fresh directories under a temporary directory.
    pub fn new() -> Dirs {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let assets = tmp.path().join("assets");
        std::fs::create_dir_all(&assets).expect("assets dir");
        let log = tmp.path().join("pxe-server.log");
        Dirs {
            data,
            assets,
            log,
            _tmp: tmp,
        }
    }

    /// The last `n` bytes of the log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let raw = std::fs::read(&self.log).unwrap_or_default();
        let from = raw.len().saturating_sub(n);
        String::from_utf8_lossy(&raw[from..]).into_owned()
    }
}

/// Starts `pxe-server serve` (binary `bin`) in the server namespace of `ns`.
pub fn start(ns: &Netns, bin: &Path, dirs: &Dirs, opts: &Opts) -> Proc {
    let data = dirs.data.display().to_string();
    let assets = dirs.assets.display().to_string();
    let http = format!("{}:8080", opts.server_ip);
    let url = format!("http://{}:8080", opts.server_ip);
    let tftp = format!("{}:69", opts.server_ip);
    let bin = bin.display().to_string();
    let mut argv: Vec<&str> = vec![
        &bin,
        "serve",
        "--data-dir",
        &data,
        "--assets",
        &assets,
        "--interface",
        SRV_IF,
        "--dhcp-mode",
        opts.dhcp_mode,
        "--http",
        &http,
        "--public-url",
        &url,
    ];
    if let Some(r) = &opts.dhcp_range {
        argv.extend(["--dhcp-range", r]);
    }
    if opts.tftp {
        argv.extend(["--tftp", &tftp]);
    }
    ns.spawn(
        &ns.srv,
        &argv,
        &[("RUST_LOG", opts.log_filter), ("NO_COLOR", "1")],
        &dirs.log,
    )
}
