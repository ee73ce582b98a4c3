//! Failed orders: a fake agent drives the real appliance over HTTP through failed installs and
//! recycles. Each failure is counted, the order is withheld (`wait`) until its backoff has
//! passed, and past the limit the machine goes `broken` with the reason. Also: an interrupted
//! install gets its order again, and a recycle order carries the disks it keeps.

use std::time::{Duration, Instant};

use pxe_server::config::FileConfig;
use serde_json::{Value, json};

use crate::common::{Server, code, report};

/// A report with two serial-numbered disks.
fn report_with_disks(serial: &str, mac: &str) -> Value {
    let mut r = report(serial, &[mac]);
    r["hardware"]["disks"] = json!([
        { "name": "vda", "size_bytes": 8589934592u64, "serial": "DISK-A" },
        { "name": "vdb", "size_bytes": 8589934592u64, "serial": "DISK-B",
          "wwn": "naa.5000c500a1b2c3d4" },
    ]);
    r
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// Netboots `mac` and registers the machine with two disks; returns (machine id, token).
fn register(s: &Server, serial: &str, mac: &str) -> (String, String) {
    let (_, tok) = s.boot(mac);
    let tok = tok.expect("discovery script carries a token");
    let (st, body) = s.agent_post(
        &tok,
        "/api/v1/agent/register",
        &report_with_disks(serial, mac).to_string(),
    );
    assert!(st == 200 || st == 201, "{st} {body}");
    (
        json_of(&body)["machine_id"].as_str().unwrap().to_owned(),
        tok,
    )
}

/// What the agent is told to do now.
fn order(s: &Server, tok: &str) -> Value {
    let (st, body) = s.agent_get(tok, "/api/v1/agent/orders");
    assert_eq!(st, 200, "{body}");
    json_of(&body)
}

fn machine(s: &Server, id: &str) -> Value {
    let (st, body) = s.op_get(&format!("/api/v1/machines/{id}"));
    assert_eq!(st, 200, "{body}");
    json_of(&body)
}

fn fail(s: &Server, tok: &str, order: &str, code: &str) -> Value {
    let (st, body) = s.agent_post(
        tok,
        "/api/v1/agent/result",
        &json!({ "order": order, "outcome": "failure", "code": code }).to_string(),
    );
    assert_eq!(st, 200, "{body}");
    json_of(&body)
}

/// Polls orders until the agent is handed something other than `wait`, bounded in time.
fn poll_past_backoff(s: &Server, tok: &str, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let o = order(s, tok);
        if o["order"] != "wait" {
            return o;
        }
        assert!(start.elapsed() < limit, "still told to wait: {o}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn history(s: &Server, id: &str) -> Vec<Value> {
    let (st, body) = s.op_get(&format!("/api/v1/machines/{id}/history"));
    assert_eq!(st, 200);
    serde_json::from_str(&body).unwrap()
}

#[test]
fn failed_install_waits_for_the_backoff_and_breaks_the_machine_at_the_limit() {
    let s = Server::start_with(FileConfig {
        retry_base_secs: Some(1),
        retry_cap_secs: Some(1),
        retry_max_attempts: Some(3),
        ..FileConfig::default()
    });
    let mac = "52:54:00:c1:00:01";
    let (id, _) = register(&s, "RETRY-1", mac);
    let (st, body) = s.op_post(
        &format!("/api/v1/machines/{id}/install"),
        r#"{"snapshot":"deb12"}"#,
    );
    assert_eq!(st, 200, "{body}");
    let (_, tok) = s.boot(mac);
    let tok = tok.unwrap();
    assert_eq!(order(&s, &tok)["order"], "install");

    for attempt in 1..=2u64 {
        let before = Instant::now();
        let r = fail(&s, &tok, "install", "chunk_digest_mismatch");
        assert_eq!(r["state"], "installing", "{r}");
        assert_eq!(r["attempts"], attempt, "{r}");
        // Withheld until the backoff has passed; the agent is told how long to wait.
        let o = order(&s, &tok);
        assert_eq!(o, json!({ "order": "wait", "retry_after_secs": 1 }));
        let m = machine(&s, &id);
        assert_eq!(m["attempts"], attempt);
        assert!(m["next_attempt_at_ms"].as_i64().is_some(), "{m}");
        assert_eq!(
            m["reason"],
            format!("install failed: chunk_digest_mismatch (attempt {attempt} of 3; retrying)")
        );
        // The same report delivered again while waiting is recorded, not counted.
        let again = fail(&s, &tok, "install", "chunk_digest_mismatch");
        assert_eq!(again["attempts"], attempt, "{again}");
        let o = poll_past_backoff(&s, &tok, Duration::from_secs(10));
        assert!(
            before.elapsed() >= Duration::from_millis(900),
            "handed out again after {:?}",
            before.elapsed()
        );
        assert_eq!(o["order"], "install");
        assert_eq!(o["snapshot"], "deb12");
    }
    let r = fail(&s, &tok, "install", "chunk_digest_mismatch");
    assert_eq!(r["state"], "broken", "{r}");
    assert_eq!(r["attempts"], 3);
    // Broken: the state change revoked the token, and the machine netboots no agent.
    let (st, body) = s.agent_get(&tok, "/api/v1/agent/orders");
    assert_eq!((st, code(&body).as_str()), (401, "token_revoked"));
    let (_, t) = s.boot(mac);
    assert!(t.is_none(), "a broken machine gets no agent token");
    let m = machine(&s, &id);
    assert_eq!(m["state"], "broken");
    assert_eq!(m["reason"], "install failed 3 times: chunk_digest_mismatch");
    assert_eq!(m["attempts"], 3);
    assert_eq!(m["next_attempt_at_ms"], Value::Null);
    let events = history(&s, &id);
    let counted: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "result" && e["detail"]["attempts"].is_u64())
        .collect();
    assert_eq!(counted.len(), 2, "two retried failures: {events:?}");
    let repeated = events
        .iter()
        .filter(|e| {
            e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not counted"))
        })
        .count();
    assert_eq!(repeated, 2);
    let last = events
        .iter()
        .rev()
        .find(|e| e["kind"] == "transition")
        .unwrap();
    assert_eq!(last["actor"], "appliance");
    assert_eq!(last["from_state"], "installing");
    assert_eq!(last["to_state"], "broken");
    assert_eq!(
        last["reason"],
        "install failed 3 times: chunk_digest_mismatch"
    );
    assert_eq!(last["detail"]["code"], "chunk_digest_mismatch");
    // A new operator order starts the count over.
    let (st, body) = s.op_post(&format!("/api/v1/machines/{id}/recycle"), "{}");
    assert_eq!(st, 200, "{body}");
    let m = json_of(&body);
    assert_eq!(
        (m["state"].as_str(), m["attempts"].as_u64()),
        (Some("recycling"), Some(0))
    );
    assert_eq!(m["next_attempt_at_ms"], Value::Null);
}

#[test]
fn failed_recycles_break_the_machine_and_a_success_resets_the_count() {
    let s = Server::start_with(FileConfig {
        retry_base_secs: Some(0),
        retry_cap_secs: Some(0),
        retry_max_attempts: Some(2),
        ..FileConfig::default()
    });
    let mac = "52:54:00:c1:00:02";
    let (id, _) = register(&s, "RETRY-2", mac);
    // Recycle: fail once, then succeed: the count starts over with the next order.
    assert_eq!(
        s.op_post(&format!("/api/v1/machines/{id}/recycle"), "{}").0,
        200
    );
    let (_, tok) = s.boot(mac);
    let tok = tok.unwrap();
    assert_eq!(order(&s, &tok), json!({ "order": "recycle" }));
    let r = fail(&s, &tok, "recycle", "verify_nonzero");
    assert_eq!(
        (r["state"].as_str(), r["attempts"].as_u64()),
        (Some("recycling"), Some(1))
    );
    // A zero backoff hands the order out again at once.
    assert_eq!(order(&s, &tok)["order"], "recycle");
    let (st, body) = s.agent_post(
        &tok,
        "/api/v1/agent/result",
        r#"{"order":"recycle","outcome":"success"}"#,
    );
    assert_eq!(st, 200, "{body}");
    let m = machine(&s, &id);
    assert_eq!(m["state"], "available");
    assert_eq!(m["attempts"], 0);
    assert_eq!(m["next_attempt_at_ms"], Value::Null);
    // Recycle again: two failures in a row break it.
    assert_eq!(
        s.op_post(&format!("/api/v1/machines/{id}/recycle"), "{}").0,
        200
    );
    let (_, tok) = s.boot(mac);
    let tok = tok.unwrap();
    assert_eq!(fail(&s, &tok, "recycle", "verify_nonzero")["attempts"], 1);
    assert_eq!(order(&s, &tok)["order"], "recycle");
    let r = fail(&s, &tok, "recycle", "verify_nonzero");
    assert_eq!(r["state"], "broken", "{r}");
    let m = machine(&s, &id);
    assert_eq!(m["reason"], "recycle failed 2 times: verify_nonzero");
}

#[test]
fn an_interrupted_install_gets_its_order_again_after_the_reboot() {
    let s = Server::start();
    let mac = "52:54:00:c1:00:03";
    let (id, _) = register(&s, "RETRY-3", mac);
    assert_eq!(
        s.op_post(
            &format!("/api/v1/machines/{id}/install"),
            r#"{"snapshot":"deb12"}"#
        )
        .0,
        200
    );
    let (_, tok) = s.boot(mac);
    let tok = tok.unwrap();
    let (st, _) = s.agent_post(
        &tok,
        "/api/v1/agent/register",
        &report_with_disks("RETRY-3", mac).to_string(),
    );
    assert_eq!(st, 200);
    let first = order(&s, &tok);
    assert_eq!(first["order"], "install");
    s.agent_post(
        &tok,
        "/api/v1/agent/progress",
        r#"{"order":"install","stage":"write","percent":40}"#,
    );
    // The machine resets mid-write: it netboots again (still installing), registers with the
    // new boot's token, and is handed the same install, with no failure counted.
    let (script, tok2) = s.boot(mac);
    assert!(script.contains("boots the agent (install)"), "{script}");
    let tok2 = tok2.unwrap();
    let (st, body) = s.agent_post(
        &tok2,
        "/api/v1/agent/register",
        &report_with_disks("RETRY-3", mac).to_string(),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(json_of(&body)["state"], "installing");
    assert_eq!(order(&s, &tok2), first);
    assert_eq!(machine(&s, &id)["attempts"], 0);
}

#[test]
fn a_recycle_order_carries_the_disks_it_keeps() {
    let s = Server::start();
    let mac = "52:54:00:c1:00:04";
    let (id, _) = register(&s, "KEEP-1", mac);
    let path = format!("/api/v1/machines/{id}/recycle");
    // Refusals change nothing.
    for (body, want) in [
        (r#"{"keep_disks":["NOPE"]}"#.to_owned(), "unknown_disk"),
        (
            r#"{"keep_disks":["DISK-A",""]}"#.to_owned(),
            "invalid_keep_disks",
        ),
        (
            r#"{"keep_disks":["a\u0007b"]}"#.to_owned(),
            "invalid_keep_disks",
        ),
        (
            json!({ "keep_disks": vec!["x".repeat(129)] }).to_string(),
            "invalid_keep_disks",
        ),
        (
            json!({ "keep_disks": vec!["DISK-A"; 65] }).to_string(),
            "invalid_keep_disks",
        ),
        (r#"{"keep_disks":"DISK-A"}"#.to_owned(), "invalid_body"),
        (r#"{"keep":["DISK-A"]}"#.to_owned(), "invalid_body"),
    ] {
        let before = s.digest();
        let (st, resp) = s.op_post(&path, &body);
        assert_eq!((st, code(&resp).as_str()), (400, want), "{body}: {resp}");
        assert_eq!(before, s.digest(), "{body}");
    }
    // By serial and by WWN (any case); duplicates collapse.
    let (st, body) = s.op_post(
        &path,
        r#"{"keep_disks":["DISK-B"," NAA.5000C500A1B2C3D4 ","disk-b"]}"#,
    );
    assert_eq!(st, 200, "{body}");
    let m = json_of(&body);
    assert_eq!(m["state"], "recycling");
    assert_eq!(m["keep_disks"], json!(["DISK-B", "NAA.5000C500A1B2C3D4"]));
    let (_, tok) = s.boot(mac);
    let tok = tok.unwrap();
    assert_eq!(
        order(&s, &tok),
        json!({ "order": "recycle", "keep_disks": ["DISK-B", "NAA.5000C500A1B2C3D4"] })
    );
    let ev = history(&s, &id);
    let t = ev
        .iter()
        .rev()
        .find(|e| e["to_state"] == "recycling")
        .unwrap();
    assert_eq!(t["detail"]["keep_disks"][0], "DISK-B");
    // Completing the order drops the scope; the next recycle wipes everything again.
    let (st, _) = s.agent_post(
        &tok,
        "/api/v1/agent/result",
        r#"{"order":"recycle","outcome":"success"}"#,
    );
    assert_eq!(st, 200);
    assert_eq!(machine(&s, &id)["keep_disks"], json!([]));
    assert_eq!(s.op_post(&path, "").0, 200);
    let (_, tok) = s.boot(mac);
    assert_eq!(order(&s, &tok.unwrap()), json!({ "order": "recycle" }));
}

#[test]
fn cli_recycle_keeps_disks_and_show_prints_the_retry_state() {
    let s = Server::start_with(FileConfig {
        retry_base_secs: Some(600),
        ..FileConfig::default()
    });
    let mac = "52:54:00:c1:00:05";
    let (id, _) = register(&s, "KEEP-CLI", mac);
    let run = |args: &[&str]| s.cli(args);
    let (ok, out, err) = run(&["recycle", &id, "--keep-disk", "NOPE"]);
    assert!(!ok && err.contains("unknown_disk"), "{out}{err}");
    let (ok, out, err) = run(&[
        "recycle",
        "KEEP-CLI",
        "--keep-disk",
        "DISK-B",
        "--keep-disk",
        "naa.5000c500a1b2c3d4",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("is recycling (keeping DISK-B, naa.5000c500a1b2c3d4)"),
        "{out}"
    );
    let (_, tok) = s.boot(mac);
    let r = fail(&s, &tok.unwrap(), "recycle", "verify_nonzero");
    assert_eq!(r["attempts"], 1);
    let (ok, out, err) = run(&["show", &id]);
    assert!(ok, "{err}");
    assert!(out.contains("attempts:      1 failed"), "{out}");
    assert!(out.contains("next attempt:  20"), "{out}");
    assert!(
        out.contains("keep disks:    DISK-B, naa.5000c500a1b2c3d4"),
        "{out}"
    );
    assert!(
        out.contains("recycle failed: verify_nonzero (attempt 1 of 5; retrying)"),
        "{out}"
    );
}

#[test]
fn recycling_a_machine_in_use_needs_confirmation() {
    let s = Server::start();
    let (id, _) = register(&s, "CONFIRM-1", "52:54:00:c1:00:09");
    assert_eq!(
        s.op_post(&format!("/api/v1/machines/{id}/in-use"), "{}").0,
        200
    );
    let version = machine(&s, &id)["version"].clone();
    for body in ["{}", r#"{"confirm":false}"#, r#"{"keep_disks":["DISK-B"]}"#] {
        let (st, resp) = s.op_post(&format!("/api/v1/machines/{id}/recycle"), body);
        assert_eq!(
            (st, code(&resp).as_str()),
            (409, "confirmation_required"),
            "{body}: {resp}"
        );
    }
    // Refused orders change nothing.
    let m = machine(&s, &id);
    assert_eq!(
        (m["state"].as_str(), &m["version"]),
        (Some("in-use"), &version)
    );
    let (st, resp) = s.op_post(
        &format!("/api/v1/machines/{id}/recycle"),
        r#"{"confirm":true,"keep_disks":["DISK-B"]}"#,
    );
    assert_eq!(st, 200, "{resp}");
    let m = json_of(&resp);
    assert_eq!(m["state"], "recycling");
    assert_eq!(m["keep_disks"], json!(["DISK-B"]));
    // Machines not in use need no confirmation.
    let (id2, _) = register(&s, "CONFIRM-2", "52:54:00:c1:00:0a");
    assert_eq!(
        s.op_post(&format!("/api/v1/machines/{id2}/recycle"), "{}")
            .0,
        200
    );
}

#[test]
fn machine_show_reports_the_running_install_s_progress() {
    let s = Server::start();
    let mac = "52:54:00:c1:00:0b";
    let (id, _) = register(&s, "PROGRESS-1", mac);
    let (st, body) = s.op_post(
        &format!("/api/v1/machines/{id}/install"),
        r#"{"snapshot":"deb12"}"#,
    );
    assert_eq!(st, 200, "{body}");
    // No report yet for this order.
    assert_eq!(machine(&s, &id).get("progress"), None);
    let (_, tok) = s.boot(mac);
    let tok = tok.unwrap();
    let progress = |body: Value| {
        let (st, resp) = s.agent_post(&tok, "/api/v1/agent/progress", &body.to_string());
        assert_eq!(st, 204, "{resp}");
    };
    progress(json!({"order": "install", "stage": "select-disk", "message": "vda"}));
    progress(json!({"order": "install", "stage": "write", "percent": 10,
                    "bytes_done": 100u64 << 20, "bytes_total": 1000u64 << 20}));
    std::thread::sleep(Duration::from_millis(300));
    progress(json!({"order": "install", "stage": "write", "percent": 50,
                    "bytes_done": 500u64 << 20, "bytes_total": 1000u64 << 20}));
    let p = machine(&s, &id)["progress"].clone();
    assert_eq!(p["order"], "install");
    assert_eq!(p["stage"], "write");
    assert_eq!(p["percent"], 50);
    assert_eq!(p["bytes_done"], 500u64 << 20);
    let rate = p["rate_bytes_per_sec"].as_u64().expect("a rate");
    // 400 MiB in a bit more than 300 ms.
    assert!(rate > (100 << 20) && rate < (1400 << 20), "{p}");
    let eta = p["eta_secs"].as_u64().expect("an ETA");
    assert_eq!(eta, (500u64 << 20).div_ceil(rate), "{p}");
    // Bytes past the total are refused.
    let (st, resp) = s.agent_post(
        &tok,
        "/api/v1/agent/progress",
        &json!({"order": "install", "stage": "write", "bytes_done": 2, "bytes_total": 1})
            .to_string(),
    );
    assert_eq!((st, code(&resp).as_str()), (400, "invalid_body"), "{resp}");
    // Done: the machine leaves `installing` and the progress goes with the order.
    let (st, resp) = s.agent_post(
        &tok,
        "/api/v1/agent/result",
        r#"{"order":"install","outcome":"success"}"#,
    );
    assert_eq!(st, 200, "{resp}");
    assert_eq!(machine(&s, &id).get("progress"), None);
}
