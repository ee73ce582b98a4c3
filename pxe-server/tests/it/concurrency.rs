//! 32 clients race transitions on one machine: exactly the acknowledged changes are in the
//! history, which is a valid lifecycle sequence, and the final state is its last state.

use std::sync::atomic::{AtomicUsize, Ordering};

use pxe_api::MachineState;
use pxe_api::machine::EventView;
use pxe_server::lifecycle::{self, Action};

use crate::common::Server;

#[test]
fn racing_transitions_lose_nothing() {
    let s = Server::start();
    let (st, r, _) = s.boot_and_register("RACE-1", &["52:54:00:cc:00:01"]);
    assert_eq!(st, 201);
    let id = r["machine_id"].as_str().unwrap().to_owned();
    let acked = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let actions: [(&str, &str); 4] = [
        ("install", r#"{"snapshot":"deb12"}"#),
        ("recycle", "{}"),
        ("broken", r#"{"reason":"race"}"#),
        ("in-use", "{}"),
    ];
    std::thread::scope(|scope| {
        for client in 0..32usize {
            let (s, id, acked, refused) = (&s, &id, &acked, &refused);
            scope.spawn(move || {
                for round in 0..8usize {
                    let (name, body) = actions[(client * 7 + round * 3) % actions.len()];
                    let (st, resp) = s.op_post(&format!("/api/v1/machines/{id}/{name}"), body);
                    match st {
                        200 => acked.fetch_add(1, Ordering::SeqCst),
                        409 => refused.fetch_add(1, Ordering::SeqCst),
                        other => panic!("{name}: unexpected {other}: {resp}"),
                    };
                }
            });
        }
    });
    let acked = acked.into_inner();
    assert_eq!(acked + refused.into_inner(), 32 * 8);
    assert!(acked > 0);
    let (_, h) = s.op_get(&format!("/api/v1/machines/{id}/history"));
    let events: Vec<EventView> = serde_json::from_str(&h).unwrap();
    let transitions: Vec<&EventView> = events.iter().filter(|e| e.kind == "transition").collect();
    assert_eq!(
        transitions.len(),
        acked,
        "every 2xx is one history entry, no more, no less"
    );
    let mut state = MachineState::Available;
    for e in &transitions {
        let from: MachineState = e.from_state.as_deref().unwrap().parse().unwrap();
        let to: MachineState = e.to_state.as_deref().unwrap().parse().unwrap();
        assert_eq!(from, state, "history is a chain: {e:?}");
        let action = match e.detail.as_ref().unwrap()["action"].as_str().unwrap() {
            "install" => Action::Install,
            "recycle" => Action::Recycle,
            "mark-broken" => Action::MarkBroken,
            "mark-in-use" => Action::MarkInUse,
            other => panic!("unexpected action {other}"),
        };
        assert_eq!(lifecycle::transition(from, action), Ok(to), "{e:?}");
        state = to;
    }
    let (_, m) = s.op_get(&format!("/api/v1/machines/{id}"));
    let m: pxe_api::MachineView = serde_json::from_str(&m).unwrap();
    assert_eq!(m.state, state);
    assert_eq!(
        m.version,
        1 + acked as i64,
        "one version per acknowledged change"
    );
}
