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

/// True for the states in which the machine netboots the agent and the agent may call the API.
pub fn expects_agent(state: MachineState) -> bool {
    matches!(
        state,
        MachineState::Available | MachineState::Installing | MachineState::Recycling
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use MachineState as S;

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
}
