//! Starting the appliance: data directory, operator token, store, HTTP listener.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::boot::ScriptConfig;
use crate::config::ServeConfig;
use crate::http::{AppState, now_ms};
use crate::store::Store;
use crate::token;

/// File name of the operator token inside the data directory.
pub const OPERATOR_TOKEN_FILE: &str = "operator.token";

/// Reads the operator token, creating it (mode 0600) on first start.
pub fn operator_token(data_dir: &Path) -> Result<String> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let path = data_dir.join(OPERATOR_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) => {
            let t = t.trim().to_owned();
            if !token::is_well_formed(&t) {
                bail!("{} does not hold a well-formed token", path.display());
            }
            let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{mode:o}"),
                    "operator token is readable by others; fixing to 0600");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(t)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let t = token::generate();
            let tmp = data_dir.join(format!("{OPERATOR_TOKEN_FILE}.tmp"));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            f.write_all(format!("{t}\n").as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("installing {}", path.display()))?;
            std::fs::File::open(data_dir)?.sync_all()?;
            tracing::info!(path = %path.display(), "created the operator token");
            Ok(t)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the default configuration file into the data directory if there is none.
pub fn write_default_config(data_dir: &Path) -> Result<()> {
    let path = data_dir.join(crate::config::CONFIG_FILE);
    if !path.exists() {
        std::fs::create_dir_all(data_dir)?;
        std::fs::write(&path, crate::config::DEFAULT_FILE)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Opens the store and builds the HTTP state for `cfg`.
pub async fn prepare(cfg: &ServeConfig) -> Result<Arc<AppState>> {
    let operator_token = operator_token(&cfg.data_dir)?;
    let store = Store::open(&cfg.data_dir)
        .await
        .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?;
    if !cfg.assets.exists() {
        tracing::warn!(assets = %cfg.assets.display(),
            "assets directory missing; creating it empty (run `cargo xtask dist`)");
        std::fs::create_dir_all(&cfg.assets)?;
    }
    let assets = cfg
        .assets
        .canonicalize()
        .with_context(|| format!("resolving the assets directory {}", cfg.assets.display()))?;
    let known = store
        .all_macs()
        .await
        .context("loading the inventory's MACs")?
        .into_iter()
        .collect();
    Ok(Arc::new(AppState {
        store,
        script: ScriptConfig {
            base_url: cfg.public_url.clone(),
            kernel: "vmlinuz".into(),
            initrd: "pxeimage.initramfs".into(),
            kernel_args: cfg.kernel_args.clone(),
            hold_recheck_secs: 300,
        },
        assets,
        operator_token,
        clock: now_ms,
        bind_tokens_to_leases: cfg.dhcp_mode == crate::config::DhcpMode::Full,
        known_macs: std::sync::RwLock::new(known),
        dhcp: (cfg.dhcp_mode != crate::config::DhcpMode::Off)
            .then(|| Arc::new(crate::dhcp::DhcpShared::new())),
        retry: cfg.retry,
    }))
}
