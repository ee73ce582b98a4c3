//! The one error shape every refusal uses: `{ "error": { "code": "...", "message": "..." } }`.
//!
//! `code` is stable (scripts match on it); `message` is for people and may change.

use serde::{Deserialize, Serialize};

/// Body of every non-2xx API reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ApiError,
}

/// A stable reason code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable, machine-matchable reason, e.g. `illegal_transition`, `unauthorized`.
    pub code: String,
    /// Human explanation.
    pub message: String,
}
