//! The agent's conversation with the appliance: register, then poll for orders until one ends
//! the boot.
//!
//! The loop is a small state machine ([`Step`]) driven by [`run`]. Everything it touches comes in
//! through seams so tests can drive it: HTTP through [`Transport`] (the real one is
//! [`crate::client::HttpTransport`]), sleeping and randomness through [`Env`]. It never reboots
//! by itself: it returns a [`Finish`] and PID 1 acts on it.
//!
//! Error policy (the contract with `pxe-server`):
//! - `401` + `token_revoked`: the machine's state changed; finish with a reboot (the next
//!   netboot brings a fresh script and token).
//! - other `401`/`403` and unexpected `4xx`: back off and retry, at most
//!   [`Timing::max_rejections`] times in a row, then reboot.
//! - `5xx`, `408`, `429`, connection failures, timeouts and undecodable replies: back off with
//!   full jitter, forever; the appliance may be restarting.
//!
//! Before its first destructive write (an install's first byte, a recycle's first wipe) the
//! executor calls back to re-ask the appliance for orders ([`reconfirm`]): only when the same
//! order still stands does it go on; otherwise it writes nothing and reports
//! [`ORDER_WITHDRAWN`].

use std::cell::RefCell;

use std::time::Duration;

use pxe_api::agent::{
    Order, Outcome, ProgressReport, RegisterRequest, RegisterResponse, ResultReport,
};
use pxe_api::{ErrorBody, HardwareReport, MachineState, routes};

use crate::backoff::{Backoff, wait_delay};

/// HTTP method of an API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST` with a JSON body.
    Post,
}

/// One API call, relative to the appliance base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Route, e.g. [`routes::AGENT_ORDERS`].
    pub path: &'static str,
    /// JSON body for `POST`.
    pub body: Option<Vec<u8>>,
}

/// A reply: status and body (bounded by the transport).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Why no reply arrived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {detail}")]
pub struct TransportError {
    /// Broad class.
    pub kind: TransportErrorKind,
    /// Human detail.
    pub detail: String,
}

/// Broad class of transport failure. All of them are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportErrorKind {
    /// Connection refused, unreachable, reset.
    Connect,
    /// A timeout fired.
    Timeout,
    /// Anything else (protocol error, body too large).
    Other,
}

/// The HTTP seam: sends one request (with the bearer token) and returns the reply.
pub trait Transport {
    /// Performs the call. Non-2xx statuses are replies, not errors.
    fn send(&mut self, req: &Request) -> Result<Response, TransportError>;
}

/// Sleeping and randomness, injected so backoff and jitter are testable.
pub trait Env {
    /// Blocks for `d`.
    fn sleep(&mut self, d: Duration);
    /// A uniformly distributed random number (not for secrets).
    fn random(&mut self) -> u64;
}

/// Delays and limits of the loop.
#[derive(Debug, Clone)]
pub struct Timing {
    /// First backoff delay ceiling.
    pub backoff_base: Duration,
    /// Backoff ceiling cap.
    pub backoff_cap: Duration,
    /// One `retry_after_secs` unit (a second in production).
    pub wait_unit: Duration,
    /// Largest `retry_after_secs` honoured.
    pub wait_max_units: u32,
    /// Pause before rebooting a machine whose state the agent does not serve (e.g. `conflict`),
    /// so the console message can be read.
    pub state_reboot_delay: Duration,
    /// Consecutive rejections (`401`/`403`/other `4xx`) before giving up and rebooting.
    pub max_rejections: u32,
}

impl Default for Timing {
    /// The production settings: 1 s doubling to 30 s; reboot after 60 s on a conflict; 10
    /// rejections.
    fn default() -> Self {
        Timing {
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
            wait_unit: Duration::from_secs(1),
            wait_max_units: 600,
            state_reboot_delay: Duration::from_secs(60),
            max_rejections: 10,
        }
    }
}

/// How the loop ended. The caller (PID 1) carries it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// Reboot the machine.
    Reboot(RebootReason),
}

/// Why the agent wants a reboot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebootReason {
    /// The appliance sent a `reboot` order.
    Ordered,
    /// The token was revoked: the machine's state changed.
    TokenRevoked,
    /// Registration put the machine in a state the agent does not serve (e.g. `conflict`).
    StateNotServed(MachineState),
    /// An install order succeeded and its result was delivered: boot the installed OS.
    Installed {
        /// The snapshot written.
        snapshot: String,
    },
    /// The appliance kept refusing the agent.
    Rejected {
        /// Last status.
        status: u16,
        /// Last error code, when the body had one.
        code: Option<String>,
    },
}

/// How one API call failed, classified by what the loop should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// `401 token_revoked`.
    #[error("token revoked")]
    Revoked,
    /// Refused (`401`/`403`/other `4xx`); retried a bounded number of times.
    #[error("refused with HTTP {status} ({})", code.as_deref().unwrap_or("no code"))]
    Rejected {
        /// Status.
        status: u16,
        /// Error code from the body.
        code: Option<String>,
    },
    /// Appliance unavailable or misbehaving; retried forever.
    #[error("appliance unavailable: {0}")]
    Unavailable(String),
}

/// What `GET /orders` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderReply {
    /// An order this agent knows.
    Known(Order),
    /// A tag this agent does not know.
    Unknown {
        /// The tag (bounded for echoing back).
        tag: String,
    },
    /// A known tag whose fields did not decode.
    Malformed {
        /// The tag.
        tag: String,
        /// The decode error.
        detail: String,
    },
}

/// Longest order tag echoed back in a result report.
const MAX_TAG_LEN: usize = 64;

/// Decodes an orders reply: the tag first (so unknown orders are recognised, never ignored),
/// then the typed order. `Err` when there is no tag at all.
pub fn parse_order(body: &[u8]) -> Result<OrderReply, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("orders reply is not JSON: {e}"))?;
    let tag = v
        .get("order")
        .and_then(serde_json::Value::as_str)
        .ok_or("orders reply has no string \"order\" tag")?;
    let tag: String = tag.chars().take(MAX_TAG_LEN).collect();
    if !["wait", "install", "recycle", "reboot"].contains(&tag.as_str()) {
        return Ok(OrderReply::Unknown { tag });
    }
    match serde_json::from_value::<Order>(v) {
        Ok(o) => Ok(OrderReply::Known(o)),
        Err(e) => Ok(OrderReply::Malformed {
            tag,
            detail: e.to_string(),
        }),
    }
}

/// Classifies a non-2xx reply.
pub fn classify_status(status: u16, body: &[u8]) -> CallError {
    let code = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.error.code.chars().take(MAX_TAG_LEN).collect::<String>());
    match status {
        401 if code.as_deref() == Some("token_revoked") => CallError::Revoked,
        408 | 429 | 500..=599 => CallError::Unavailable(format!(
            "HTTP {status} ({})",
            code.as_deref().unwrap_or("no code")
        )),
        _ => CallError::Rejected { status, code },
    }
}

/// Typed API calls over a [`Transport`].
#[derive(Debug)]
pub struct Api<T> {
    transport: T,
}

impl<T: Transport> Api<T> {
    /// Wraps a transport.
    pub fn new(transport: T) -> Self {
        Api { transport }
    }

    fn call(&mut self, req: Request) -> Result<Vec<u8>, CallError> {
        let resp = self
            .transport
            .send(&req)
            .map_err(|e| CallError::Unavailable(e.to_string()))?;
        if (200..300).contains(&resp.status) {
            Ok(resp.body)
        } else {
            Err(classify_status(resp.status, &resp.body))
        }
    }

    fn post<B: serde::Serialize>(
        &mut self,
        path: &'static str,
        body: &B,
    ) -> Result<Vec<u8>, CallError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| CallError::Unavailable(format!("cannot encode request: {e}")))?;
        self.call(Request {
            method: Method::Post,
            path,
            body: Some(body),
        })
    }

    /// `POST /api/v1/agent/register`.
    pub fn register(&mut self, hardware: &HardwareReport) -> Result<RegisterResponse, CallError> {
        let body = self.post(
            routes::AGENT_REGISTER,
            &RegisterRequest {
                hardware: hardware.clone(),
            },
        )?;
        serde_json::from_slice(&body)
            .map_err(|e| CallError::Unavailable(format!("register reply did not decode: {e}")))
    }

    /// `GET /api/v1/agent/orders`.
    pub fn orders(&mut self) -> Result<OrderReply, CallError> {
        let body = self.call(Request {
            method: Method::Get,
            path: routes::AGENT_ORDERS,
            body: None,
        })?;
        parse_order(&body).map_err(CallError::Unavailable)
    }

    /// `POST /api/v1/agent/progress`.
    pub fn progress(&mut self, report: &ProgressReport) -> Result<(), CallError> {
        self.post(routes::AGENT_PROGRESS, report).map(drop)
    }

    /// `POST /api/v1/agent/result`.
    pub fn result(&mut self, report: &ResultReport) -> Result<(), CallError> {
        self.post(routes::AGENT_RESULT, report).map(drop)
    }
}

/// Reason code of an order abandoned before its first write because the appliance no longer
/// stands by it.
pub const ORDER_WITHDRAWN: &str = "order_withdrawn";

/// The executor's re-check before its first destructive write: `Ok` when the order still
/// stands, `Err(why)` when it does not (then nothing may be written).
pub type Confirm<'a> = dyn FnMut() -> Result<(), String> + 'a;

/// Carries out the orders that change the machine. The real one is
/// [`crate::install::LiveInstaller`]; tests script it.
pub trait Executor {
    /// Carries out `install {snapshot, url}` and returns the result to report. Progress
    /// reports passed to `progress` are forwarded to the appliance (best effort). `confirm`
    /// must be called right before the first byte is written; on `Err` nothing is written
    /// and the result is a failure with code [`ORDER_WITHDRAWN`].
    fn install(
        &mut self,
        snapshot: &str,
        url: &str,
        hardware: &HardwareReport,
        progress: &mut dyn FnMut(ProgressReport),
        confirm: &mut Confirm<'_>,
    ) -> ResultReport;

    /// Carries out `recycle`: wipe and verify every fixed disk of `hardware` except those
    /// whose serial or WWN is in `keep_disks`, with the records in `detail.wipes` and the
    /// untouched disks in `detail.skipped`. `confirm` as for installs, before the first wipe.
    /// The default ([`crate::recycle::guarded`]) wipes the live system as PID 1 and answers
    /// `recycle_disabled` anywhere else.
    fn recycle(
        &mut self,
        hardware: &HardwareReport,
        keep_disks: &[String],
        progress: &mut dyn FnMut(ProgressReport),
        confirm: &mut Confirm<'_>,
    ) -> ResultReport {
        crate::recycle::guarded(hardware, keep_disks, progress, confirm)
    }
}

/// Tries to re-ask for orders when the appliance does not answer, before giving up.
pub const CONFIRM_ATTEMPTS: u32 = 5;

/// Re-asks the appliance for orders and succeeds only if it still hands out `current`
/// (which also proves the boot's token is still valid). A revoked token, any other order, or
/// a refusal is a withdrawal; an unreachable appliance is asked [`CONFIRM_ATTEMPTS`] times
/// with backoff, then counts as a withdrawal too (nothing is written on a guess).
pub fn reconfirm<T: Transport>(
    api: &mut Api<T>,
    env: &mut dyn Env,
    timing: &Timing,
    current: &Order,
) -> Result<(), String> {
    let mut backoff = Backoff::new(timing.backoff_base, timing.backoff_cap);
    let mut last = String::new();
    for attempt in 1..=CONFIRM_ATTEMPTS {
        match api.orders() {
            Ok(OrderReply::Known(o)) if &o == current => return Ok(()),
            Ok(OrderReply::Known(o)) => {
                return Err(format!(
                    "the appliance now answers {:?} instead of this {} order",
                    o.name(),
                    current.name()
                ));
            }
            Ok(OrderReply::Unknown { tag } | OrderReply::Malformed { tag, .. }) => {
                return Err(format!("the appliance now answers {tag:?}"));
            }
            Err(CallError::Revoked) => {
                return Err(
                    "the appliance revoked this boot's token (the machine's state \
                            changed)"
                        .to_owned(),
                );
            }
            Err(e @ CallError::Rejected { .. }) => return Err(format!("orders {e}")),
            Err(CallError::Unavailable(why)) => {
                crate::warn!("re-checking the order: {why} ({attempt} of {CONFIRM_ATTEMPTS})");
                last = why;
                if attempt < CONFIRM_ATTEMPTS {
                    let d = backoff.next_delay(env.random());
                    env.sleep(d);
                }
            }
        }
    }
    Err(format!("the order could not be re-checked: {last}"))
}

/// Forwards one progress report to the appliance (best effort) and the console.
fn forward_progress<T: Transport>(api: &RefCell<&mut Api<T>>, what: &str, p: &ProgressReport) {
    crate::info!(
        "{what}: {}{}{}",
        p.stage,
        p.percent.map(|n| format!(" {n}%")).unwrap_or_default(),
        p.message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    );
    match api.try_borrow_mut() {
        Ok(mut api) => {
            if let Err(e) = api.progress(p) {
                crate::warn!("progress ({}) not delivered: {e}", p.stage);
            }
        }
        Err(_) => crate::warn!("progress ({}) not delivered: API busy", p.stage),
    }
}

/// [`reconfirm`] through the shared API handle of an executing order.
fn confirm_order<T: Transport>(
    api: &RefCell<&mut Api<T>>,
    env: &mut dyn Env,
    timing: &Timing,
    current: &Order,
) -> Result<(), String> {
    let result = match api.try_borrow_mut() {
        Ok(mut api) => reconfirm(&mut api, env, timing, current),
        Err(_) => Err("the order could not be re-checked: API busy".to_owned()),
    };
    match &result {
        Ok(()) => crate::info!(
            "{}: the appliance still stands by the order",
            current.name()
        ),
        Err(why) => crate::warn!("{}: order withdrawn: {why}", current.name()),
    }
    result
}

/// What follows a delivered result.
#[derive(Debug, Clone, PartialEq)]
enum Then {
    /// Poll again (after the order backoff).
    Poll,
    /// End the boot.
    Finish(Finish),
}

/// Where the loop is.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// Send the hardware report.
    Register,
    /// Ask for orders.
    Poll,
    /// Deliver a result (retried until the appliance has it), then go on.
    Report(ResultReport, Then),
}

/// Whether the loop may carry on after an error.
enum Verdict {
    Retry,
    Finish(Finish),
}

/// Error bookkeeping shared by every step.
struct Retry {
    backoff: Backoff,
    rejections: u32,
    last_rejection: Option<(u16, Option<String>)>,
}

impl Retry {
    fn success(&mut self) {
        self.backoff.reset();
        self.rejections = 0;
        self.last_rejection = None;
    }

    /// Decides after a failed call and sleeps the backoff delay when the loop continues.
    fn failed(
        &mut self,
        what: &str,
        err: CallError,
        env: &mut dyn Env,
        timing: &Timing,
    ) -> Verdict {
        match err {
            CallError::Revoked => {
                crate::warn!(
                    "{what}: the appliance revoked this boot's token (machine state changed); rebooting"
                );
                return Verdict::Finish(Finish::Reboot(RebootReason::TokenRevoked));
            }
            CallError::Rejected { status, code } => {
                self.rejections = self.rejections.saturating_add(1);
                crate::warn!(
                    "{what}: refused with HTTP {status} ({}), {} of {} tries",
                    code.as_deref().unwrap_or("no code"),
                    self.rejections,
                    timing.max_rejections
                );
                if self.rejections >= timing.max_rejections {
                    crate::error!("{what}: the appliance keeps refusing this agent; rebooting");
                    return Verdict::Finish(Finish::Reboot(RebootReason::Rejected {
                        status,
                        code,
                    }));
                }
                self.last_rejection = Some((status, code));
            }
            CallError::Unavailable(why) => {
                crate::warn!("{what}: {why}");
            }
        }
        let d = self.backoff.next_delay(env.random());
        crate::debug!("{what}: retrying in {} ms", d.as_millis());
        env.sleep(d);
        Verdict::Retry
    }
}

/// States the agent serves after registering; anything else is shown and rebooted.
fn served(state: MachineState) -> bool {
    matches!(
        state,
        MachineState::Available | MachineState::Installing | MachineState::Recycling
    )
}

fn unsupported(order: &str, code: &str, message: String) -> ResultReport {
    ResultReport {
        order: order.to_owned(),
        outcome: Outcome::Unsupported,
        code: Some(code.to_owned()),
        message: Some(message),
        detail: None,
    }
}

/// Runs the agent until an order or an error ends this boot.
pub fn run<T: Transport>(
    api: &mut Api<T>,
    env: &mut dyn Env,
    timing: &Timing,
    hardware: &HardwareReport,
    executor: &mut dyn Executor,
) -> Finish {
    let mut retry = Retry {
        backoff: Backoff::new(timing.backoff_base, timing.backoff_cap),
        rejections: 0,
        last_rejection: None,
    };
    // Consecutive orders this agent cannot carry out: polled again with growing delays so an
    // appliance that insists does not get hammered.
    let mut order_backoff = Backoff::new(timing.backoff_base, timing.backoff_cap);
    let mut step = Step::Register;
    loop {
        let next = match &step {
            Step::Register => match api.register(hardware) {
                Ok(resp) => {
                    retry.success();
                    if let Some(f) = after_register(api, env, timing, &resp) {
                        return f;
                    }
                    Ok(Step::Poll)
                }
                Err(e) => Err(("register", e)),
            },
            Step::Poll => match api.orders() {
                Ok(reply) => {
                    retry.success();
                    match reply {
                        OrderReply::Known(Order::Wait { retry_after_secs }) => {
                            order_backoff.reset();
                            let d = wait_delay(
                                retry_after_secs,
                                timing.wait_unit,
                                timing.wait_max_units,
                                env.random(),
                            );
                            crate::debug!("order wait: polling again in {} ms", d.as_millis());
                            env.sleep(d);
                            Ok(Step::Poll)
                        }
                        OrderReply::Known(Order::Reboot) => {
                            crate::info!("order reboot");
                            return Finish::Reboot(RebootReason::Ordered);
                        }
                        OrderReply::Known(Order::Install { snapshot, url }) => {
                            crate::info!("order install: snapshot {snapshot} from {url}");
                            let current = Order::Install {
                                snapshot: snapshot.clone(),
                                url: url.clone(),
                            };
                            let shared = RefCell::new(&mut *api);
                            let report = executor.install(
                                &snapshot,
                                &url,
                                hardware,
                                &mut |p| forward_progress(&shared, "install", &p),
                                &mut || confirm_order(&shared, env, timing, &current),
                            );
                            let then = if report.outcome == Outcome::Success {
                                Then::Finish(Finish::Reboot(RebootReason::Installed { snapshot }))
                            } else {
                                Then::Poll
                            };
                            Ok(Step::Report(report, then))
                        }
                        OrderReply::Known(Order::Recycle { keep_disks }) => {
                            if keep_disks.is_empty() {
                                crate::info!("order recycle: wiping this machine's disks");
                            } else {
                                crate::info!(
                                    "order recycle: wiping this machine's disks except {}",
                                    keep_disks.join(", ").escape_debug()
                                );
                            }
                            let current = Order::Recycle {
                                keep_disks: keep_disks.clone(),
                            };
                            let shared = RefCell::new(&mut *api);
                            let report = executor.recycle(
                                hardware,
                                &keep_disks,
                                &mut |p| forward_progress(&shared, "recycle", &p),
                                &mut || confirm_order(&shared, env, timing, &current),
                            );
                            // Wiped and verified: reboot (the appliance now serves the
                            // machine as available). Failed: stay and keep polling.
                            let then = if report.outcome == Outcome::Success {
                                Then::Finish(Finish::Reboot(RebootReason::Ordered))
                            } else {
                                Then::Poll
                            };
                            Ok(Step::Report(report, then))
                        }
                        OrderReply::Unknown { tag } => {
                            crate::warn!(
                                "order {tag:?}: unknown to this agent; reporting unsupported"
                            );
                            Ok(Step::Report(
                                unsupported(
                                    &tag,
                                    "unknown_order",
                                    format!(
                                        "pxeimage {} does not know the order {tag:?}",
                                        env!("CARGO_PKG_VERSION")
                                    ),
                                ),
                                Then::Poll,
                            ))
                        }
                        OrderReply::Malformed { tag, detail } => {
                            crate::warn!("order {tag:?} did not decode: {detail}");
                            Ok(Step::Report(
                                unsupported(
                                    &tag,
                                    "malformed_order",
                                    format!("order did not decode: {detail}"),
                                ),
                                Then::Poll,
                            ))
                        }
                    }
                }
                Err(e) => Err(("orders", e)),
            },
            Step::Report(report, then) => match api.result(report) {
                Ok(()) => {
                    retry.success();
                    if let Then::Finish(f) = then {
                        crate::info!("result delivered; ending the boot");
                        return f.clone();
                    }
                    let d = order_backoff.next_delay(env.random());
                    crate::debug!("result delivered; polling again in {} ms", d.as_millis());
                    env.sleep(d);
                    Ok(Step::Poll)
                }
                Err(e) => Err(("result", e)),
            },
        };
        match next {
            Ok(s) => step = s,
            Err((what, e)) => match retry.failed(what, e, env, timing) {
                Verdict::Retry => {}
                Verdict::Finish(f) => return f,
            },
        }
    }
}

/// After a successful registration: report progress, or end the boot for a state the agent
/// does not serve.
fn after_register<T: Transport>(
    api: &mut Api<T>,
    env: &mut dyn Env,
    timing: &Timing,
    resp: &RegisterResponse,
) -> Option<Finish> {
    crate::info!(
        "registered as {} ({}), state {}{}",
        resp.machine_id,
        resp.identity_key,
        resp.state,
        if resp.created { ", new record" } else { "" }
    );
    if !served(resp.state) {
        let bar = "=".repeat(72);
        crate::error!("{bar}");
        crate::error!(
            "MACHINE STATE IS {}: the appliance will not provision this machine.",
            resp.state.as_str().to_uppercase()
        );
        crate::error!(
            "An operator must resolve it (machine {}, identity {}).",
            resp.machine_id,
            resp.identity_key
        );
        crate::error!(
            "Rebooting in {} s; the next netboot shows the appliance's message.",
            timing.state_reboot_delay.as_secs()
        );
        crate::error!("{bar}");
        env.sleep(timing.state_reboot_delay);
        return Some(Finish::Reboot(RebootReason::StateNotServed(resp.state)));
    }
    let progress = ProgressReport {
        order: "register".to_owned(),
        stage: "register".to_owned(),
        percent: None,
        message: Some(format!(
            "pxeimage {} registered; state {}",
            env!("CARGO_PKG_VERSION"),
            resp.state
        )),
        bytes_done: None,
        bytes_total: None,
    };
    // Progress is best effort, but a revoked token still ends the boot.
    match api.progress(&progress) {
        Ok(()) => None,
        Err(CallError::Revoked) => {
            crate::warn!("progress: token revoked; rebooting");
            Some(Finish::Reboot(RebootReason::TokenRevoked))
        }
        Err(e) => {
            crate::warn!("progress (register) not delivered: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// Scripted replies; records requests.
    struct Script {
        replies: VecDeque<Result<Response, TransportError>>,
        seen: Vec<Request>,
    }

    impl Transport for Script {
        fn send(&mut self, req: &Request) -> Result<Response, TransportError> {
            self.seen.push(req.clone());
            self.replies.pop_front().unwrap_or_else(|| {
                Ok(Response {
                    status: 401,
                    body: br#"{"error":{"code":"token_revoked","message":"script ended"}}"#
                        .to_vec(),
                })
            })
        }
    }

    /// Records sleeps; `random` returns the maximum so delays equal their ceilings.
    #[derive(Default)]
    struct Clock {
        slept: Vec<Duration>,
    }

    impl Env for Clock {
        fn sleep(&mut self, d: Duration) {
            self.slept.push(d);
        }
        fn random(&mut self) -> u64 {
            u64::MAX
        }
    }

    fn ok(status: u16, body: &str) -> Result<Response, TransportError> {
        Ok(Response {
            status,
            body: body.as_bytes().to_vec(),
        })
    }

    fn refused() -> Result<Response, TransportError> {
        Err(TransportError {
            kind: TransportErrorKind::Connect,
            detail: "connection refused".into(),
        })
    }

    const REGISTERED: &str = r#"{"machine_id":"m-1","identity_key":"serial:A","identity_kind":"serial","state":"available","created":true}"#;

    /// Scripted install outcomes; records the orders it was given. With `confirm`, it
    /// re-checks the order before "writing", as the live installer does, and counts writes.
    #[derive(Default)]
    struct Installs {
        outcomes: VecDeque<(Outcome, Option<&'static str>)>,
        given: Vec<(String, String)>,
        confirm: bool,
        writes: u32,
    }

    impl Executor for Installs {
        fn install(
            &mut self,
            snapshot: &str,
            url: &str,
            _hardware: &HardwareReport,
            progress: &mut dyn FnMut(ProgressReport),
            confirm: &mut Confirm<'_>,
        ) -> ResultReport {
            self.given.push((snapshot.to_owned(), url.to_owned()));
            if self.confirm
                && let Err(why) = confirm()
            {
                return ResultReport {
                    message: Some(why),
                    ..report("install", Outcome::Failure, Some(ORDER_WITHDRAWN))
                };
            }
            self.writes += 1;
            progress(stage("install", "write", 50));
            let (outcome, code) = self
                .outcomes
                .pop_front()
                .unwrap_or((Outcome::Failure, Some("script_ended")));
            report("install", outcome, code)
        }
    }

    /// A test executor's result: `order` ended with `outcome` and `code`.
    fn report(order: &str, outcome: Outcome, code: Option<&str>) -> ResultReport {
        ResultReport {
            order: order.into(),
            outcome,
            code: code.map(str::to_owned),
            message: None,
            detail: None,
        }
    }

    /// A test executor's one progress report.
    fn stage(order: &str, stage: &str, percent: u8) -> ProgressReport {
        ProgressReport {
            order: order.into(),
            stage: stage.into(),
            percent: Some(percent),
            message: None,
            bytes_done: None,
            bytes_total: None,
        }
    }

    fn run_script(
        replies: Vec<Result<Response, TransportError>>,
        timing: &Timing,
    ) -> (Finish, Vec<Request>, Vec<Duration>) {
        let (f, seen, slept, _) = run_installs(replies, timing, Installs::default());
        (f, seen, slept)
    }

    fn run_installs(
        replies: Vec<Result<Response, TransportError>>,
        timing: &Timing,
        mut installs: Installs,
    ) -> (Finish, Vec<Request>, Vec<Duration>, Installs) {
        let mut api = Api::new(Script {
            replies: replies.into(),
            seen: Vec::new(),
        });
        let mut clock = Clock::default();
        let f = run(
            &mut api,
            &mut clock,
            timing,
            &HardwareReport::default(),
            &mut installs,
        );
        (f, api.transport.seen, clock.slept, installs)
    }

    #[test]
    fn outage_backs_off_with_doubling_ceilings_then_registers() {
        let mut replies: Vec<_> = (0..7).map(|_| refused()).collect();
        replies.push(ok(503, r#"{"error":{"code":"unavailable","message":"x"}}"#));
        replies.push(ok(201, REGISTERED));
        replies.push(ok(200, "{}"));
        replies.push(ok(200, r#"{"order":"reboot"}"#));
        let (f, seen, slept) = run_script(replies, &Timing::default());
        assert_eq!(f, Finish::Reboot(RebootReason::Ordered));
        // u64::MAX % 1001 = 0xFFFF... mod 1001; compute what the scale gives for the ceiling
        let ceilings = [1u64, 2, 4, 8, 16, 30, 30, 30];
        let want: Vec<Duration> = ceilings
            .iter()
            .map(|c| crate::backoff::scale(Duration::from_secs(*c), u64::MAX, 0, 1000))
            .collect();
        assert_eq!(slept, want);
        assert_eq!(
            seen.iter()
                .filter(|r| r.path == routes::AGENT_REGISTER)
                .count(),
            9
        );
        assert_eq!(seen[9].path, routes::AGENT_PROGRESS);
        assert_eq!(seen[10].path, routes::AGENT_ORDERS);
    }

    #[test]
    fn rejections_are_bounded() {
        let timing = Timing {
            max_rejections: 3,
            ..Timing::default()
        };
        let forbidden = || ok(403, r#"{"error":{"code":"forbidden","message":"no"}}"#);
        let (f, seen, slept) = run_script(
            vec![forbidden(), forbidden(), forbidden(), ok(201, REGISTERED)],
            &timing,
        );
        assert_eq!(
            f,
            Finish::Reboot(RebootReason::Rejected {
                status: 403,
                code: Some("forbidden".into())
            })
        );
        assert_eq!(seen.len(), 3);
        assert_eq!(slept.len(), 2);
    }

    #[test]
    fn a_success_resets_the_rejection_count() {
        let timing = Timing {
            max_rejections: 2,
            ..Timing::default()
        };
        let unauthorized = || ok(401, r#"{"error":{"code":"unauthorized","message":"no"}}"#);
        let (f, _, _) = run_script(
            vec![
                unauthorized(),
                ok(201, REGISTERED),
                ok(200, "{}"),
                unauthorized(),
                ok(200, r#"{"order":"wait","retry_after_secs":5}"#),
                unauthorized(),
                ok(200, r#"{"order":"reboot"}"#),
            ],
            &timing,
        );
        assert_eq!(f, Finish::Reboot(RebootReason::Ordered));
    }

    #[test]
    fn conflict_is_shown_then_rebooted_after_the_delay() {
        let conflict = REGISTERED.replace("available", "conflict");
        let (f, seen, slept) = run_script(vec![ok(200, &conflict)], &Timing::default());
        assert_eq!(
            f,
            Finish::Reboot(RebootReason::StateNotServed(MachineState::Conflict))
        );
        assert_eq!(
            seen.len(),
            1,
            "no progress or polling for a conflicting machine"
        );
        assert_eq!(slept, vec![Duration::from_secs(60)]);
    }

    #[test]
    fn orders_are_classified_by_tag_first() {
        assert_eq!(
            parse_order(br#"{"order":"dance","tempo":3}"#),
            Ok(OrderReply::Unknown {
                tag: "dance".into()
            })
        );
        assert!(matches!(
            parse_order(br#"{"order":"wait"}"#),
            Ok(OrderReply::Malformed { ref tag, .. }) if tag == "wait"
        ));
        assert_eq!(
            parse_order(br#"{"order":"recycle"}"#),
            Ok(OrderReply::Known(Order::Recycle { keep_disks: vec![] }))
        );
        assert_eq!(
            parse_order(br#"{"order":"recycle","keep_disks":["S1"]}"#),
            Ok(OrderReply::Known(Order::Recycle {
                keep_disks: vec!["S1".into()]
            }))
        );
        assert!(parse_order(b"[1,2]").is_err());
        assert!(parse_order(br#"{"order":7}"#).is_err());
        assert!(parse_order(b"\xff\xfe").is_err());
        let long = format!(r#"{{"order":"{}"}}"#, "x".repeat(500));
        match parse_order(long.as_bytes()) {
            Ok(OrderReply::Unknown { tag }) => assert_eq!(tag.len(), MAX_TAG_LEN),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn statuses_are_classified() {
        let revoked = br#"{"error":{"code":"token_revoked","message":"m"}}"#;
        assert_eq!(classify_status(401, revoked), CallError::Revoked);
        assert!(matches!(
            classify_status(403, revoked),
            CallError::Rejected { status: 403, .. }
        ));
        assert!(matches!(
            classify_status(401, b"garbage"),
            CallError::Rejected { code: None, .. }
        ));
        for s in [408, 429, 500, 502, 503, 599] {
            assert!(
                matches!(classify_status(s, b""), CallError::Unavailable(_)),
                "{s}"
            );
        }
        assert!(matches!(
            classify_status(404, b""),
            CallError::Rejected { .. }
        ));
    }

    #[test]
    fn undecodable_replies_are_retried_not_fatal() {
        let (f, seen, slept) = run_script(
            vec![
                ok(200, "not json"),
                ok(201, REGISTERED),
                ok(200, "{}"),
                ok(200, r#"{"no_tag":true}"#),
                ok(200, r#"{"order":"reboot"}"#),
            ],
            &Timing::default(),
        );
        assert_eq!(f, Finish::Reboot(RebootReason::Ordered));
        assert_eq!(seen.len(), 5);
        assert_eq!(slept.len(), 2);
    }

    fn results(seen: &[Request]) -> Vec<ResultReport> {
        seen.iter()
            .filter(|r| r.path == routes::AGENT_RESULT)
            .map(|r| serde_json::from_slice(r.body.as_deref().unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn a_failed_install_is_reported_and_retried_a_success_reboots() {
        let install = r#"{"order":"install","snapshot":"s","url":"/assets/snapshots/s/"}"#;
        let installs = Installs {
            outcomes: [
                (Outcome::Failure, Some("chunk_digest_mismatch")),
                (Outcome::Success, None),
            ]
            .into(),
            ..Installs::default()
        };
        let (f, seen, slept, installs) = run_installs(
            vec![
                ok(201, REGISTERED.replace("available", "installing").as_str()),
                ok(200, "{}"),
                ok(200, install),
                ok(200, "{}"), // progress
                ok(200, "{}"), // failure result
                ok(200, install),
                ok(200, "{}"), // progress
                ok(503, ""),   // success result not delivered: sent again
                ok(200, "{}"),
            ],
            &Timing::default(),
            installs,
        );
        assert_eq!(
            f,
            Finish::Reboot(RebootReason::Installed {
                snapshot: "s".into()
            })
        );
        assert_eq!(installs.given.len(), 2);
        assert_eq!(installs.given[0].1, "/assets/snapshots/s/");
        let results = results(&seen);
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].outcome, Outcome::Failure);
        assert_eq!(results[0].code.as_deref(), Some("chunk_digest_mismatch"));
        assert_eq!(results[1].outcome, Outcome::Success);
        assert_eq!(results[1], results[2]);
        let progress: Vec<&Request> = seen
            .iter()
            .filter(|r| r.path == routes::AGENT_PROGRESS)
            .collect();
        assert_eq!(progress.len(), 3, "register + one per install");
        // After the failure: the order backoff before polling again; after the 503: the
        // retry backoff; no sleep after the delivered success.
        let secs = |c| crate::backoff::scale(Duration::from_secs(c), u64::MAX, 0, 1000);
        assert_eq!(slept, vec![secs(1), secs(1)]);
        assert_eq!(seen.last().map(|r| r.path), Some(routes::AGENT_RESULT));
    }

    #[test]
    fn unsupported_orders_are_reported_and_polled_with_growing_delays() {
        let (f, seen, slept) = run_script(
            vec![
                ok(201, REGISTERED),
                ok(200, "{}"),
                ok(200, r#"{"order":"dance"}"#),
                ok(503, ""),
                ok(200, "{}"),
                ok(200, r#"{"order":"recycle"}"#),
                ok(200, "{}"),
                ok(200, r#"{"order":"reboot"}"#),
            ],
            &Timing::default(),
        );
        assert_eq!(f, Finish::Reboot(RebootReason::Ordered));
        let results: Vec<ResultReport> = seen
            .iter()
            .filter(|r| r.path == routes::AGENT_RESULT)
            .map(|r| serde_json::from_slice(r.body.as_deref().unwrap()).unwrap())
            .collect();
        // the 503 made the agent re-send the first result
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].order, "dance");
        assert_eq!(results[0].code.as_deref(), Some("unknown_order"));
        assert_eq!(results[0], results[1]);
        assert!(
            results[..2]
                .iter()
                .all(|r| r.outcome == Outcome::Unsupported)
        );
        // recycle goes to the executor; the test executor uses the default, which refuses
        // outside PID 1 and is polled again like any failure.
        assert_eq!(results[2].order, "recycle");
        assert_eq!(results[2].code.as_deref(), Some("recycle_disabled"));
        assert_eq!(results[2].outcome, Outcome::Failure);
        // delays: order backoff 1 s, 503 backoff 1 s, then order backoff grows to 2 s
        let secs = |c| crate::backoff::scale(Duration::from_secs(c), u64::MAX, 0, 1000);
        assert_eq!(slept, vec![secs(1), secs(1), secs(2)]);
    }

    /// Scripted recycle outcomes; install orders are not expected. Records the kept disks of
    /// each order; with `confirm`, re-checks the order first and reports a withdrawal.
    #[derive(Default)]
    struct Recycles {
        outcomes: VecDeque<ResultReport>,
        calls: u32,
        keeps: Vec<Vec<String>>,
        confirm: bool,
    }

    impl Executor for Recycles {
        fn install(
            &mut self,
            _snapshot: &str,
            _url: &str,
            _hardware: &HardwareReport,
            _progress: &mut dyn FnMut(ProgressReport),
            _confirm: &mut Confirm<'_>,
        ) -> ResultReport {
            unsupported("install", "unexpected", String::new())
        }

        fn recycle(
            &mut self,
            _hardware: &HardwareReport,
            keep_disks: &[String],
            progress: &mut dyn FnMut(ProgressReport),
            confirm: &mut Confirm<'_>,
        ) -> ResultReport {
            self.keeps.push(keep_disks.to_vec());
            if self.confirm
                && let Err(why) = confirm()
            {
                return ResultReport {
                    message: Some(why),
                    ..report("recycle", Outcome::Failure, Some(ORDER_WITHDRAWN))
                };
            }
            self.calls += 1;
            progress(stage("recycle", "wipe", 40));
            self.outcomes
                .pop_front()
                .unwrap_or_else(|| unsupported("recycle", "script_ended", String::new()))
        }
    }

    #[test]
    fn a_failed_recycle_is_reported_with_its_records_and_polled_a_success_reboots() {
        let wipes = serde_json::json!({"wipes": [{"disk": "vda", "outcome": "failure"}]});
        let mut exec = Recycles {
            outcomes: [
                ResultReport {
                    order: "recycle".into(),
                    outcome: Outcome::Failure,
                    code: Some("verify_nonzero".into()),
                    message: None,
                    detail: Some(wipes.clone()),
                },
                ResultReport {
                    order: "recycle".into(),
                    outcome: Outcome::Success,
                    code: None,
                    message: None,
                    detail: Some(serde_json::json!({"wipes": []})),
                },
            ]
            .into(),
            ..Recycles::default()
        };
        let mut api = Api::new(Script {
            replies: vec![
                ok(201, REGISTERED.replace("available", "recycling").as_str()),
                ok(200, "{}"),
                ok(200, r#"{"order":"recycle"}"#),
                ok(200, "{}"), // progress
                ok(200, "{}"), // failure result
                ok(200, r#"{"order":"recycle"}"#),
                ok(200, "{}"), // progress
                ok(200, "{}"), // success result
            ]
            .into(),
            seen: Vec::new(),
        });
        let mut clock = Clock::default();
        let f = run(
            &mut api,
            &mut clock,
            &Timing::default(),
            &HardwareReport::default(),
            &mut exec,
        );
        assert_eq!(f, Finish::Reboot(RebootReason::Ordered));
        assert_eq!(exec.calls, 2);
        let results = results(&api.transport.seen);
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].code.as_deref(), Some("verify_nonzero"));
        assert_eq!(results[0].detail, Some(wipes));
        assert_eq!(results[1].outcome, Outcome::Success);
        // One order backoff after the failure, nothing after the delivered success.
        let secs = |c| crate::backoff::scale(Duration::from_secs(c), u64::MAX, 0, 1000);
        assert_eq!(clock.slept, vec![secs(1)]);
    }

    const INSTALL_S: &str = r#"{"order":"install","snapshot":"s","url":"/assets/snapshots/s/"}"#;

    fn paths(seen: &[Request]) -> Vec<&'static str> {
        seen.iter().map(|r| r.path).collect()
    }

    #[test]
    fn an_install_writes_only_after_the_appliance_confirms_the_same_order() {
        let installs = Installs {
            outcomes: [(Outcome::Success, None)].into(),
            confirm: true,
            ..Installs::default()
        };
        let (f, seen, _, installs) = run_installs(
            vec![
                ok(201, REGISTERED.replace("available", "installing").as_str()),
                ok(200, "{}"),
                ok(200, INSTALL_S),
                ok(200, INSTALL_S), // the re-check: the same order stands
                ok(200, "{}"),      // progress
                ok(200, "{}"),      // success result
            ],
            &Timing::default(),
            installs,
        );
        assert_eq!(
            f,
            Finish::Reboot(RebootReason::Installed {
                snapshot: "s".into()
            })
        );
        assert_eq!(installs.writes, 1);
        assert_eq!(
            paths(&seen),
            [
                routes::AGENT_REGISTER,
                routes::AGENT_PROGRESS,
                routes::AGENT_ORDERS,
                routes::AGENT_ORDERS,
                routes::AGENT_PROGRESS,
                routes::AGENT_RESULT
            ]
        );
    }

    #[test]
    fn a_withdrawn_install_writes_nothing_and_reports_order_withdrawn() {
        let other = r#"{"order":"install","snapshot":"t","url":"/assets/snapshots/t/"}"#;
        let revoked = r#"{"error":{"code":"token_revoked","message":"m"}}"#;
        for (recheck, why) in [
            (ok(401, revoked), "revoked"),
            (ok(200, other), "\"install\" instead"),
            (
                ok(200, r#"{"order":"wait","retry_after_secs":5}"#),
                "\"wait\"",
            ),
            (ok(200, r#"{"order":"dance"}"#), "\"dance\""),
            (
                ok(403, r#"{"error":{"code":"wrong_machine","message":"m"}}"#),
                "403",
            ),
        ] {
            let installs = Installs {
                outcomes: [(Outcome::Success, None)].into(),
                confirm: true,
                ..Installs::default()
            };
            let (f, seen, _, installs) = run_installs(
                vec![
                    ok(201, REGISTERED.replace("available", "installing").as_str()),
                    ok(200, "{}"),
                    ok(200, INSTALL_S),
                    recheck,
                    ok(401, revoked), // the result: the state changed, so reboot
                ],
                &Timing::default(),
                installs,
            );
            assert_eq!(installs.writes, 0, "{why}: nothing written");
            assert_eq!(f, Finish::Reboot(RebootReason::TokenRevoked), "{why}");
            let results = results(&seen);
            assert_eq!(results.len(), 1, "{why}");
            assert_eq!(results[0].outcome, Outcome::Failure);
            assert_eq!(results[0].code.as_deref(), Some(ORDER_WITHDRAWN));
            let msg = results[0].message.as_deref().unwrap_or("");
            assert!(msg.contains(why), "{why}: {msg}");
        }
    }

    #[test]
    fn an_unreachable_appliance_is_asked_a_bounded_number_of_times_then_nothing_is_written() {
        let installs = Installs {
            outcomes: [(Outcome::Success, None)].into(),
            confirm: true,
            ..Installs::default()
        };
        let mut replies = vec![
            ok(201, REGISTERED.replace("available", "installing").as_str()),
            ok(200, "{}"),
            ok(200, INSTALL_S),
        ];
        replies.extend((0..CONFIRM_ATTEMPTS).map(|_| refused()));
        let (f, seen, slept, installs) = run_installs(replies, &Timing::default(), installs);
        assert_eq!(installs.writes, 0);
        assert_eq!(f, Finish::Reboot(RebootReason::TokenRevoked));
        let orders = seen
            .iter()
            .filter(|r| r.path == routes::AGENT_ORDERS)
            .count();
        assert_eq!(orders, 1 + CONFIRM_ATTEMPTS as usize);
        let secs = |c| crate::backoff::scale(Duration::from_secs(c), u64::MAX, 0, 1000);
        assert_eq!(slept, vec![secs(1), secs(2), secs(4), secs(8)]);
        assert_eq!(
            results(&seen)[0].code.as_deref(),
            Some(ORDER_WITHDRAWN),
            "could not confirm: withdrawn"
        );
        // And a flaky but reachable appliance confirms after a retry.
        let installs = Installs {
            outcomes: [(Outcome::Success, None)].into(),
            confirm: true,
            ..Installs::default()
        };
        let (f, _, _, installs) = run_installs(
            vec![
                ok(201, REGISTERED.replace("available", "installing").as_str()),
                ok(200, "{}"),
                ok(200, INSTALL_S),
                ok(503, ""),
                ok(200, INSTALL_S),
                ok(200, "{}"),
                ok(200, "{}"),
            ],
            &Timing::default(),
            installs,
        );
        assert_eq!(installs.writes, 1);
        assert!(matches!(f, Finish::Reboot(RebootReason::Installed { .. })));
    }

    #[test]
    fn a_recycle_gets_its_kept_disks_and_a_changed_scope_is_a_withdrawal() {
        let keep = r#"{"order":"recycle","keep_disks":["SER-B","naa.5000"]}"#;
        let success = ResultReport {
            order: "recycle".into(),
            outcome: Outcome::Success,
            code: None,
            message: None,
            detail: None,
        };
        // The same scoped order re-confirmed: the wipe goes ahead with the kept disks.
        let mut exec = Recycles {
            outcomes: [success.clone()].into(),
            confirm: true,
            ..Recycles::default()
        };
        let mut api = Api::new(Script {
            replies: vec![
                ok(201, REGISTERED.replace("available", "recycling").as_str()),
                ok(200, "{}"),
                ok(200, keep),
                ok(200, keep),
                ok(200, "{}"), // progress
                ok(200, "{}"), // result
            ]
            .into(),
            seen: Vec::new(),
        });
        let mut clock = Clock::default();
        let hw = HardwareReport::default();
        let f = run(&mut api, &mut clock, &Timing::default(), &hw, &mut exec);
        assert_eq!(f, Finish::Reboot(RebootReason::Ordered));
        assert_eq!(exec.calls, 1);
        assert_eq!(
            exec.keeps,
            vec![vec!["SER-B".to_owned(), "naa.5000".to_owned()]]
        );
        // The appliance now answers a recycle without the scope: not the order the agent
        // holds, so nothing is wiped.
        let mut exec = Recycles {
            outcomes: [success].into(),
            confirm: true,
            ..Recycles::default()
        };
        let mut api = Api::new(Script {
            replies: vec![
                ok(201, REGISTERED.replace("available", "recycling").as_str()),
                ok(200, "{}"),
                ok(200, keep),
                ok(200, r#"{"order":"recycle"}"#),
            ]
            .into(),
            seen: Vec::new(),
        });
        let f = run(&mut api, &mut clock, &Timing::default(), &hw, &mut exec);
        assert_eq!(f, Finish::Reboot(RebootReason::TokenRevoked));
        assert_eq!(exec.calls, 0, "nothing wiped");
        let results = results(&api.transport.seen);
        assert_eq!(results[0].code.as_deref(), Some(ORDER_WITHDRAWN));
    }
}
