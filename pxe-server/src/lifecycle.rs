//! The machine lifecycle: which actions are allowed in which state, as one pure function.
//!
//! ```text
//!   (register) ──► available ──install──► installing ──install-complete──► in-use
//!                     ▲   │                  │  ▲                           │
//!   recycle-complete  │   └───────recycle────┼──┼───────────────recycle─────┘
//!                     │                      ▼  │
//!                  recycling ◄───recycle── (any of available/installing/in-use/broken)
//!   mark-broken: from every state but retired;   retire: from available/broken/conflict
//!   mark-in-use: from available/installing/broken (operator asserts the disk is good)
//!   conflict: only entered at registration; left by mark-broken or retire
//! ```
//!
//! A refusal carries a stable reason code that the API returns with HTTP 409.
//!
//! Failed orders are retried: after the agent reports a failed install or recycle, the order is
//! handed out again only after an exponential backoff ([`backoff_delay_ms`]); after
//! [`RetryPolicy::max_attempts`] failures the machine goes `broken` with the last reason
//! ([`after_failure`]). The attempt count belongs to the current order: a new operator order
//! or a completed one starts it over.

use pxe_api::MachineState;

/// Something that may change a machine's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Operator: write an OS snapshot.
    Install,
    /// Agent: the install finished and verified.
    InstallComplete,
    /// Operator: wipe the machine and return it to the pool.
    Recycle,
    /// Agent: the wipe finished and verified.
    RecycleComplete,
    /// Operator (or a failure): take the machine out of service.
    MarkBroken,
    /// Operator: the machine is in use as it is (its disk is good).
    MarkInUse,
    /// Operator: decommission.
    Retire,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 7] = [
        Action::Install,
        Action::InstallComplete,
        Action::Recycle,
        Action::RecycleComplete,
        Action::MarkBroken,
        Action::MarkInUse,
        Action::Retire,
    ];

    /// Name used in the history.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Install => "install",
            Action::InstallComplete => "install-complete",
            Action::Recycle => "recycle",
            Action::RecycleComplete => "recycle-complete",
            Action::MarkBroken => "mark-broken",
            Action::MarkInUse => "mark-in-use",
            Action::Retire => "retire",
        }
    }
}

/// Why an action is refused in a state. The code is part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The machine is already in the state the action leads to.
    AlreadyInState,
    /// The machine is retired; nothing but history remains.
    Retired,
    /// Its identity is in conflict; an operator must mark it broken or retire it first.
    InConflict,
    /// The action needs an `available` machine.
    NotAvailable,
    /// The agent reported completion of an order the machine is not executing.
    NoSuchOrder,
    /// In use: must be recycled before anything else.
    InUse,
    /// Busy with an order (installing or recycling): mark it broken or let the order finish.
    Busy,
}

impl Refusal {
    /// Stable reason code.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::AlreadyInState => "already_in_state",
            Refusal::Retired => "machine_retired",
            Refusal::InConflict => "machine_in_conflict",
            Refusal::NotAvailable => "machine_not_available",
            Refusal::NoSuchOrder => "no_such_order",
            Refusal::InUse => "machine_in_use",
            Refusal::Busy => "machine_busy",
        }
    }
}

/// The pure transition function: the state `action` leads to from `from`, or why not.
pub fn transition(from: MachineState, action: Action) -> Result<MachineState, Refusal> {
    use Action as A;
    use MachineState as S;
    use Refusal as R;
    match (from, action) {
        (S::Retired, _) => Err(R::Retired),

        (S::Available, A::Install) => Ok(S::Installing),
        (S::Installing, A::Install) => Err(R::AlreadyInState),
        (S::Conflict, A::Install) => Err(R::InConflict),
        (S::InUse, A::Install) => Err(R::InUse),
        (_, A::Install) => Err(R::NotAvailable),

        (S::Installing, A::InstallComplete) => Ok(S::InUse),
        (_, A::InstallComplete) => Err(R::NoSuchOrder),

        (S::Recycling, A::Recycle) => Err(R::AlreadyInState),
        (S::Conflict, A::Recycle) => Err(R::InConflict),
        (_, A::Recycle) => Ok(S::Recycling),

        (S::Recycling, A::RecycleComplete) => Ok(S::Available),
        (_, A::RecycleComplete) => Err(R::NoSuchOrder),

        (S::Broken, A::MarkBroken) => Err(R::AlreadyInState),
        (_, A::MarkBroken) => Ok(S::Broken),

        (S::InUse, A::MarkInUse) => Err(R::AlreadyInState),
        (S::Available | S::Installing | S::Broken, A::MarkInUse) => Ok(S::InUse),
        (S::Conflict, A::MarkInUse) => Err(R::InConflict),
        (S::Recycling, A::MarkInUse) => Err(R::Busy),

        (S::Available | S::Broken | S::Conflict, A::Retire) => Ok(S::Retired),
        (S::InUse, A::Retire) => Err(R::InUse),
        (S::Installing | S::Recycling, A::Retire) => Err(R::Busy),
    }
}

/// True when an operator must confirm `action` from `from` explicitly: recycling a machine
/// that is in use wipes a running system's disks.
pub fn needs_confirmation(from: MachineState, action: Action) -> bool {
    from == MachineState::InUse && action == Action::Recycle
}

/// True for the states in which the machine netboots the agent and the agent may call the API.
pub fn expects_agent(state: MachineState) -> bool {
    matches!(
        state,
        MachineState::Available | MachineState::Installing | MachineState::Recycling
    )
}

/// How failed install/recycle attempts are retried (from the server configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failure, in milliseconds.
    pub base_ms: u64,
    /// Longest delay, in milliseconds.
    pub cap_ms: u64,
    /// Failed attempts after which the machine goes `broken` (at least 1).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 30 s doubling up to 15 min; broken after 5 failed attempts.
    fn default() -> Self {
        RetryPolicy {
            base_ms: 30_000,
            cap_ms: 15 * 60_000,
            max_attempts: 5,
        }
    }
}

/// The delay before the next attempt after `failed` failed attempts (`failed` ≥ 1):
/// `base · 2^(failed−1)`, never above the cap (and 0 for `failed` = 0).
pub fn backoff_delay_ms(policy: &RetryPolicy, failed: u32) -> u64 {
    if failed == 0 {
        return 0;
    }
    let shift = (failed - 1).min(63);
    let factor = 1u64.checked_shl(shift).unwrap_or(u64::MAX);
    policy.base_ms.saturating_mul(factor).min(policy.cap_ms)
}

/// What follows a failed attempt of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    /// Hand the order out again, not before `not_before_ms`.
    Retry {
        /// Failed attempts so far, this one included.
        attempts: u32,
        /// Earliest time (Unix ms) of the next attempt.
        not_before_ms: i64,
        /// The machine's reason while it waits.
        reason: String,
    },
    /// Give up: the machine goes `broken` with `reason`.
    Broken {
        /// Failed attempts, this one included.
        attempts: u32,
        /// Why, e.g. `install failed 5 times: chunk_digest_mismatch`.
        reason: String,
    },
}

/// The decision after attempt number `previous + 1` of `order` (`install`, `recycle`) failed
/// with `code` at `now_ms`. Pure.
pub fn after_failure(
    policy: &RetryPolicy,
    order: &str,
    previous: u32,
    code: &str,
    now_ms: i64,
) -> AfterFailure {
    let attempts = previous.saturating_add(1);
    let max = policy.max_attempts.max(1);
    if attempts >= max {
        let reason = if attempts == 1 {
            format!("{order} failed once: {code}")
        } else {
            format!("{order} failed {attempts} times: {code}")
        };
        return AfterFailure::Broken { attempts, reason };
    }
    let delay = backoff_delay_ms(policy, attempts);
    AfterFailure::Retry {
        attempts,
        not_before_ms: now_ms.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX)),
        reason: format!("{order} failed: {code} (attempt {attempts} of {max}; retrying)"),
    }
}

/// While a failed order waits for its next attempt: the seconds the agent should wait (at
/// least 1), or `None` when the order may be handed out now. Pure.
pub fn retry_wait_secs(not_before_ms: Option<i64>, now_ms: i64) -> Option<u32> {
    let left = not_before_ms?.saturating_sub(now_ms);
    if left <= 0 {
        return None;
    }
    let secs = left.saturating_add(999) / 1000;
    Some(u32::try_from(secs).unwrap_or(u32::MAX).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use MachineState as S;

    #[test]
    fn only_recycling_a_machine_in_use_needs_confirmation() {
        for s in MachineState::ALL {
            for a in [
                A::Install,
                A::InstallComplete,
                A::Recycle,
                A::RecycleComplete,
                A::MarkBroken,
                A::MarkInUse,
                A::Retire,
            ] {
                assert_eq!(
                    needs_confirmation(s, a),
                    s == S::InUse && a == A::Recycle,
                    "{s} {a:?}"
                );
            }
        }
    }

    /// Every (state, action) pair, with its expected outcome: the table is the specification.
    #[test]
    fn full_table() {
        let ok = |s| Ok::<_, &str>(s);
        let no = |c: &'static str| Err::<S, _>(c);
        #[rustfmt::skip]
        let table: &[(S, A, Result<S, &str>)] = &[
            (S::Available, A::Install, ok(S::Installing)),
            (S::Available, A::InstallComplete, no("no_such_order")),
            (S::Available, A::Recycle, ok(S::Recycling)),
            (S::Available, A::RecycleComplete, no("no_such_order")),
            (S::Available, A::MarkBroken, ok(S::Broken)),
            (S::Available, A::MarkInUse, ok(S::InUse)),
            (S::Available, A::Retire, ok(S::Retired)),

            (S::Installing, A::Install, no("already_in_state")),
            (S::Installing, A::InstallComplete, ok(S::InUse)),
            (S::Installing, A::Recycle, ok(S::Recycling)),
            (S::Installing, A::RecycleComplete, no("no_such_order")),
            (S::Installing, A::MarkBroken, ok(S::Broken)),
            (S::Installing, A::MarkInUse, ok(S::InUse)),
            (S::Installing, A::Retire, no("machine_busy")),

            (S::InUse, A::Install, no("machine_in_use")),
            (S::InUse, A::InstallComplete, no("no_such_order")),
            (S::InUse, A::Recycle, ok(S::Recycling)),
            (S::InUse, A::RecycleComplete, no("no_such_order")),
            (S::InUse, A::MarkBroken, ok(S::Broken)),
            (S::InUse, A::MarkInUse, no("already_in_state")),
            (S::InUse, A::Retire, no("machine_in_use")),

            (S::Recycling, A::Install, no("machine_not_available")),
            (S::Recycling, A::InstallComplete, no("no_such_order")),
            (S::Recycling, A::Recycle, no("already_in_state")),
            (S::Recycling, A::RecycleComplete, ok(S::Available)),
            (S::Recycling, A::MarkBroken, ok(S::Broken)),
            (S::Recycling, A::MarkInUse, no("machine_busy")),
            (S::Recycling, A::Retire, no("machine_busy")),

            (S::Broken, A::Install, no("machine_not_available")),
            (S::Broken, A::InstallComplete, no("no_such_order")),
            (S::Broken, A::Recycle, ok(S::Recycling)),
            (S::Broken, A::RecycleComplete, no("no_such_order")),
            (S::Broken, A::MarkBroken, no("already_in_state")),
            (S::Broken, A::MarkInUse, ok(S::InUse)),
            (S::Broken, A::Retire, ok(S::Retired)),

            (S::Conflict, A::Install, no("machine_in_conflict")),
            (S::Conflict, A::InstallComplete, no("no_such_order")),
            (S::Conflict, A::Recycle, no("machine_in_conflict")),
            (S::Conflict, A::RecycleComplete, no("no_such_order")),
            (S::Conflict, A::MarkBroken, ok(S::Broken)),
            (S::Conflict, A::MarkInUse, no("machine_in_conflict")),
            (S::Conflict, A::Retire, ok(S::Retired)),

            (S::Retired, A::Install, no("machine_retired")),
            (S::Retired, A::InstallComplete, no("machine_retired")),
            (S::Retired, A::Recycle, no("machine_retired")),
            (S::Retired, A::RecycleComplete, no("machine_retired")),
            (S::Retired, A::MarkBroken, no("machine_retired")),
            (S::Retired, A::MarkInUse, no("machine_retired")),
            (S::Retired, A::Retire, no("machine_retired")),
        ];
        assert_eq!(
            table.len(),
            S::ALL.len() * A::ALL.len(),
            "table covers every pair"
        );
        for s in S::ALL {
            for a in A::ALL {
                let want = table
                    .iter()
                    .find(|(ts, ta, _)| *ts == s && *ta == a)
                    .map(|(_, _, w)| *w)
                    .unwrap_or_else(|| panic!("missing ({s}, {a:?}) in the table"));
                let got = transition(s, a).map_err(Refusal::code);
                assert_eq!(got, want, "({s}, {a:?})");
            }
        }
    }

    #[test]
    fn no_action_leads_into_conflict_and_none_leaves_retired() {
        for s in S::ALL {
            for a in A::ALL {
                if let Ok(to) = transition(s, a) {
                    assert_ne!(to, S::Conflict);
                    assert_ne!(s, S::Retired);
                }
            }
        }
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let p = RetryPolicy::default();
        #[rustfmt::skip]
        let table: &[(u32, u64)] = &[
            (0, 0),
            (1, 30_000), (2, 60_000), (3, 120_000), (4, 240_000), (5, 480_000),
            (6, 900_000), (7, 900_000), (40, 900_000), (64, 900_000), (u32::MAX, 900_000),
        ];
        for &(failed, want) in table {
            assert_eq!(
                backoff_delay_ms(&p, failed),
                want,
                "after {failed} failures"
            );
        }
        let huge = RetryPolicy {
            base_ms: u64::MAX / 2,
            cap_ms: u64::MAX,
            max_attempts: 3,
        };
        assert_eq!(
            backoff_delay_ms(&huge, 3),
            u64::MAX,
            "saturates, never wraps"
        );
        let zero = RetryPolicy {
            base_ms: 0,
            cap_ms: 0,
            max_attempts: 3,
        };
        assert_eq!(backoff_delay_ms(&zero, 2), 0);
    }

    #[test]
    fn failures_retry_with_backoff_then_break_the_machine() {
        let p = RetryPolicy::default();
        let now = 1_000_000;
        #[rustfmt::skip]
        let table: &[(&str, u32, AfterFailure)] = &[
            ("install", 0, AfterFailure::Retry {
                attempts: 1, not_before_ms: now + 30_000,
                reason: "install failed: chunk_digest_mismatch (attempt 1 of 5; retrying)".into() }),
            ("install", 1, AfterFailure::Retry {
                attempts: 2, not_before_ms: now + 60_000,
                reason: "install failed: chunk_digest_mismatch (attempt 2 of 5; retrying)".into() }),
            ("recycle", 3, AfterFailure::Retry {
                attempts: 4, not_before_ms: now + 240_000,
                reason: "recycle failed: chunk_digest_mismatch (attempt 4 of 5; retrying)".into() }),
            ("install", 4, AfterFailure::Broken {
                attempts: 5, reason: "install failed 5 times: chunk_digest_mismatch".into() }),
            // A count past the limit (the policy shrank meanwhile) also breaks.
            ("recycle", 9, AfterFailure::Broken {
                attempts: 10, reason: "recycle failed 10 times: chunk_digest_mismatch".into() }),
        ];
        for (order, previous, want) in table {
            let got = after_failure(&p, order, *previous, "chunk_digest_mismatch", now);
            assert_eq!(&got, want, "{order} after {previous}");
        }
        let once = RetryPolicy {
            max_attempts: 1,
            ..p
        };
        assert_eq!(
            after_failure(&once, "recycle", 0, "verify_nonzero", now),
            AfterFailure::Broken {
                attempts: 1,
                reason: "recycle failed once: verify_nonzero".into()
            }
        );
        // max_attempts 0 is treated as 1: a failure never retries forever.
        let none = RetryPolicy {
            max_attempts: 0,
            ..p
        };
        assert!(matches!(
            after_failure(&none, "install", 0, "x", now),
            AfterFailure::Broken { attempts: 1, .. }
        ));
        assert!(matches!(
            after_failure(&p, "install", u32::MAX, "x", now),
            AfterFailure::Broken {
                attempts: u32::MAX,
                ..
            }
        ));
        // The broken reason is what the lifecycle records with mark-broken.
        assert_eq!(transition(S::Installing, A::MarkBroken), Ok(S::Broken));
        assert_eq!(transition(S::Recycling, A::MarkBroken), Ok(S::Broken));
    }

    #[test]
    fn waiting_for_the_next_attempt_rounds_up_to_whole_seconds() {
        #[rustfmt::skip]
        let table: &[(Option<i64>, i64, Option<u32>)] = &[
            (None, 5_000, None),
            (Some(5_000), 5_000, None),
            (Some(4_000), 5_000, None),
            (Some(5_001), 5_000, Some(1)),
            (Some(6_000), 5_000, Some(1)),
            (Some(6_001), 5_000, Some(2)),
            (Some(905_000), 5_000, Some(900)),
            (Some(i64::MAX), i64::MIN, Some(u32::MAX)),
        ];
        for &(nb, now, want) in table {
            assert_eq!(retry_wait_secs(nb, now), want, "{nb:?} at {now}");
        }
    }
}
