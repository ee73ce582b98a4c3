//! `pxe-server`: parse the command line, set up logging, dispatch. The work is in the library.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use pxe_server::cli::{Cli, Command, LogFormat, ServeArgs};
use pxe_server::config::{CONFIG_FILE, DEFAULT_DATA_DIR, FileConfig};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Machine(cmd) => pxe_server::client::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pxe-server: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Pretty => b.init(),
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    init_logging(args.log_format);
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => {
            pxe_server::app::write_default_config(&data_dir)?;
            FileConfig::load(&data_dir.join(CONFIG_FILE))?
        }
    };
    let cfg = file.overridden_by(args.as_layer()).validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(pxe_server::run::run(cfg))
}
