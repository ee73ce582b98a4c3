//! Registration by identity: serial, placeholder fallback to UUID, conflicts, re-registration,
//! and the operator CLI's view of them.

use serde_json::{Value, json};

use crate::common::{Server, report};

#[test]
fn placeholder_serial_registers_under_uuid_and_is_flagged() {
    let s = Server::start();
    let (st, r, _) = s.boot_and_register("To be filled by O.E.M.", &["52:54:00:ee:00:01"]);
    assert_eq!(st, 201, "{r}");
    assert_eq!(r["identity_kind"], "uuid");
    assert_eq!(
        r["identity_key"],
        "uuid:5e1ec7ed-0000-4000-8000-525400ee0001"
    );
    let (_, m) = s.op_get(&format!(
        "/api/v1/machines/{}",
        r["machine_id"].as_str().unwrap()
    ));
    let m: Value = serde_json::from_str(&m).unwrap();
    assert_eq!(m["serial_untrusted"], true);
    assert_eq!(m["state"], "available");
    // A placeholder serial and a placeholder UUID: the boot MAC identifies it.
    let (_, tok) = s.boot("52:54:00:ee:00:02");
    let mut body = report("Default string", &["52:54:00:ee:00:02"]);
    body["hardware"]["dmi"]["system_uuid"] = json!("03000200-0400-0500-0006-000700080009");
    let (st, r) = s.agent_post(&tok.unwrap(), "/api/v1/agent/register", &body.to_string());
    assert_eq!(st, 201, "{r}");
    let r: Value = serde_json::from_str(&r).unwrap();
    assert_eq!(r["identity_key"], "mac:52:54:00:ee:00:02");
}

#[test]
fn same_serial_different_macs_is_a_conflict_not_a_merge() {
    let s = Server::start();
    let (st, first, _) =
        s.boot_and_register("DUP-SERIAL", &["52:54:00:ef:00:01", "52:54:00:ef:00:02"]);
    assert_eq!(st, 201);
    let first_id = first["machine_id"].as_str().unwrap().to_owned();
    let (st, second, _) = s.boot_and_register("DUP-SERIAL", &["52:54:00:ef:01:01"]);
    assert_eq!(st, 201, "{second}");
    assert_eq!(second["state"], "conflict");
    let (_, m) = s.op_get(&format!(
        "/api/v1/machines/{}",
        second["machine_id"].as_str().unwrap()
    ));
    let m: Value = serde_json::from_str(&m).unwrap();
    assert_eq!(m["conflict_with"], first_id.as_str());
    // The first machine is untouched: its MACs are its own.
    let (_, f) = s.op_get(&format!("/api/v1/machines/{first_id}"));
    let f: Value = serde_json::from_str(&f).unwrap();
    assert_eq!(f["macs"], json!(["52:54:00:ef:00:01", "52:54:00:ef:00:02"]));
    assert_eq!(f["state"], "available");
    // The conflicting machine netboots to a hold script, never the agent.
    let (script, tok) = s.boot("52:54:00:ef:01:01");
    assert!(tok.is_none() && script.contains("is conflict"), "{script}");
    // Its registration token no longer works (conflict expects no agent).
    let (_, t) = s.boot("52:54:00:ef:00:01");
    let (st, _) = s.agent_get(&t.unwrap(), "/api/v1/agent/orders");
    assert_eq!(st, 200, "the genuine machine keeps working");
}

#[test]
fn re_registration_refreshes_facts_and_keeps_state() {
    let s = Server::start();
    let (st, r, _) = s.boot_and_register("REREG-1", &["52:54:00:f0:00:01"]);
    assert_eq!(st, 201);
    let id = r["machine_id"].as_str().unwrap();
    // A NIC was added: same serial, overlapping MACs → same machine, facts refreshed.
    let (_, tok) = s.boot("52:54:00:f0:00:01");
    let body = report("REREG-1", &["52:54:00:f0:00:01", "52:54:00:f0:00:02"]).to_string();
    let (st, r2) = s.agent_post(&tok.unwrap(), "/api/v1/agent/register", &body);
    assert_eq!(st, 200, "{r2}");
    let r2: Value = serde_json::from_str(&r2).unwrap();
    assert_eq!(
        (r2["machine_id"].as_str(), r2["created"].as_bool()),
        (Some(id), Some(false))
    );
    let (_, m) = s.op_get(&format!("/api/v1/machines/{id}"));
    let m: Value = serde_json::from_str(&m).unwrap();
    assert_eq!(m["macs"], json!(["52:54:00:f0:00:01", "52:54:00:f0:00:02"]));
    assert_eq!(m["version"], 1, "facts do not bump the state version");
    // The new MAC now boots as this machine.
    let (script, _) = s.boot("52:54:00:f0:00:02");
    assert!(script.contains("(await orders)"), "{script}");
}

#[test]
fn history_shows_boot_decisions_and_transitions() {
    let s = Server::start();
    let (_, r, _) = s.boot_and_register("HIST-1", &["52:54:00:f1:00:01"]);
    let id = r["machine_id"].as_str().unwrap();
    assert_eq!(
        s.op_post(&format!("/api/v1/machines/{id}/in-use"), "{}").0,
        200
    );
    s.boot("52:54:00:f1:00:01");
    let (_, h) = s.op_get(&format!("/api/v1/machines/{id}/history"));
    let h: Vec<Value> = serde_json::from_str(&h).unwrap();
    let kinds: Vec<&str> = h.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["boot", "register", "transition", "boot"], "{h:?}");
    assert_eq!(h[0]["detail"]["decision"]["decision"], "agent");
    assert_eq!(h[3]["detail"]["decision"]["decision"], "local-disk");
    assert_eq!(h[2]["from_state"], "available");
    assert_eq!(h[2]["to_state"], "in-use");
}

#[test]
fn cli_lists_machines_as_json() {
    let s = Server::start();
    s.boot_and_register("CLI-1", &["52:54:00:f2:00:01"]);
    let (_, r, _) = s.boot_and_register("CLI-1", &["52:54:00:f2:01:01"]);
    assert_eq!(r["state"], "conflict");
    let run = |args: &[&str]| s.cli(args);
    let (ok, out, err) = run(&["list", "--json"]);
    assert!(ok, "{err}");
    let list: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(list.len(), 2);
    for m in &list {
        for key in [
            "serial",
            "identity_key",
            "state",
            "macs",
            "hostname",
            "role",
        ] {
            assert!(m.get(key).is_some(), "missing {key} in {m}");
        }
    }
    assert_eq!(list[1]["state"], "conflict");
    let (ok, out, _) = run(&["list", "--state", "conflict"]);
    assert!(
        ok && out.lines().count() == 2 && out.contains("conflict"),
        "{out}"
    );
    let (ok, out, err) = run(&["broken", "CLI-1", "--reason", "fan"]);
    assert!(ok && out.contains("is broken"), "{out}{err}");
    let (ok, out, _) = run(&["history", "52:54:00:f2:00:01"]);
    assert!(
        ok && out.contains("available -> broken") && out.contains("fan"),
        "{out}"
    );
    let (ok, _, err) = run(&["install", "CLI-1", "--snapshot", "deb12"]);
    assert!(!ok && err.contains("machine_not_available"), "{err}");
    let (ok, _, err) = run(&["show", "nope"]);
    assert!(!ok && err.contains("machine_not_found"), "{err}");
}

#[test]
fn full_dhcp_mode_serves_agent_tokens_only_to_the_lease_holder() {
    use pxe_server::config::{DhcpMode, FileConfig};
    use pxe_server::dhcp::{Lease, LeaseState, LeaseStore};
    let s = Server::start_with(FileConfig {
        dhcp_mode: Some(DhcpMode::Full),
        interface: Some("lo".into()),
        dhcp_range: Some("10.99.0.100-10.99.0.199".into()),
        ..FileConfig::default()
    });
    let lease = |mac: &str, ip: &str| Lease {
        mac: mac.parse().unwrap(),
        ip: ip.parse().unwrap(),
        state: LeaseState::Bound,
        expires_at_ms: i64::MAX,
        client_id: None,
        hostname: None,
        updated_at_ms: 0,
    };
    s.block_on(
        s.state
            .store
            .upsert(&lease("52:54:00:f3:00:01", "127.0.0.1")),
    )
    .unwrap();
    s.block_on(
        s.state
            .store
            .upsert(&lease("52:54:00:f3:00:02", "127.0.0.2")),
    )
    .unwrap();
    // This client (127.0.0.1) holds the first MAC's lease: it gets its script and token.
    let (st, script) = s.request("GET", "/boot.ipxe?mac=52:54:00:f3:00:01", None, None);
    assert_eq!(st, 200);
    assert!(script.contains("rackhand.token="), "{script}");
    // Another machine's MAC, or a MAC without a lease: 403, no token, nothing stored.
    for mac in ["52:54:00:f3:00:02", "52:54:00:f3:00:03"] {
        let before = s.digest();
        let (st, body) = s.request("GET", &format!("/boot.ipxe?mac={mac}"), None, None);
        assert_eq!(st, 403, "{body}");
        assert!(
            body.contains("lease_mismatch") && !body.contains("rackhand.token"),
            "{body}"
        );
        assert_eq!(before, s.digest());
    }
}
