//! `run`: binds the listeners and runs every service until SIGINT/SIGTERM.

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::config::{DhcpMode, ServeConfig};

/// The IPv4 address and netmask of `iface`.
fn interface_ipv4(iface: &str) -> Result<(Ipv4Addr, Ipv4Addr)> {
    let addrs = nix::ifaddrs::getifaddrs().context("listing interface addresses")?;
    for a in addrs {
        if a.interface_name != iface {
            continue;
        }
        let ip = a
            .address
            .as_ref()
            .and_then(|s| s.as_sockaddr_in())
            .map(|s| s.ip());
        let mask = a
            .netmask
            .as_ref()
            .and_then(|s| s.as_sockaddr_in())
            .map(|s| s.ip());
        if let (Some(ip), Some(mask)) = (ip, mask) {
            return Ok((ip, mask));
        }
    }
    anyhow::bail!("interface {iface:?} has no IPv4 address; the provisioning interface needs one")
}

/// Maps the operator configuration onto the DHCP service's.
fn dhcp_config(cfg: &ServeConfig) -> Result<crate::dhcp::DhcpConfig> {
    let iface = cfg.interface.as_deref().context("DHCP needs --interface")?;
    let (server_ip, netmask) = interface_ipv4(iface)?;
    let mode = match cfg.dhcp_mode {
        DhcpMode::Full => crate::dhcp::DhcpMode::Full,
        DhcpMode::Proxy => crate::dhcp::DhcpMode::Proxy,
        DhcpMode::Off => crate::dhcp::DhcpMode::Off,
    };
    let (start, end) = cfg.dhcp_range.unwrap_or((server_ip, server_ip));
    let mut d = crate::dhcp::DhcpConfig::new(mode, server_ip, start, end);
    d.interface = Some(iface.to_owned());
    d.netmask = netmask;
    d.http_base = cfg.public_url.clone();
    if cfg.dhcp_unknown_max.is_some() {
        d.unknown_max_leases = cfg.dhcp_unknown_max;
    }
    if let Some(n) = cfg.dhcp_rate_limit_macs {
        d.rate_limit_tracked_macs = n;
    }
    // The network's own routers own IPv6 in proxy mode; in full mode the appliance ends
    // iPXE's IPv6 wait itself.
    d.router_advertisements = mode == crate::dhcp::DhcpMode::Full;
    Ok(d)
}

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
    if cfg.dhcp_mode != DhcpMode::Off {
        let dcfg = dhcp_config(&cfg)?;
        let sockets = crate::dhcp::DhcpSockets::bind(&dcfg)
            .with_context(|| format!("binding DHCP on {:?}", cfg.interface))?;
        tracing::info!(mode = ?dcfg.mode, server = %dcfg.server_ip, interface = ?dcfg.interface,
            range = %format!("{}-{}", dcfg.range_start, dcfg.range_end), "DHCP serving");
        let store = Arc::new(state.store.clone());
        let known_state = state.clone();
        let known: Arc<dyn crate::dhcp::KnownClients> = Arc::new(move |mac: pxe_api::Mac| {
            known_state
                .known_macs
                .read()
                .map(|k| k.contains(&mac))
                .unwrap_or(false)
        });
        let shared = state
            .dhcp
            .clone()
            .unwrap_or_else(|| Arc::new(crate::dhcp::DhcpShared::new()));
        let stop = shutdown.clone();
        services.spawn(async move {
            crate::dhcp::serve(sockets, dcfg, store, known, shared, stop)
                .await
                .context("DHCP service")
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
