//! Every route × every kind of credential → the right status, and a refusal changes nothing in
//! the store (byte-identical content digest).

use crate::common::{Server, code, report};

const MAC_A: &str = "52:54:00:aa:00:01";
const MAC_B: &str = "52:54:00:bb:00:01";

struct Fixture {
    s: Server,
    id_a: String,
    tok_a: String,
    tok_b: String,
    tok_a_stale: String,
}

/// A and B registered and `available`; A went through broken → recycling → available with the
/// agent, so A's first token was revoked by a state change; A and B then netbooted again.
fn fixture() -> Fixture {
    let s = Server::start();
    let (st, a, tok_a_stale) = s.boot_and_register("SERIAL-A", &[MAC_A]);
    assert_eq!(st, 201, "{a}");
    let id_a = a["machine_id"].as_str().unwrap().to_owned();
    let (st, _, _) = s.boot_and_register("SERIAL-B", &[MAC_B]);
    assert_eq!(st, 201);
    assert_eq!(
        s.op_post(
            &format!("/api/v1/machines/{id_a}/broken"),
            r#"{"reason":"test"}"#
        )
        .0,
        200
    );
    assert_eq!(
        s.op_post(&format!("/api/v1/machines/{id_a}/recycle"), "{}")
            .0,
        200
    );
    let (_, t) = s.boot(MAC_A);
    let t = t.unwrap();
    let (st, body) = s.agent_post(
        &t,
        "/api/v1/agent/result",
        r#"{"order":"recycle","outcome":"success"}"#,
    );
    assert_eq!(st, 200, "{body}");
    let (_, tok_a) = s.boot(MAC_A);
    let (_, tok_b) = s.boot(MAC_B);
    Fixture {
        s,
        id_a,
        tok_a: tok_a.unwrap(),
        tok_b: tok_b.unwrap(),
        tok_a_stale,
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cred {
    None,
    Malformed,
    Operator,
    AgentA,
    AgentB,
    AgentAStale,
}

const CREDS: [Cred; 6] = [
    Cred::None,
    Cred::Malformed,
    Cred::AgentA,
    Cred::AgentB,
    Cred::AgentAStale,
    Cred::Operator,
];

#[test]
fn route_by_credential_matrix() {
    // (method, path template, body, expected status per credential in CREDS order, expected codes)
    let report_a = report("SERIAL-A", &[MAC_A]).to_string();
    type Row<'a> = (&'a str, &'a str, String, [u16; 6]);
    //                                                      none malf  A    B   stale  op
    let rows: Vec<Row> = vec![
        (
            "GET",
            "/api/v1/machines",
            String::new(),
            [401, 401, 401, 401, 401, 200],
        ),
        (
            "GET",
            "/api/v1/machines/{A}",
            String::new(),
            [401, 401, 401, 401, 401, 200],
        ),
        (
            "GET",
            "/api/v1/machines/{A}/history",
            String::new(),
            [401, 401, 401, 401, 401, 200],
        ),
        (
            "POST",
            "/api/v1/machines/{A}/install",
            r#"{"snapshot":"deb12"}"#.into(),
            [401, 401, 401, 401, 401, 200],
        ),
        (
            "POST",
            "/api/v1/machines/{A}/recycle",
            "{}".into(),
            [401, 401, 401, 401, 401, 200],
        ),
        (
            "POST",
            "/api/v1/machines/{A}/broken",
            r#"{"reason":"disk"}"#.into(),
            [401, 401, 401, 401, 401, 200],
        ),
        (
            "POST",
            "/api/v1/machines/{A}/in-use",
            "{}".into(),
            [401, 401, 401, 401, 401, 200],
        ),
        (
            "POST",
            "/api/v1/machines/{A}/retire",
            "{}".into(),
            [401, 401, 401, 401, 401, 200],
        ),
        (
            "POST",
            "/api/v1/agent/register",
            report_a.clone(),
            [401, 401, 200, 403, 401, 401],
        ),
        (
            "GET",
            "/api/v1/agent/orders",
            String::new(),
            [401, 401, 200, 200, 401, 401],
        ),
        (
            "POST",
            "/api/v1/agent/progress",
            r#"{"order":"install","stage":"write","percent":5}"#.into(),
            [401, 401, 204, 204, 401, 401],
        ),
        (
            "POST",
            "/api/v1/agent/result",
            r#"{"order":"frobnicate","outcome":"unsupported"}"#.into(),
            [401, 401, 200, 200, 401, 401],
        ),
    ];
    let mut cells = 0;
    for (method, tmpl, body, want) in &rows {
        // A fresh appliance per route: successes then cannot influence other routes' cells.
        let f = fixture();
        let path = tmpl.replace("{A}", &f.id_a);
        for (i, cred) in CREDS.iter().enumerate() {
            let auth = match cred {
                Cred::None => None,
                Cred::Malformed => Some("Bearer not-a-token".to_owned()),
                Cred::Operator => Some(format!("Bearer {}", f.s.op)),
                Cred::AgentA => Some(format!("Bearer {}", f.tok_a)),
                Cred::AgentB => Some(format!("Bearer {}", f.tok_b)),
                Cred::AgentAStale => Some(format!("Bearer {}", f.tok_a_stale)),
            };
            let before = f.s.digest();
            let (st, resp) = f.s.request(method, &path, auth.as_deref(), Some(body));
            assert_eq!(st, want[i], "{method} {tmpl} with {cred:?}: {resp}");
            if st >= 400 {
                let c = code(&resp);
                assert!(
                    !c.is_empty(),
                    "{method} {tmpl} {cred:?}: refusal without a code: {resp}"
                );
                if *cred == Cred::AgentAStale {
                    let expect = if tmpl.contains("/agent/") {
                        "token_revoked"
                    } else {
                        "unauthorized"
                    };
                    assert_eq!(c, expect, "{method} {tmpl}");
                }
                assert_eq!(
                    before,
                    f.s.digest(),
                    "{method} {tmpl} with {cred:?} changed the store"
                );
            }
            cells += 1;
        }
    }
    assert_eq!(cells, 72);
}

#[test]
fn token_is_revoked_by_every_state_change_and_bound_to_its_machine() {
    let f = fixture();
    let s = &f.s;
    // A's current token works...
    assert_eq!(s.agent_get(&f.tok_a, "/api/v1/agent/orders").0, 200);
    // ...until the operator changes A's state.
    assert_eq!(
        s.op_post(
            &format!("/api/v1/machines/{}/install", f.id_a),
            r#"{"snapshot":"deb12"}"#
        )
        .0,
        200
    );
    let (st, body) = s.agent_get(&f.tok_a, "/api/v1/agent/orders");
    assert_eq!((st, code(&body).as_str()), (401, "token_revoked"));
    // The next netboot gets a fresh token, with the install order.
    let (script, t) = s.boot(MAC_A);
    let t = t.expect("installing machines boot the agent");
    assert!(script.contains("boots the agent (install)"), "{script}");
    let (st, body) = s.agent_get(&t, "/api/v1/agent/orders");
    assert_eq!(st, 200);
    assert!(
        body.contains(r#""order":"install""#) && body.contains("deb12"),
        "{body}"
    );
    // B's token registering A's report is refused and changes nothing: without B's MAC in it
    // (mac_mismatch), and with B's MAC but A's identity (wrong_machine).
    let before = s.digest();
    let (st, body) = s.agent_post(
        &f.tok_b,
        "/api/v1/agent/register",
        &report("SERIAL-A", &[MAC_A]).to_string(),
    );
    assert_eq!((st, code(&body).as_str()), (403, "mac_mismatch"));
    let (st, body) = s.agent_post(
        &f.tok_b,
        "/api/v1/agent/register",
        &report("SERIAL-A", &[MAC_B, MAC_A]).to_string(),
    );
    assert_eq!((st, code(&body).as_str()), (403, "wrong_machine"));
    assert_eq!(before, s.digest());
    // In use: the machine boots its disk, and no token is issued.
    assert_eq!(
        s.agent_post(
            &t,
            "/api/v1/agent/result",
            r#"{"order":"install","outcome":"success"}"#
        )
        .0,
        200
    );
    let (script, t2) = s.boot(MAC_A);
    assert!(t2.is_none() && script.contains("sanboot"), "{script}");
    assert_eq!(s.agent_get(&t, "/api/v1/agent/orders").0, 401);
}

#[test]
fn bad_bodies_and_parameters_get_stable_codes() {
    let f = fixture();
    let s = &f.s;
    let a = format!("/api/v1/machines/{}", f.id_a);
    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        (
            "POST",
            format!("{a}/install"),
            "{".into(),
            400,
            "invalid_body",
        ),
        (
            "POST",
            format!("{a}/install"),
            r#"{"snapshot":"../etc"}"#.into(),
            400,
            "invalid_snapshot",
        ),
        (
            "POST",
            format!("{a}/install"),
            r#"{"snapshot":"nope"}"#.into(),
            404,
            "unknown_snapshot",
        ),
        (
            "POST",
            format!("{a}/install"),
            r#"{"snapshot":"deb12","extra":1}"#.into(),
            400,
            "invalid_body",
        ),
        (
            "POST",
            format!("{a}/broken"),
            r#"{"reason":"  "}"#.into(),
            400,
            "reason_required",
        ),
        (
            "POST",
            format!("{a}/broken"),
            format!(r#"{{"reason":"{}"}}"#, "x".repeat(2000)),
            400,
            "invalid_body",
        ),
        (
            "POST",
            format!("{a}/recycle"),
            "x".repeat(100 * 1024),
            413,
            "body_too_large",
        ),
        (
            "POST",
            format!("{a}/in-use"),
            r#"{"if_version":99}"#.into(),
            409,
            "version_conflict",
        ),
        (
            "POST",
            format!("{a}/recycle"),
            r#"{"keep_disks":["NO-SUCH-DISK"]}"#.into(),
            400,
            "unknown_disk",
        ),
        (
            "POST",
            format!("{a}/recycle"),
            r#"{"keep_disks":[" "]}"#.into(),
            400,
            "invalid_keep_disks",
        ),
        (
            "POST",
            format!("{a}/recycle"),
            r#"{"keep_disks":["x"],"wipe_all":true}"#.into(),
            400,
            "invalid_body",
        ),
        (
            "POST",
            format!("{a}/recycle"),
            r#"{"keep_disks":["x"],"if_version":99}"#.into(),
            400,
            "unknown_disk",
        ),
        (
            "GET",
            "/api/v1/machines?state=bogus".into(),
            String::new(),
            400,
            "invalid_state",
        ),
        (
            "GET",
            "/api/v1/machines/nope".into(),
            String::new(),
            404,
            "machine_not_found",
        ),
        (
            "GET",
            "/api/v1/nothing".into(),
            String::new(),
            404,
            "not_found",
        ),
    ];
    for (m, path, body, want, want_code) in cases {
        let before = s.digest();
        let (st, resp) = if m == "GET" {
            s.op_get(&path)
        } else {
            s.op_post(&path, &body)
        };
        assert_eq!(
            (st, code(&resp).as_str()),
            (want, want_code),
            "{m} {path}: {resp}"
        );
        assert_eq!(before, s.digest(), "{m} {path}");
    }
    for q in [
        "mac=zz",
        "mac=52:54:00:aa:00:01&platform=amiga",
        "mac=00:00:00:00:00:00",
    ] {
        let (st, resp) = s.request("GET", &format!("/boot.ipxe?{q}"), None, None);
        assert_eq!(st, 400, "{q}: {resp}");
        assert!(!resp.contains("#!ipxe"));
    }
    // Illegal transitions: 409 with the lifecycle's reason code, nothing applied.
    assert_eq!(s.op_post(&format!("{a}/retire"), "{}").0, 200);
    let before = s.digest();
    let (st, resp) = s.op_post(&format!("{a}/install"), r#"{"snapshot":"deb12"}"#);
    assert_eq!((st, code(&resp).as_str()), (409, "machine_retired"));
    assert_eq!(before, s.digest());
}
