//! The agent API: register, orders, progress, result. Every call carries the per-boot token.
//!
//! A token is valid for exactly one machine (the one it is bound to at issue or at
//! registration), only while that machine is in a state that expects an agent, and only until the
//! machine's next state change (its version moves on). A revoked token gets `401 token_revoked`:
//! the agent then reboots and its next netboot brings a fresh script for the new state.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use pxe_api::agent::{
    Order, Outcome, ProgressReport, RegisterRequest, RegisterResponse, ResultReport,
};
use pxe_api::{HardwareReport, MachineState, MachineView};

use super::{ApiFailure, AppState, authorization, parse_json};
use crate::identity::{self, Known, Resolution};
use crate::lifecycle::{self, Action};
use crate::store::{FailedAttempt, NewEvent, StoreError, TokenRow, TransitionChanges};
use crate::token;

/// Longest string fact kept from a report; longer ones are cut (on a character boundary).
const MAX_FACT: usize = 4096;
/// Most NICs / disks / DIMMs kept from a report.
const MAX_ITEMS: usize = 256;
/// Seconds an available machine's agent waits between polls.
const WAIT_SECS: u32 = 5;

/// Authenticates an agent call: the token and, if bound, its machine (which must still expect
/// an agent at the version the token was bound at).
async fn authenticate(
    st: &AppState,
    headers: &HeaderMap,
) -> Result<(TokenRow, Option<MachineView>), ApiFailure> {
    let raw = token::from_bearer(authorization(headers))
        .ok_or_else(|| ApiFailure::unauthorized("missing or malformed agent token"))?;
    let row = st
        .store
        .token(&token::hash(raw))
        .await?
        .ok_or_else(|| ApiFailure::unauthorized("unknown agent token"))?;
    if row.expires_at_ms <= (st.clock)() {
        return Err(ApiFailure::unauthorized("expired agent token"));
    }
    let revoked = || {
        ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "token_revoked",
            "this machine's state changed since it booted; reboot to get a fresh boot script",
        )
    };
    if row.revoked {
        return Err(revoked());
    }
    let machine = match &row.machine_id {
        None => None,
        Some(id) => {
            let m = st
                .store
                .machine(id)
                .await?
                .ok_or_else(|| ApiFailure::unauthorized("unknown agent token"))?;
            if Some(m.version) != row.machine_version || !lifecycle::expects_agent(m.state) {
                return Err(revoked());
            }
            Some(m)
        }
    };
    Ok((row, machine))
}

fn cut(s: &mut Option<String>) {
    if let Some(v) = s {
        let t = v.trim();
        if t.is_empty() {
            *s = None;
            return;
        }
        let mut end = t.len().min(MAX_FACT);
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        *v = t[..end].to_owned();
    }
}

/// Bounds every string and list of a report before it is stored.
fn sanitize(mut r: HardwareReport) -> HardwareReport {
    let d = &mut r.dmi;
    for f in [
        &mut d.system_serial,
        &mut d.system_uuid,
        &mut d.chassis_serial,
        &mut d.board_serial,
        &mut d.vendor,
        &mut d.product,
        &mut d.bios_version,
    ] {
        cut(f);
    }
    r.nics.truncate(MAX_ITEMS);
    for n in &mut r.nics {
        n.name.truncate(64);
        cut(&mut n.driver);
        cut(&mut n.pci_address);
    }
    r.disks.truncate(MAX_ITEMS);
    for dk in &mut r.disks {
        dk.name.truncate(64);
        for f in [
            &mut dk.model,
            &mut dk.serial,
            &mut dk.wwn,
            &mut dk.transport,
        ] {
            cut(f);
        }
    }
    cut(&mut r.cpu.model);
    r.memory.dimms.truncate(MAX_ITEMS);
    for dm in &mut r.memory.dimms {
        for f in [
            &mut dm.locator,
            &mut dm.kind,
            &mut dm.manufacturer,
            &mut dm.serial,
        ] {
            cut(f);
        }
    }
    cut(&mut r.agent_version);
    r
}

fn new_machine_id() -> String {
    format!("m-{}", &token::generate()[..16])
}

/// `POST /api/v1/agent/register`.
pub(super) async fn register(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiFailure> {
    let (tok, bound) = authenticate(&st, &headers).await?;
    let req: RegisterRequest = parse_json(body)?;
    let report = sanitize(req.hardware);
    if !report.nics.iter().any(|n| n.mac == tok.mac) {
        return Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "mac_mismatch",
            format!("the report lists no NIC with the boot MAC {}", tok.mac),
        ));
    }
    let ident = identity::identify(&report, Some(tok.mac))
        .map_err(|e| ApiFailure::bad_request("no_identity", e.to_string()))?;
    let macs = report.macs();
    // Optimistic: read, decide, write with a version/uniqueness check; retry if a racing
    // registration or transition moved the record under us.
    for _ in 0..8 {
        let by_key = st.store.machine_by_identity(&ident.key).await?;
        let owners = st.store.mac_owners(&macs).await?;
        let owner_refs: Vec<&str> = owners.iter().map(String::as_str).collect();
        let resolution = identity::resolve(
            by_key.as_ref().map(|m| Known {
                id: &m.id,
                macs: &m.macs,
            }),
            &owner_refs,
            &macs,
        );
        if let Some(b) = &bound
            && resolution != Resolution::Update(b.id.clone())
        {
            tracing::warn!(token_mac = %tok.mac, bound = %b.id, identity = %ident.key,
                "agent token used by a different machine; refused");
            return Err(ApiFailure::new(
                StatusCode::FORBIDDEN,
                "wrong_machine",
                "this token was issued to another machine",
            ));
        }
        let now = (st.clock)();
        let hardware = Some(report.clone());
        let (state, id, created) = match resolution {
            Resolution::Update(id) => {
                let Some(m) = by_key else { continue };
                let event = NewEvent {
                    machine_id: Some(id.clone()),
                    mac: Some(tok.mac),
                    at_ms: now,
                    actor: "agent",
                    kind: "register",
                    from_state: Some(m.state),
                    to_state: Some(m.state),
                    reason: Some("re-registered; facts refreshed".into()),
                    detail: None,
                };
                let ok = st
                    .store
                    .update_registration(
                        &id,
                        m.version,
                        report.dmi.system_serial.as_deref(),
                        report.dmi.system_uuid.as_deref(),
                        &macs,
                        &report,
                        Some(&tok.token_hash),
                        &event,
                    )
                    .await?;
                if !ok {
                    continue;
                }
                (m.state, id, false)
            }
            Resolution::Create | Resolution::Conflict { .. } => {
                let (state, conflict_with, reason) = match &resolution {
                    Resolution::Conflict { with } => (
                        MachineState::Conflict,
                        Some(with.clone()),
                        Some(format!(
                            "identity {} or its MACs collide with machine {with}",
                            ident.key
                        )),
                    ),
                    _ => (MachineState::Available, None, Some("registered".to_owned())),
                };
                let id = new_machine_id();
                let m = MachineView {
                    id: id.clone(),
                    identity_key: ident.key.clone(),
                    identity_kind: ident.kind,
                    serial: report.dmi.system_serial.clone(),
                    system_uuid: report.dmi.system_uuid.clone(),
                    serial_untrusted: ident.serial_untrusted,
                    state,
                    version: 1,
                    macs: macs.clone(),
                    hostname: None,
                    role: None,
                    snapshot: None,
                    reason: reason.clone(),
                    conflict_with,
                    hardware,
                    attempts: 0,
                    next_attempt_at_ms: None,
                    keep_disks: Vec::new(),
                    progress: None,
                    created_at_ms: now,
                    updated_at_ms: now,
                };
                let event = NewEvent {
                    machine_id: Some(id.clone()),
                    mac: Some(tok.mac),
                    at_ms: now,
                    actor: "agent",
                    kind: "register",
                    from_state: None,
                    to_state: Some(state),
                    reason,
                    detail: Some(serde_json::json!({
                        "identity_key": ident.key,
                        "identity_kind": ident.kind,
                        "serial_untrusted": ident.serial_untrusted,
                    })),
                };
                match st
                    .store
                    .insert_machine(&m, Some(&tok.token_hash), &event)
                    .await
                {
                    Ok(()) => {}
                    Err(StoreError::Duplicate) => continue,
                    Err(e) => return Err(e.into()),
                }
                if state == MachineState::Conflict {
                    tracing::warn!(machine = %id, identity = %ident.key, "identity conflict");
                }
                (state, id, true)
            }
        };
        if let Ok(mut known) = st.known_macs.write() {
            known.extend(macs.iter().copied());
        }
        tracing::info!(machine = %id, identity = %ident.key, %state, created, "registered");
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return Ok((
            status,
            Json(RegisterResponse {
                machine_id: id,
                identity_key: ident.key,
                identity_kind: ident.kind,
                state,
                created,
            }),
        ));
    }
    Err(ApiFailure::conflict(
        "version_conflict",
        "the machine changed repeatedly during registration; retry",
    ))
}

fn require_bound(m: Option<MachineView>) -> Result<MachineView, ApiFailure> {
    m.ok_or_else(|| ApiFailure::conflict("not_registered", "register before asking for orders"))
}

/// `GET /api/v1/agent/orders`. After a failed attempt the order is withheld (`wait`) until
/// its backoff has passed.
pub(super) async fn orders(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Order>, ApiFailure> {
    let (_, m) = authenticate(&st, &headers).await?;
    let m = require_bound(m)?;
    let backoff = match m.state {
        MachineState::Installing | MachineState::Recycling => {
            lifecycle::retry_wait_secs(m.next_attempt_at_ms, (st.clock)())
        }
        _ => None,
    };
    if let Some(retry_after_secs) = backoff {
        return Ok(Json(Order::Wait { retry_after_secs }));
    }
    let order = match m.state {
        MachineState::Installing => match &m.snapshot {
            Some(s) => Order::Install {
                snapshot: s.clone(),
                url: format!("/assets/snapshots/{s}/"),
            },
            None => Order::Wait {
                retry_after_secs: WAIT_SECS,
            },
        },
        MachineState::Recycling => Order::Recycle {
            keep_disks: m.keep_disks.clone(),
        },
        _ => Order::Wait {
            retry_after_secs: WAIT_SECS,
        },
    };
    Ok(Json(order))
}

fn bounded(s: Option<String>, what: &str) -> Result<Option<String>, ApiFailure> {
    match s {
        Some(v) if v.len() > MAX_FACT => Err(ApiFailure::bad_request(
            "invalid_body",
            format!("{what} longer than {MAX_FACT} bytes"),
        )),
        other => Ok(other),
    }
}

/// `POST /api/v1/agent/progress`.
pub(super) async fn progress(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiFailure> {
    let (tok, m) = authenticate(&st, &headers).await?;
    let m = require_bound(m)?;
    let p: ProgressReport = parse_json(body)?;
    if p.order.len() > 64
        || p.stage.len() > 64
        || p.percent.is_some_and(|x| x > 100)
        || matches!((p.bytes_done, p.bytes_total), (Some(d), Some(t)) if d > t)
    {
        return Err(ApiFailure::bad_request(
            "invalid_body",
            "order/stage too long or percent > 100",
        ));
    }
    let message = bounded(p.message, "message")?;
    st.store
        .append_event(&NewEvent {
            machine_id: Some(m.id),
            mac: Some(tok.mac),
            at_ms: (st.clock)(),
            actor: "agent",
            kind: "progress",
            reason: message,
            detail: Some(serde_json::json!({
                "order": p.order, "stage": p.stage, "percent": p.percent,
                "bytes_done": p.bytes_done, "bytes_total": p.bytes_total,
            })),
            ..NewEvent::default()
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/agent/result`.
pub(super) async fn result(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let (tok, m) = authenticate(&st, &headers).await?;
    let m = require_bound(m)?;
    let r: ResultReport = parse_json(body)?;
    if r.order.len() > 64 || r.code.as_ref().is_some_and(|c| c.len() > 64) {
        return Err(ApiFailure::bad_request(
            "invalid_body",
            "order or code too long",
        ));
    }
    let message = bounded(r.message, "message")?;
    let now = (st.clock)();
    let action = match (r.order.as_str(), m.state) {
        ("install", MachineState::Installing) => Some(Action::InstallComplete),
        ("recycle", MachineState::Recycling) => Some(Action::RecycleComplete),
        ("install" | "recycle", _) => {
            return Err(ApiFailure::conflict(
                lifecycle::Refusal::NoSuchOrder.code(),
                format!("the machine is {}, not executing {}", m.state, r.order),
            ));
        }
        _ => None,
    };
    let event = NewEvent {
        machine_id: Some(m.id.clone()),
        mac: Some(tok.mac),
        at_ms: now,
        actor: "agent",
        kind: "result",
        from_state: Some(m.state),
        to_state: None,
        reason: r.code.clone().or(message.clone()),
        detail: Some(serde_json::json!({
            "order": r.order, "outcome": r.outcome, "code": r.code,
            "message": message, "detail": r.detail,
        })),
    };
    match (r.outcome, action) {
        (Outcome::Success, Some(action)) => {
            let to = lifecycle::transition(m.state, action)
                .map_err(|e| ApiFailure::conflict(e.code(), "transition refused"))?;
            let changes = TransitionChanges {
                snapshot: (action == Action::RecycleComplete).then_some(None),
                reason: Some(format!("{} by the agent", action.as_str())),
                ..TransitionChanges::default()
            };
            let event = NewEvent {
                kind: "transition",
                to_state: Some(to),
                ..event
            };
            if !st
                .store
                .apply_transition(&m.id, m.version, to, &changes, &event)
                .await?
            {
                return Err(ApiFailure::conflict(
                    "version_conflict",
                    "the machine changed while the result was reported",
                ));
            }
            Ok(Json(serde_json::json!({ "state": to })))
        }
        (Outcome::Failure, Some(_)) => {
            let code = r.code.as_deref().unwrap_or("unspecified");
            failed_attempt(&st, m, &r.order, code, event).await
        }
        _ => {
            st.store.append_event(&event).await?;
            Ok(Json(serde_json::json!({ "state": m.state })))
        }
    }
}

/// Counts a failed attempt of the machine's current order: retried after a backoff, or, at the
/// limit, the machine goes `broken` with the reason (see [`lifecycle::after_failure`]).
async fn failed_attempt(
    st: &AppState,
    mut m: MachineView,
    order: &str,
    code: &str,
    event: NewEvent,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let version = m.version;
    // A bounded optimistic loop: another report for this machine may land in between.
    for _ in 0..8 {
        let now = (st.clock)();
        let reply = |m: &MachineView, state: MachineState| {
            Json(serde_json::json!({
                "state": state,
                "attempts": m.attempts,
                "next_attempt_at_ms": m.next_attempt_at_ms,
            }))
        };
        if lifecycle::retry_wait_secs(m.next_attempt_at_ms, now).is_some() {
            // No order was handed out since the last failure: this is the same report
            // delivered again (the agent did not see our answer). Kept, not counted.
            let event = NewEvent {
                reason: Some(format!(
                    "{order} failed: {code} (repeated report while waiting; not counted)"
                )),
                ..event
            };
            st.store.append_event(&event).await?;
            return Ok(reply(&m, m.state));
        }
        let decision = lifecycle::after_failure(&st.retry, order, m.attempts, code, now);
        let detail = |attempts: u32, not_before: Option<i64>| {
            let mut d = event.detail.clone().unwrap_or_default();
            if let Some(o) = d.as_object_mut() {
                o.insert("attempts".into(), attempts.into());
                o.insert("max_attempts".into(), st.retry.max_attempts.into());
                o.insert("next_attempt_at_ms".into(), not_before.into());
            }
            Some(d)
        };
        match decision {
            lifecycle::AfterFailure::Retry {
                attempts,
                not_before_ms,
                reason,
            } => {
                let failed = FailedAttempt {
                    previous_attempts: m.attempts,
                    attempts,
                    not_before_ms,
                    reason: reason.clone(),
                };
                let ev = NewEvent {
                    at_ms: now,
                    reason: Some(reason),
                    detail: detail(attempts, Some(not_before_ms)),
                    ..event.clone()
                };
                if st
                    .store
                    .record_failed_attempt(&m.id, m.version, &failed, &ev)
                    .await?
                {
                    tracing::warn!(machine = %m.id, order, code, attempts,
                        max = st.retry.max_attempts, "order failed; will retry");
                    m.attempts = attempts;
                    m.next_attempt_at_ms = Some(not_before_ms);
                    return Ok(reply(&m, m.state));
                }
            }
            lifecycle::AfterFailure::Broken { attempts, reason } => {
                let to = lifecycle::transition(m.state, Action::MarkBroken)
                    .map_err(|e| ApiFailure::conflict(e.code(), "transition refused"))?;
                let changes = TransitionChanges {
                    reason: Some(reason.clone()),
                    attempts,
                    ..TransitionChanges::default()
                };
                let ev = NewEvent {
                    at_ms: now,
                    actor: "appliance",
                    kind: "transition",
                    to_state: Some(to),
                    reason: Some(reason),
                    detail: detail(attempts, None),
                    ..event.clone()
                };
                if st
                    .store
                    .apply_transition(&m.id, m.version, to, &changes, &ev)
                    .await?
                {
                    tracing::error!(machine = %m.id, order, code, attempts,
                        "order failed too often; machine is broken");
                    m.attempts = attempts;
                    m.next_attempt_at_ms = None;
                    return Ok(reply(&m, to));
                }
            }
        }
        // Lost a race: re-read. A state change revoked this agent's token meanwhile.
        m = st
            .store
            .machine(&m.id)
            .await?
            .ok_or_else(|| ApiFailure::unauthorized("unknown agent token"))?;
        if m.version != version {
            return Err(ApiFailure::new(
                StatusCode::UNAUTHORIZED,
                "token_revoked",
                "this machine's state changed since it booted; reboot to get a fresh boot script",
            ));
        }
    }
    Err(ApiFailure::conflict(
        "version_conflict",
        "the machine changed repeatedly while the result was reported",
    ))
}
