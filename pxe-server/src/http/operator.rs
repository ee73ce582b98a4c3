//! The operator API: list, show, install, recycle, broken, in-use, retire, history.
//! Every call needs the operator bearer token.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use pxe_api::agent::{MAX_DISK_ID_LEN, MAX_KEEP_DISKS, disk_id_matches};
use pxe_api::machine::{ActionRequest, EventView, InstallRequest, ReasonRequest, RecycleRequest};
use pxe_api::{MachineState, MachineView};

use super::{ApiFailure, AppState, authorization, parse_json};
use crate::lifecycle::{self, Action};
use crate::store::{NewEvent, TransitionChanges};
use crate::token;

/// Longest operator-supplied reason.
const MAX_REASON: usize = 1024;

fn authenticate(st: &AppState, headers: &HeaderMap) -> Result<(), ApiFailure> {
    match token::from_bearer(authorization(headers)) {
        Some(t) if token::same(t, &st.operator_token) => Ok(()),
        _ => Err(ApiFailure::unauthorized(
            "missing or invalid operator token",
        )),
    }
}

/// True for a snapshot name that is safe as one path component.
pub(crate) fn valid_snapshot_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn check_reason(r: Option<String>) -> Result<Option<String>, ApiFailure> {
    match r {
        Some(r) if r.len() > MAX_REASON => Err(ApiFailure::bad_request(
            "invalid_body",
            format!("reason longer than {MAX_REASON} bytes"),
        )),
        Some(r) if r.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

async fn find(st: &AppState, reference: &str) -> Result<MachineView, ApiFailure> {
    if reference.len() > 256 {
        return Err(ApiFailure::bad_request(
            "invalid_parameter",
            "machine reference too long",
        ));
    }
    st.store.find_machine(reference).await?.ok_or_else(|| {
        ApiFailure::not_found("machine_not_found", format!("no machine {reference:?}"))
    })
}

/// What an operator order carries besides its action.
#[derive(Debug, Default)]
struct OrderArgs {
    if_version: Option<i64>,
    reason: Option<String>,
    snapshot: Option<String>,
    keep_disks: Vec<String>,
    /// The operator confirmed an order that needs it ([`lifecycle::needs_confirmation`]).
    confirmed: bool,
}

/// Applies `action` with optimistic concurrency: re-reads and re-checks on a lost race, unless
/// the caller pinned a version (then a moved version is a 409). Every transition starts the
/// attempt count of the order it leads to over.
async fn transition(
    st: &AppState,
    reference: &str,
    action: Action,
    args: OrderArgs,
) -> Result<MachineView, ApiFailure> {
    let OrderArgs {
        if_version,
        reason,
        snapshot,
        keep_disks,
        confirmed,
    } = args;
    for _ in 0..16 {
        let m = find(st, reference).await?;
        if let Some(v) = if_version
            && v != m.version
        {
            return Err(ApiFailure::conflict(
                "version_conflict",
                format!("machine is at version {}, not {v}", m.version),
            ));
        }
        if lifecycle::needs_confirmation(m.state, action) && !confirmed {
            return Err(ApiFailure::conflict(
                "confirmation_required",
                format!(
                    "machine {} is in use: {} wipes its disks; repeat with \"confirm\": true",
                    m.id,
                    action.as_str()
                ),
            ));
        }
        let to = lifecycle::transition(m.state, action).map_err(|r| {
            ApiFailure::conflict(
                r.code(),
                format!("cannot {} a machine that is {}", action.as_str(), m.state),
            )
        })?;
        let changes = TransitionChanges {
            snapshot: match action {
                Action::Install => Some(snapshot.clone()),
                _ => None,
            },
            reason: reason.clone(),
            attempts: 0,
            keep_disks: keep_disks.clone(),
        };
        let mut detail = serde_json::json!({ "action": action.as_str(), "snapshot": snapshot });
        if !keep_disks.is_empty()
            && let Some(o) = detail.as_object_mut()
        {
            o.insert("keep_disks".into(), keep_disks.clone().into());
        }
        let event = NewEvent {
            machine_id: Some(m.id.clone()),
            at_ms: (st.clock)(),
            actor: "operator",
            kind: "transition",
            from_state: Some(m.state),
            to_state: Some(to),
            reason: reason.clone(),
            detail: Some(detail),
            ..NewEvent::default()
        };
        if st
            .store
            .apply_transition(&m.id, m.version, to, &changes, &event)
            .await?
        {
            tracing::info!(machine = %m.id, from = %m.state, %to, action = action.as_str(), "transition");
            return st
                .store
                .machine(&m.id)
                .await?
                .ok_or_else(|| ApiFailure::not_found("machine_not_found", "machine vanished"));
        }
        if if_version.is_some() {
            return Err(ApiFailure::conflict(
                "version_conflict",
                "the machine changed meanwhile",
            ));
        }
    }
    Err(ApiFailure::conflict(
        "version_conflict",
        "too much contention on this machine; retry",
    ))
}

/// `GET /api/v1/machines?state=S`.
pub(super) async fn list(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<MachineView>>, ApiFailure> {
    authenticate(&st, &headers)?;
    let mut state = None;
    for pair in raw
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("state", v)) => {
                state = Some(v.parse::<MachineState>().map_err(|_| {
                    ApiFailure::bad_request("invalid_state", format!("unknown state {v:?}"))
                })?);
            }
            _ => {
                return Err(ApiFailure::bad_request(
                    "invalid_parameter",
                    "the only query parameter is state",
                ));
            }
        }
    }
    Ok(Json(st.store.list_machines(state).await?))
}

/// `GET /api/v1/machines/{id}`.
pub(super) async fn show(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<MachineView>, ApiFailure> {
    authenticate(&st, &headers)?;
    let mut m = find(&st, &id).await?;
    if matches!(m.state, MachineState::Installing | MachineState::Recycling) {
        let events = st
            .store
            .recent_progress(&m.id, crate::progress::WINDOW)
            .await?;
        m.progress = crate::progress::summarize(&events);
    }
    Ok(Json(m))
}

/// `GET /api/v1/machines/{id}/history`.
pub(super) async fn history(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Vec<EventView>>, ApiFailure> {
    authenticate(&st, &headers)?;
    let m = find(&st, &id).await?;
    Ok(Json(st.store.history(&m.id).await?))
}

/// `POST /api/v1/machines/{id}/install` `{ "snapshot": NAME }`.
pub(super) async fn install(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MachineView>, ApiFailure> {
    authenticate(&st, &headers)?;
    let req: InstallRequest = parse_json(body)?;
    if !valid_snapshot_name(&req.snapshot) {
        return Err(ApiFailure::bad_request(
            "invalid_snapshot",
            "snapshot names are 1-64 letters, digits, '.', '_' or '-', not starting with '.'",
        ));
    }
    if !st.assets.join("snapshots").join(&req.snapshot).is_dir() {
        return Err(ApiFailure::not_found(
            "unknown_snapshot",
            format!("no snapshot {:?} in the assets directory", req.snapshot),
        ));
    }
    let reason = Some(format!("install {}", req.snapshot));
    Ok(Json(
        transition(
            &st,
            &id,
            Action::Install,
            OrderArgs {
                if_version: req.if_version,
                reason,
                snapshot: Some(req.snapshot),
                ..OrderArgs::default()
            },
        )
        .await?,
    ))
}

/// `POST /api/v1/machines/{id}/broken` `{ "reason": TEXT }`.
pub(super) async fn broken(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MachineView>, ApiFailure> {
    authenticate(&st, &headers)?;
    let req: ReasonRequest = parse_json(body)?;
    let reason = check_reason(Some(req.reason))?.ok_or_else(|| {
        ApiFailure::bad_request("reason_required", "a broken machine needs a reason")
    })?;
    Ok(Json(
        transition(
            &st,
            &id,
            Action::MarkBroken,
            OrderArgs {
                if_version: req.if_version,
                reason: Some(reason),
                ..OrderArgs::default()
            },
        )
        .await?,
    ))
}

async fn simple(
    st: &AppState,
    headers: &HeaderMap,
    id: &str,
    body: Result<Bytes, BytesRejection>,
    action: Action,
) -> Result<Json<MachineView>, ApiFailure> {
    authenticate(st, headers)?;
    let req: ActionRequest = parse_json(body)?;
    let reason = check_reason(req.reason)?;
    Ok(Json(
        transition(
            st,
            id,
            action,
            OrderArgs {
                if_version: req.if_version,
                reason,
                ..OrderArgs::default()
            },
        )
        .await?,
    ))
}

/// Checks a recycle scope: bounded, well-formed, deduplicated, and every entry naming a disk
/// (by serial or WWN) of the machine's last hardware report, so a typo never silently
/// leaves the disk it meant to protect in the wipe.
fn check_keep_disks(m: &MachineView, keep: Vec<String>) -> Result<Vec<String>, ApiFailure> {
    if keep.len() > MAX_KEEP_DISKS {
        return Err(ApiFailure::bad_request(
            "invalid_keep_disks",
            format!("at most {MAX_KEEP_DISKS} kept disks"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(keep.len());
    for k in keep {
        let k = k.trim().to_owned();
        if k.is_empty() || k.len() > MAX_DISK_ID_LEN || k.chars().any(char::is_control) {
            return Err(ApiFailure::bad_request(
                "invalid_keep_disks",
                format!(
                    "a kept disk is a serial or WWN of 1-{MAX_DISK_ID_LEN} bytes without control \
                     characters"
                ),
            ));
        }
        let known = m.hardware.as_ref().is_some_and(|h| {
            h.disks
                .iter()
                .any(|d| disk_id_matches(&k, d.serial.as_deref(), d.wwn.as_deref()))
        });
        if !known {
            return Err(ApiFailure::bad_request(
                "unknown_disk",
                format!(
                    "no disk of machine {}'s last hardware report has serial or WWN {:?}",
                    m.id,
                    k.escape_debug().to_string()
                ),
            ));
        }
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&k)) {
            out.push(k);
        }
    }
    Ok(out)
}

/// `POST /api/v1/machines/{id}/recycle` `{ "keep_disks": [SERIAL|WWN, ..], "confirm": true }`
/// (all optional; `confirm` is required for a machine in use).
pub(super) async fn recycle(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MachineView>, ApiFailure> {
    authenticate(&st, &headers)?;
    let req: RecycleRequest = parse_json(body)?;
    let reason = check_reason(req.reason)?;
    let keep_disks = if req.keep_disks.is_empty() {
        Vec::new()
    } else {
        let m = find(&st, &id).await?;
        check_keep_disks(&m, req.keep_disks)?
    };
    Ok(Json(
        transition(
            &st,
            &id,
            Action::Recycle,
            OrderArgs {
                if_version: req.if_version,
                reason,
                keep_disks,
                confirmed: req.confirm,
                ..OrderArgs::default()
            },
        )
        .await?,
    ))
}

/// `POST /api/v1/machines/{id}/in-use`.
pub(super) async fn in_use(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MachineView>, ApiFailure> {
    simple(&st, &headers, &id, body, Action::MarkInUse).await
}

/// `POST /api/v1/machines/{id}/retire`.
pub(super) async fn retire(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MachineView>, ApiFailure> {
    simple(&st, &headers, &id, body, Action::Retire).await
}

/// `GET /api/v1/health`: the appliance's own view of itself, for operators and monitoring:
/// machine counts per state, and DHCP counters with any foreign DHCP servers seen on the
/// provisioning segment (two netboot servers on one segment silently misprovision machines).
pub(super) async fn health(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    use std::sync::atomic::Ordering::Relaxed;
    authenticate(&st, &headers)?;
    let machines = st.store.list_machines(None).await?;
    let mut per_state = serde_json::Map::new();
    for s in MachineState::ALL {
        let n = machines.iter().filter(|m| m.state == s).count();
        per_state.insert(s.as_str().to_owned(), n.into());
    }
    let dhcp = st.dhcp.as_ref().map(|d| {
        let rogue: Vec<serde_json::Value> = d
            .rogue
            .servers()
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "server_id": r.server_id.to_string(),
                    "proxy": r.proxy,
                    "first_seen_ms": r.first_seen_ms,
                    "last_seen_ms": r.last_seen_ms,
                    "replies": r.count,
                })
            })
            .collect();
        let s = &d.stats;
        serde_json::json!({
            "received": s.received.load(Relaxed),
            "offers": s.offers.load(Relaxed),
            "acks": s.acks.load(Relaxed),
            "naks": s.naks.load(Relaxed),
            "malformed": s.malformed_total(),
            "ignored": s.ignored.load(Relaxed),
            "rate_limited": s.rate_limited.load(Relaxed),
            "persist_failed": s.persist_failed.load(Relaxed),
            "send_failed": s.send_failed.load(Relaxed),
            "rogue_servers": rogue,
        })
    });
    let rogue_seen = dhcp
        .as_ref()
        .and_then(|d| d["rogue_servers"].as_array().map(|a| !a.is_empty()))
        .unwrap_or(false);
    Ok(Json(serde_json::json!({
        "status": if rogue_seen { "degraded" } else { "ok" },
        "machines": per_state,
        "dhcp": dhcp,
    })))
}
