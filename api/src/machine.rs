//! Machines as the API shows them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{HardwareReport, Mac};

/// Lifecycle state of a machine. The allowed transitions live in `pxe-server`'s lifecycle
/// module; this is only the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MachineState {
    /// Registered and free for work. Netboots the agent, which waits for orders.
    Available,
    /// An OS snapshot is being written. Netboots the agent, which installs.
    Installing,
    /// Installed and owned by a user. Netboots to its local disk.
    InUse,
    /// Being wiped. Netboots the agent, which wipes and reports.
    Recycling,
    /// Taken out of service by an operator or a failure. Netboots to a console message.
    Broken,
    /// Its identity collides with another machine's; waits for an operator. Netboots to a
    /// console message, never to anything destructive.
    Conflict,
    /// Decommissioned. Netboots to a console message.
    Retired,
}

impl MachineState {
    /// Every state, in lifecycle order.
    pub const ALL: [MachineState; 7] = [
        MachineState::Available,
        MachineState::Installing,
        MachineState::InUse,
        MachineState::Recycling,
        MachineState::Broken,
        MachineState::Conflict,
        MachineState::Retired,
    ];

    /// The wire name, e.g. `in-use`.
    pub fn as_str(self) -> &'static str {
        match self {
            MachineState::Available => "available",
            MachineState::Installing => "installing",
            MachineState::InUse => "in-use",
            MachineState::Recycling => "recycling",
            MachineState::Broken => "broken",
            MachineState::Conflict => "conflict",
            MachineState::Retired => "retired",
        }
    }
}

impl fmt::Display for MachineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no machine state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown machine state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for MachineState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MachineState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// Which fact identifies a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityKind {
    /// The SMBIOS system serial (trusted: not a placeholder).
    Serial,
    /// The SMBIOS system UUID (the serial was a placeholder or missing).
    Uuid,
    /// The boot MAC (neither serial nor UUID could be trusted).
    Mac,
}

impl IdentityKind {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Serial => "serial",
            IdentityKind::Uuid => "uuid",
            IdentityKind::Mac => "mac",
        }
    }
}

/// A machine record as the operator API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineView {
    /// Stable appliance-assigned id (`m-` + 16 hex digits).
    pub id: String,
    /// `kind:value`, e.g. `serial:ABC123` or `uuid:5e1ec7ed-…`.
    pub identity_key: String,
    /// Which fact `identity_key` uses.
    pub identity_kind: IdentityKind,
    /// SMBIOS system serial as reported (may be a placeholder).
    pub serial: Option<String>,
    /// SMBIOS system UUID as reported.
    pub system_uuid: Option<String>,
    /// The reported serial is a known placeholder and was not trusted.
    pub serial_untrusted: bool,
    /// Lifecycle state.
    pub state: MachineState,
    /// Optimistic-concurrency version; bumps on every state change.
    pub version: i64,
    /// NIC MACs.
    pub macs: Vec<Mac>,
    /// Hostname, when assigned.
    pub hostname: Option<String>,
    /// Role, when assigned.
    pub role: Option<String>,
    /// OS snapshot assigned for install / installed.
    pub snapshot: Option<String>,
    /// Why the machine is in its current state.
    pub reason: Option<String>,
    /// For `conflict` machines: the id of the machine whose identity this one collides with.
    pub conflict_with: Option<String>,
    /// The last hardware report.
    pub hardware: Option<HardwareReport>,
    /// Failed attempts of the current install or recycle order (0 when none failed; reset
    /// when an operator issues a new order or the order completes).
    #[serde(default)]
    pub attempts: u32,
    /// After a failed attempt: the earliest time (Unix milliseconds) the order is handed out
    /// again; until then the agent is told to wait.
    #[serde(default)]
    pub next_attempt_at_ms: Option<i64>,
    /// Serials or WWNs of disks the current recycle order keeps (does not wipe).
    #[serde(default)]
    pub keep_disks: Vec<String>,
    /// How far the running install or wipe is, from the agent's progress reports (only in
    /// `GET /api/v1/machines/{id}`, and only while an order runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<OrderProgress>,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
    /// Last change, Unix milliseconds.
    pub updated_at_ms: i64,
}

/// The running order's progress, summarised from the agent's reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderProgress {
    /// `install` or `recycle`.
    pub order: String,
    /// The latest stage (`fetch-manifest`, `write`, `verify`, `wipe`, …).
    pub stage: String,
    /// Percent done, when known.
    #[serde(default)]
    pub percent: Option<u8>,
    /// Bytes done, when the stage moves bytes.
    #[serde(default)]
    pub bytes_done: Option<u64>,
    /// Bytes in all.
    #[serde(default)]
    pub bytes_total: Option<u64>,
    /// Bytes per second over the recent reports of this stage.
    #[serde(default)]
    pub rate_bytes_per_sec: Option<u64>,
    /// Seconds left at that rate.
    #[serde(default)]
    pub eta_secs: Option<u64>,
    /// When the latest report arrived (Unix milliseconds).
    pub updated_at_ms: i64,
}

/// One entry of a machine's append-only history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    /// Monotonic sequence number within the appliance.
    pub seq: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Who: `operator`, `agent`, `appliance`.
    pub actor: String,
    /// What: `transition`, `boot`, `register`, `progress`, `result`, `wipe`.
    pub kind: String,
    /// State before (transitions).
    pub from_state: Option<String>,
    /// State after (transitions).
    pub to_state: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Structured detail (JSON), e.g. a boot decision or a wipe record.
    pub detail: Option<serde_json::Value>,
}

/// `POST /api/v1/machines/{id}/install`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRequest {
    /// Snapshot name in the appliance's assets.
    pub snapshot: String,
    /// Optional expected version (optimistic concurrency): refused with 409 if stale.
    #[serde(default)]
    pub if_version: Option<i64>,
}

/// `POST /api/v1/machines/{id}/broken`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// Why.
    pub reason: String,
    /// Optional expected version.
    #[serde(default)]
    pub if_version: Option<i64>,
}

/// `POST /api/v1/machines/{id}/recycle`; may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecycleRequest {
    /// Serials or WWNs of disks the agent must not wipe (each must name a disk of the
    /// machine's last hardware report).
    #[serde(default)]
    pub keep_disks: Vec<String>,
    /// Required (true) to recycle a machine that is `in-use`: its disks hold a running
    /// system. Ignored otherwise.
    #[serde(default)]
    pub confirm: bool,
    /// Optional reason, recorded in the history.
    #[serde(default)]
    pub reason: Option<String>,
    /// Optional expected version.
    #[serde(default)]
    pub if_version: Option<i64>,
}

/// Body for actions without arguments (`in-use`, `retire`); may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// Optional reason, recorded in the history.
    #[serde(default)]
    pub reason: Option<String>,
    /// Optional expected version.
    #[serde(default)]
    pub if_version: Option<i64>,
}
