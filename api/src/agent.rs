//! The agent's side of the API: registration, orders, progress, results.
//!
//! Every agent call carries the per-boot token from the kernel command line in
//! `Authorization: Bearer <token>`. A `401` with code `token_revoked` means the machine's state
//! changed since this boot: the agent reboots, and the next netboot hands it a fresh script
//! (and token) for the new state.

use serde::{Deserialize, Serialize};

use crate::{HardwareReport, IdentityKind, MachineState};

/// Reply to `POST /api/v1/agent/register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The machine's appliance id.
    pub machine_id: String,
    /// `kind:value` identity.
    pub identity_key: String,
    /// Which fact identified the machine.
    pub identity_kind: IdentityKind,
    /// State after registration (`available`, or `conflict` for a duplicate identity).
    pub state: MachineState,
    /// True when this registration created the record.
    pub created: bool,
}

/// What the agent should do now. Reply to `GET /api/v1/agent/orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "order", rename_all = "kebab-case")]
pub enum Order {
    /// Nothing to do: ask again after the given delay.
    Wait {
        /// Suggested delay before the next poll.
        retry_after_secs: u32,
    },
    /// Write an OS snapshot to a disk.
    Install {
        /// Snapshot name.
        snapshot: String,
        /// URL of the snapshot, relative to the appliance base URL.
        url: String,
    },
    /// Wipe the machine's disks, except those the operator kept out of the order.
    Recycle {
        /// Serials or WWNs of disks the agent must not touch (compared trimmed and
        /// ASCII-case-insensitively). Empty (and absent on the wire) when every fixed disk is
        /// wiped, so the order reads `{"order":"recycle"}` as it always did.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        keep_disks: Vec<String>,
    },
    /// Reboot now (e.g. the state no longer needs the agent).
    Reboot,
}

impl Order {
    /// The order's name as on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Order::Wait { .. } => "wait",
            Order::Install { .. } => "install",
            Order::Recycle { .. } => "recycle",
            Order::Reboot => "reboot",
        }
    }
}

/// Longest disk identifier (serial or WWN) accepted in a recycle scope.
pub const MAX_DISK_ID_LEN: usize = 128;
/// Most disks one recycle order may keep.
pub const MAX_KEEP_DISKS: usize = 64;

/// True when `id` (a serial or WWN from an order's `keep_disks`) names the disk with `serial` /
/// `wwn`: trimmed, ASCII-case-insensitive, never matching an empty identifier.
pub fn disk_id_matches(id: &str, serial: Option<&str>, wwn: Option<&str>) -> bool {
    let id = id.trim();
    !id.is_empty()
        && [serial, wwn]
            .into_iter()
            .flatten()
            .any(|v| v.trim().eq_ignore_ascii_case(id))
}

/// `POST /api/v1/agent/register` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// What the machine is.
    pub hardware: HardwareReport,
}

/// `POST /api/v1/agent/progress` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressReport {
    /// Order this progress belongs to (`install`, `recycle`).
    pub order: String,
    /// Stage name, e.g. `select-disk`, `write`, `verify`, `wipe`.
    pub stage: String,
    /// Percent done, 0–100, when known.
    #[serde(default)]
    pub percent: Option<u8>,
    /// Free text.
    #[serde(default)]
    pub message: Option<String>,
    /// Bytes done so far (image bytes written, or bytes wiped), when the stage moves bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_done: Option<u64>,
    /// Bytes the stage moves in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
}

/// Outcome of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done and verified.
    Success,
    /// Failed; `code` says why.
    Failure,
    /// The agent does not know this order.
    Unsupported,
}

/// `POST /api/v1/agent/result` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultReport {
    /// Order name (`install`, `recycle`, or whatever the agent did not understand).
    pub order: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Stable reason code for failures, e.g. `chunk_digest_mismatch`.
    #[serde(default)]
    pub code: Option<String>,
    /// Human detail.
    #[serde(default)]
    pub message: Option<String>,
    /// Structured evidence (e.g. wipe records), stored with the history.
    #[serde(default)]
    pub detail: Option<serde_json::Value>,
}
