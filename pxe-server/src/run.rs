//! `run`: binds the listeners and runs every service until SIGINT/SIGTERM.

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;

/// Runs the appliance described by `cfg` until a shutdown signal.
pub async fn run(cfg: ServeConfig) -> Result<()> {
    let state = crate::app::prepare(&cfg).await?;
    let listener = tokio::net::TcpListener::bind(cfg.http)
        .await
        .with_context(|| format!("binding HTTP on {}", cfg.http))?;
    let shutdown = CancellationToken::new();
    let machines = state.store.count_machines().await.unwrap_or(0);
    tracing::info!(http = %cfg.http, public_url = %cfg.public_url, assets = %state.assets.display(),
        data_dir = %cfg.data_dir.display(), machines, dhcp = ?cfg.dhcp_mode, "rackhand appliance serving");
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    let http_shutdown = shutdown.clone();
    crate::http::serve(listener, state.clone(), async move {
        http_shutdown.cancelled().await;
    })
    .await
    .context("HTTP service")?;
    state.store.close().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
