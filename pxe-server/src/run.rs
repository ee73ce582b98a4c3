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
    let mut services = tokio::task::JoinSet::new();
    if let Some(addr) = cfg.tftp {
        let sock = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding TFTP on {addr}"))?;
        tracing::info!(tftp = %addr, root = %state.assets.display(), "TFTP serving");
        let cfg = crate::tftp::TftpConfig::new(state.assets.clone());
        let stop = shutdown.clone();
        services.spawn(async move {
            crate::tftp::serve(sock, cfg, stop)
                .await
                .context("TFTP service")
        });
    }
    let http_shutdown = shutdown.clone();
    let http = crate::http::serve(listener, state.clone(), async move {
        http_shutdown.cancelled().await;
    });
    tokio::pin!(http);
    // The first service to stop (or fail) stops them all: a half-running appliance is worse
    // than a restart by the supervisor.
    let outcome = tokio::select! {
        r = &mut http => r.context("HTTP service"),
        Some(r) = services.join_next() => match r {
            Ok(r) => r.and_then(|()| {
                if shutdown.is_cancelled() { Ok(()) } else { anyhow::bail!("a service stopped unexpectedly") }
            }),
            Err(e) => Err(anyhow::anyhow!("a service panicked: {e}")),
        },
    };
    shutdown.cancel();
    if let Err(e) = &outcome {
        tracing::error!(error = format!("{e:#}"), "stopping the appliance");
    }
    while let Some(r) = services.join_next().await {
        match r {
            Ok(Err(e)) => tracing::error!(error = format!("{e:#}"), "service failed"),
            Err(e) => tracing::error!(error = %e, "service panicked"),
            Ok(Ok(())) => {}
        }
    }
    state.store.close().await;
    outcome
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
