//! `GET /boot.ipxe`: the boot decision for the asking machine, rendered as an iPXE script.

use std::sync::Arc;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use pxe_api::Mac;

use super::{AGENT_TOKEN_TTL_MS, ApiFailure, AppState};
use crate::boot::{self, BootRequest, Platform};
use crate::store::{NewEvent, NewToken};
use crate::token;

/// Longest accepted query parameter value.
const MAX_PARAM: usize = 256;

/// Parsed and validated query of a boot-script request.
#[derive(Debug, Default)]
struct BootQuery {
    mac: Option<Mac>,
    platform: Option<Platform>,
    buildarch: Option<String>,
    serial: Option<String>,
    uuid: Option<String>,
}

fn parse_query(raw: Option<&str>) -> Result<BootQuery, ApiFailure> {
    let mut q = BootQuery::default();
    let Some(raw) = raw else { return Ok(q) };
    if raw.len() > 4096 {
        return Err(ApiFailure::bad_request(
            "invalid_parameter",
            "query string too long",
        ));
    }
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(&v.replace('+', " "))
            .decode_utf8()
            .map_err(|_| ApiFailure::bad_request("invalid_parameter", format!("{k}: not UTF-8")))?
            .into_owned();
        if v.len() > MAX_PARAM {
            return Err(ApiFailure::bad_request(
                "invalid_parameter",
                format!("{k}: longer than {MAX_PARAM} bytes"),
            ));
        }
        match k {
            "mac" => {
                let mac: Mac = v.parse().map_err(|_| {
                    ApiFailure::bad_request(
                        "invalid_mac",
                        format!("mac={v:?} is not a MAC address"),
                    )
                })?;
                if mac.is_unusable() {
                    return Err(ApiFailure::bad_request(
                        "invalid_mac",
                        "mac is all-zero or broadcast",
                    ));
                }
                q.mac = Some(mac);
            }
            "platform" => {
                q.platform = Some(Platform::parse(&v).ok_or_else(|| {
                    ApiFailure::bad_request("invalid_parameter", "platform must be pcbios or efi")
                })?);
            }
            "buildarch" => {
                if v.is_empty()
                    || v.len() > 16
                    || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(ApiFailure::bad_request(
                        "invalid_parameter",
                        "buildarch must be letters, digits or _",
                    ));
                }
                q.buildarch = Some(v);
            }
            "serial" => q.serial = Some(v),
            "uuid" => q.uuid = Some(v),
            // Other parameters iPXE may add (asset, manufacturer…) are ignored, not refused.
            _ => {}
        }
    }
    Ok(q)
}

/// The handler.
pub(super) async fn script(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiFailure> {
    let q = parse_query(raw.as_deref())?;
    let Some(mac) = q.mac else {
        return Ok(ipxe(boot::render_chain(&st.script)));
    };
    let req = BootRequest {
        mac,
        platform: q.platform,
        buildarch: q.buildarch.clone(),
    };
    let machine = st.store.machine_by_mac(mac).await?;
    let decision = boot::decide(machine.as_ref().map(|m| (m.state, m.reason.as_deref())));
    let now = (st.clock)();
    if decision.needs_token() && st.bind_tokens_to_leases {
        let leased = st.store.bound_ip(mac, now).await?;
        let peer_ip = match peer.ip() {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        };
        if leased.is_none() || leased != peer_ip {
            tracing::warn!(%mac, %peer, leased = ?leased,
                "boot script with an agent token asked for by an address that does not hold the MAC's lease");
            return Err(ApiFailure::new(
                StatusCode::FORBIDDEN,
                "lease_mismatch",
                "this address does not hold the DHCP lease of that MAC",
            ));
        }
    }
    let event = NewEvent {
        machine_id: machine.as_ref().map(|m| m.id.clone()),
        mac: Some(mac),
        at_ms: now,
        actor: "appliance",
        kind: "boot",
        from_state: machine.as_ref().map(|m| m.state),
        to_state: None,
        reason: None,
        detail: Some(serde_json::json!({
            "decision": decision,
            "platform": q.platform,
            "buildarch": q.buildarch,
            "reported_serial": q.serial,
            "reported_uuid": q.uuid,
        })),
    };
    let tok = if decision.needs_token() {
        let t = token::generate();
        st.store
            .issue_token(
                &NewToken {
                    token_hash: token::hash(&t),
                    mac,
                    machine: machine.as_ref().map(|m| (m.id.clone(), m.version)),
                    issued_at_ms: now,
                    expires_at_ms: now.saturating_add(AGENT_TOKEN_TTL_MS),
                },
                &event,
            )
            .await?;
        Some(t)
    } else {
        st.store.append_event(&event).await?;
        None
    };
    tracing::info!(%mac, decision = ?decision, "boot script");
    Ok(ipxe(boot::render(
        &decision,
        &req,
        tok.as_deref(),
        &st.script,
    )))
}

fn ipxe(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let q = parse_query(Some(
            "mac=52-54-00-99-00-01&platform=efi&buildarch=x86_64&serial=To%20be%20filled&asset=x",
        ))
        .unwrap();
        assert_eq!(q.mac.unwrap().to_string(), "52:54:00:99:00:01");
        assert_eq!(q.platform, Some(Platform::Efi));
        assert_eq!(q.serial.as_deref(), Some("To be filled"));
        for bad in [
            "mac=zz",
            "mac=00:00:00:00:00:00",
            "mac=${net0/mac}",
            "platform=arm",
            "buildarch=x86%2064",
            "mac=52-54-00-99-00-01&serial=%ff",
        ] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
        assert!(parse_query(None).unwrap().mac.is_none());
    }
}
