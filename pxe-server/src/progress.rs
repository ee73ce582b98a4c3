//! The running order's progress for `machine show`, summarised from the agent's `progress`
//! events (pure: no store, no clock).
//!
//! Only reports after the machine's latest transition count: an earlier order's reports say
//! nothing about this one. The latest report gives the stage, percent and bytes; the rate is
//! the bytes moved between the oldest and the newest report of that same stage (within the
//! window the caller read), and the ETA is what is left at that rate.

use pxe_api::machine::{EventView, OrderProgress};

/// Events [`summarize`] looks at, newest first: enough for a whole install at one report per
/// 5 %, and bounded.
pub const WINDOW: i64 = 64;

/// What one `progress` event says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Report {
    at_ms: i64,
    order: String,
    stage: String,
    percent: Option<u8>,
    bytes_done: Option<u64>,
    bytes_total: Option<u64>,
}

fn report(e: &EventView) -> Option<Report> {
    if e.kind != "progress" {
        return None;
    }
    let d = e.detail.as_ref()?;
    let text = |k: &str| d.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let num = |k: &str| d.get(k).and_then(serde_json::Value::as_u64);
    Some(Report {
        at_ms: e.at_ms,
        order: text("order")?,
        stage: text("stage")?,
        percent: num("percent").and_then(|p| u8::try_from(p).ok()),
        bytes_done: num("bytes_done"),
        bytes_total: num("bytes_total"),
    })
}

/// The progress of the order started by the latest transition, from `newest_first` events
/// (`progress` and `transition` kinds; others are skipped). `None` without a report since.
pub fn summarize(newest_first: &[EventView]) -> Option<OrderProgress> {
    let reports: Vec<Report> = newest_first
        .iter()
        .take_while(|e| e.kind != "transition")
        .filter_map(report)
        .collect();
    let latest = reports.first()?;
    // The oldest report of the same stage and order that carries bytes, for the rate.
    let oldest = reports
        .iter()
        .take_while(|r| r.stage == latest.stage && r.order == latest.order)
        .filter(|r| r.bytes_done.is_some())
        .last();
    let rate = match (
        latest.bytes_done,
        oldest.and_then(|o| o.bytes_done.zip(Some(o.at_ms))),
    ) {
        (Some(done), Some((then, at))) if latest.at_ms > at && done > then => {
            let ms = u64::try_from(latest.at_ms - at).ok()?;
            (done - then).checked_mul(1000).map(|b| b / ms)
        }
        _ => None,
    };
    let eta = match (rate, latest.bytes_done, latest.bytes_total) {
        (Some(r), Some(d), Some(t)) if r > 0 && t >= d => Some((t - d).div_ceil(r)),
        _ => None,
    };
    Some(OrderProgress {
        order: latest.order.clone(),
        stage: latest.stage.clone(),
        percent: latest.percent,
        bytes_done: latest.bytes_done,
        bytes_total: latest.bytes_total,
        rate_bytes_per_sec: rate,
        eta_secs: eta,
        updated_at_ms: latest.at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(seq: i64, at_ms: i64, kind: &str, detail: serde_json::Value) -> EventView {
        EventView {
            seq,
            at_ms,
            actor: "agent".into(),
            kind: kind.into(),
            from_state: None,
            to_state: None,
            reason: None,
            detail: Some(detail),
        }
    }

    fn write(seq: i64, at_ms: i64, pct: u8, done: u64) -> EventView {
        ev(
            seq,
            at_ms,
            "progress",
            json!({"order": "install", "stage": "write", "percent": pct,
                   "bytes_done": done, "bytes_total": 1000u64}),
        )
    }

    #[test]
    fn rate_and_eta_come_from_the_current_stage() {
        // Newest first: two write reports 2 s apart (400 bytes), then older stages.
        let events = vec![
            write(5, 10_000, 60, 600),
            write(4, 8_000, 20, 200),
            ev(
                3,
                7_000,
                "progress",
                json!({"order": "install", "stage": "select-disk"}),
            ),
            ev(2, 6_000, "transition", json!({})),
            write(1, 1_000, 99, 990),
        ];
        let p = summarize(&events).unwrap();
        assert_eq!(p.stage, "write");
        assert_eq!(p.percent, Some(60));
        assert_eq!((p.bytes_done, p.bytes_total), (Some(600), Some(1000)));
        assert_eq!(p.rate_bytes_per_sec, Some(200));
        assert_eq!(p.eta_secs, Some(2));
        assert_eq!(p.updated_at_ms, 10_000);
    }

    #[test]
    fn reports_before_the_latest_transition_do_not_count() {
        let events = vec![
            ev(2, 2_000, "transition", json!({})),
            write(1, 1_000, 50, 500),
        ];
        assert_eq!(summarize(&events), None);
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn a_single_report_or_no_bytes_gives_no_rate() {
        let one = summarize(&[write(1, 1_000, 10, 100)]).unwrap();
        assert_eq!((one.rate_bytes_per_sec, one.eta_secs), (None, None));
        let stage = summarize(&[ev(
            1,
            1_000,
            "progress",
            json!({"order": "recycle", "stage": "wipe", "percent": 30}),
        )])
        .unwrap();
        assert_eq!((stage.order.as_str(), stage.percent), ("recycle", Some(30)));
        assert_eq!(stage.rate_bytes_per_sec, None);
    }

    #[test]
    fn hostile_details_are_skipped_not_trusted() {
        let events = vec![
            ev(3, 3_000, "progress", json!({"stage": "write"})),
            ev(
                2,
                2_000,
                "progress",
                json!({"order": "install", "stage": "write",
                "percent": 900, "bytes_done": "many"}),
            ),
            ev(1, 1_000, "boot", json!({})),
        ];
        let p = summarize(&events).unwrap();
        assert_eq!((p.percent, p.bytes_done), (None, None));
        // Time going backwards or bytes shrinking give no rate rather than nonsense.
        let back = vec![write(2, 1_000, 60, 600), write(1, 2_000, 20, 200)];
        assert_eq!(summarize(&back).unwrap().rate_bytes_per_sec, None);
        let shrink = vec![write(2, 2_000, 20, 200), write(1, 1_000, 60, 600)];
        assert_eq!(summarize(&shrink).unwrap().rate_bytes_per_sec, None);
    }
}
