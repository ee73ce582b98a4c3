//! The `pxe-server` command line: `serve`, and the operator commands that talk to a running
//! appliance.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{DhcpMode, FileConfig};

/// rackhand appliance: netboot, inventory and lifecycle for a datacenter.
#[derive(Debug, Parser)]
#[command(
    name = "pxe-server",
    version,
    about = "rackhand appliance: netboot, inventory and machine lifecycle",
    term_width = 80
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the appliance.
    Serve(ServeArgs),
    /// Operate on machines through a running appliance's API.
    #[command(subcommand)]
    Machine(MachineCommand),
}

/// `pxe-server serve` flags; each mirrors a key of the TOML config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (TOML); default: DATA_DIR/rackhand.toml, written on first start.
    #[arg(long, env = "RACKHAND_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (store, operator token) [default: ./rackhand-data].
    #[arg(long, env = "RACKHAND_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long)]
    pub http: Option<std::net::SocketAddr>,
    /// Assets directory: vmlinuz, pxeimage.initramfs, iPXE binaries, snapshots/.
    #[arg(long)]
    pub assets: Option<PathBuf>,
    /// Base URL machines use to reach the appliance [default: from --http].
    #[arg(long)]
    pub public_url: Option<String>,
    /// Provisioning interface (DHCP/TFTP/HTTP bind there).
    #[arg(long)]
    pub interface: Option<String>,
    /// DHCP mode [default: off].
    #[arg(long, value_enum)]
    pub dhcp_mode: Option<DhcpMode>,
    /// DHCP address range START-END (full mode).
    #[arg(long)]
    pub dhcp_range: Option<String>,
    /// Most live leases for MACs not in the inventory [default: half the range].
    #[arg(long)]
    pub dhcp_unknown_max: Option<u32>,
    /// Distinct MACs the DHCP rate limiter tracks per window; past that, new unknown MACs are
    /// refused [default: 65536].
    #[arg(long)]
    pub dhcp_rate_limit_macs: Option<u32>,
    /// TFTP listen address (off unless set).
    #[arg(long)]
    pub tftp: Option<std::net::SocketAddr>,
    /// Extra kernel arguments for the agent.
    #[arg(long)]
    pub kernel_args: Option<String>,
    /// Seconds before a failed install/recycle is retried (doubles per
    /// failure) [default: 30].
    #[arg(long)]
    pub retry_base_secs: Option<u64>,
    /// Longest delay between attempts of a failed order [default: 900].
    #[arg(long)]
    pub retry_cap_secs: Option<u64>,
    /// Failed attempts after which the machine goes broken [default: 5].
    #[arg(long)]
    pub retry_max_attempts: Option<u32>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

impl ServeArgs {
    /// The flags as a config layer.
    pub fn as_layer(&self) -> FileConfig {
        FileConfig {
            data_dir: self.data_dir.clone(),
            http: self.http,
            assets: self.assets.clone(),
            public_url: self.public_url.clone(),
            interface: self.interface.clone(),
            dhcp_mode: self.dhcp_mode,
            dhcp_range: self.dhcp_range.clone(),
            dhcp_unknown_max: self.dhcp_unknown_max,
            dhcp_rate_limit_macs: self.dhcp_rate_limit_macs,
            tftp: self.tftp,
            kernel_args: self.kernel_args.clone(),
            retry_base_secs: self.retry_base_secs,
            retry_cap_secs: self.retry_cap_secs,
            retry_max_attempts: self.retry_max_attempts,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// How operator commands reach the appliance.
#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// Appliance API base URL.
    #[arg(
        long,
        env = "RACKHAND_API",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub api: String,
    /// File holding the operator token [default: DATA_DIR/operator.token].
    #[arg(long, env = "RACKHAND_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Data directory, to find the operator token.
    #[arg(
        long,
        env = "RACKHAND_DATA_DIR",
        default_value = "rackhand-data",
        global = true
    )]
    pub data_dir: PathBuf,
}

/// `pxe-server machine …`.
#[derive(Debug, Subcommand)]
pub enum MachineCommand {
    /// List machines.
    List {
        /// Only machines in this state.
        #[arg(long)]
        state: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show one machine (ID: id, serial or MAC).
    Show {
        /// Machine.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Install an OS snapshot.
    Install {
        /// Machine.
        id: String,
        /// Snapshot name.
        #[arg(long)]
        snapshot: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Wipe the machine and return it to the pool.
    Recycle {
        /// Machine.
        id: String,
        /// Do not wipe the disk with this serial or WWN (repeatable).
        #[arg(long = "keep-disk", value_name = "SERIAL")]
        keep_disks: Vec<String>,
        /// Required for a machine in use: its disks hold a running system.
        #[arg(long)]
        confirm: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Mark the machine broken.
    Broken {
        /// Machine.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Mark the machine in use.
    InUse {
        /// Machine.
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Retire the machine.
    Retire {
        /// Machine.
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show the machine's history.
    History {
        /// Machine.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}
