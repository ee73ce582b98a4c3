//! The operator commands: a small blocking client of the running appliance's API.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use pxe_api::machine::EventView;
use pxe_api::{ErrorBody, MachineView};

use crate::cli::{ApiArgs, MachineCommand};

struct Client {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl Client {
    fn new(api: &ApiArgs) -> Result<Client> {
        let path = api
            .token_file
            .clone()
            .unwrap_or_else(|| api.data_dir.join(crate::app::OPERATOR_TOKEN_FILE));
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the operator token {}", path.display()))?
            .trim()
            .to_owned();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Ok(Client {
            agent,
            base: api.api.trim_end_matches('/').to_owned(),
            token,
        })
    }

    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Result<String> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            (_, Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(&b),
            (_, None) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_empty(),
        };
        let mut resp = resp.with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let text = resp
            .body_mut()
            .with_config()
            // A large fleet's machine list is tens of MiB.
            .limit(512 << 20)
            .read_to_string()
            .with_context(|| format!("reading the reply to {method} {url}"))?;
        if !status.is_success() {
            match serde_json::from_str::<ErrorBody>(&text) {
                Ok(e) => bail!(
                    "{} ({}): {}",
                    status.as_u16(),
                    e.error.code,
                    e.error.message
                ),
                Err(_) => bail!("{} from {url}: {}", status.as_u16(), text.trim()),
            }
        }
        Ok(text)
    }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Formats Unix milliseconds as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn fmt_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn print_machine_table(ms: &[MachineView]) {
    println!(
        "{:<18} {:<11} {:<40} {:<36} {:<16} ROLE",
        "ID", "STATE", "IDENTITY", "MACS", "HOSTNAME"
    );
    for m in ms {
        let macs: Vec<String> = m.macs.iter().map(ToString::to_string).collect();
        let ident: String = m.identity_key.chars().take(40).collect();
        println!(
            "{:<18} {:<11} {:<40} {:<36} {:<16} {}",
            m.id,
            m.state.as_str(),
            ident.escape_debug().to_string(),
            macs.join(","),
            m.hostname.as_deref().unwrap_or("-"),
            m.role.as_deref().unwrap_or("-"),
        );
    }
}

fn print_machine(m: &MachineView) {
    println!("id:            {}", m.id);
    println!("state:         {} (version {})", m.state, m.version);
    println!(
        "identity:      {} ({})",
        m.identity_key.escape_debug(),
        m.identity_kind.as_str()
    );
    if m.serial_untrusted {
        println!(
            "serial:        {:?} (placeholder, not trusted)",
            m.serial.as_deref().unwrap_or("")
        );
    } else {
        println!(
            "serial:        {}",
            m.serial.as_deref().unwrap_or("-").escape_debug()
        );
    }
    println!("system uuid:   {}", m.system_uuid.as_deref().unwrap_or("-"));
    let macs: Vec<String> = m.macs.iter().map(ToString::to_string).collect();
    println!("macs:          {}", macs.join(", "));
    println!("snapshot:      {}", m.snapshot.as_deref().unwrap_or("-"));
    println!(
        "reason:        {}",
        m.reason.as_deref().unwrap_or("-").escape_debug()
    );
    if let Some(c) = &m.conflict_with {
        println!("conflicts with: {c}");
    }
    for line in order_lines(m) {
        println!("{line}");
    }
    if let Some(h) = &m.hardware {
        for d in &h.disks {
            println!(
                "disk:          {} {} bytes {}",
                d.name,
                d.size_bytes,
                d.model.as_deref().unwrap_or("")
            );
        }
        if let Some(t) = h.memory.total_bytes {
            println!("memory:        {t} bytes");
        }
    }
    println!("created:       {}", fmt_time(m.created_at_ms));
    println!("updated:       {}", fmt_time(m.updated_at_ms));
}

/// The retry state and scope of the machine's current order, for `machine show` (pure).
pub fn order_lines(m: &MachineView) -> Vec<String> {
    let mut out = Vec::new();
    if m.attempts > 0 {
        out.push(format!("attempts:      {} failed", m.attempts));
    }
    if let Some(t) = m.next_attempt_at_ms {
        out.push(format!("next attempt:  {} UTC", fmt_time(t)));
    }
    if !m.keep_disks.is_empty() {
        out.push(format!(
            "keep disks:    {}",
            m.keep_disks.join(", ").escape_debug()
        ));
    }
    if let Some(p) = &m.progress {
        out.push(format!("progress:      {}", progress_text(p)));
    }
    out
}

/// `write 45% (960.0 MiB of 2.0 GiB, 85.3 MiB/s, ETA 13 s)` (pure).
pub fn progress_text(p: &pxe_api::machine::OrderProgress) -> String {
    let mut s = format!("{} {}", p.order, p.stage.escape_debug());
    if let Some(pct) = p.percent {
        s.push_str(&format!(" {pct}%"));
    }
    let mut parts = Vec::new();
    match (p.bytes_done, p.bytes_total) {
        (Some(d), Some(t)) => parts.push(format!("{} of {}", bytes(d), bytes(t))),
        (Some(d), None) => parts.push(bytes(d)),
        _ => {}
    }
    if let Some(r) = p.rate_bytes_per_sec {
        parts.push(format!("{}/s", bytes(r)));
    }
    if let Some(e) = p.eta_secs {
        parts.push(format!("ETA {e} s"));
    }
    if !parts.is_empty() {
        s.push_str(&format!(" ({})", parts.join(", ")));
    }
    s.push_str(&format!(", reported {} UTC", fmt_time(p.updated_at_ms)));
    s
}

/// Bytes in binary units with one decimal.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS.get(unit).unwrap_or(&"B"))
    }
}

/// Runs an operator command.
pub fn run(cmd: MachineCommand) -> Result<()> {
    match cmd {
        MachineCommand::List { state, json, api } => {
            let c = Client::new(&api)?;
            let path = match &state {
                Some(s) => format!("/api/v1/machines?state={}", enc(s)),
                None => "/api/v1/machines".to_owned(),
            };
            let text = c.call("GET", &path, None)?;
            let ms: Vec<MachineView> = serde_json::from_str(&text).context("decoding machines")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ms)?);
            } else {
                print_machine_table(&ms);
            }
        }
        MachineCommand::Show { id, json, api } => {
            let c = Client::new(&api)?;
            let text = c.call("GET", &format!("/api/v1/machines/{}", enc(&id)), None)?;
            let m: MachineView = serde_json::from_str(&text).context("decoding machine")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                print_machine(&m);
            }
        }
        MachineCommand::History { id, json, api } => {
            let c = Client::new(&api)?;
            let text = c.call(
                "GET",
                &format!("/api/v1/machines/{}/history", enc(&id)),
                None,
            )?;
            let evs: Vec<EventView> = serde_json::from_str(&text).context("decoding history")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&evs)?);
            } else {
                for e in evs {
                    let change = match (&e.from_state, &e.to_state) {
                        (Some(f), Some(t)) if f != t => format!("{f} -> {t}"),
                        (None, Some(t)) => format!("-> {t}"),
                        (Some(f), _) => f.clone(),
                        _ => String::new(),
                    };
                    let detail = e.detail.as_ref().map(|d| d.to_string()).unwrap_or_default();
                    println!(
                        "{}  {:<9} {:<10} {:<24} {} {}",
                        fmt_time(e.at_ms),
                        e.actor,
                        e.kind,
                        change,
                        e.reason.as_deref().unwrap_or("").escape_debug(),
                        detail
                    );
                }
            }
        }
        MachineCommand::Install { id, snapshot, api } => {
            let c = Client::new(&api)?;
            let m: MachineView = serde_json::from_str(&c.call(
                "POST",
                &format!("/api/v1/machines/{}/install", enc(&id)),
                Some(serde_json::json!({ "snapshot": snapshot })),
            )?)?;
            println!("{} is {} (snapshot {})", m.id, m.state, snapshot);
        }
        MachineCommand::Broken { id, reason, api } => {
            let c = Client::new(&api)?;
            let m: MachineView = serde_json::from_str(&c.call(
                "POST",
                &format!("/api/v1/machines/{}/broken", enc(&id)),
                Some(serde_json::json!({ "reason": reason })),
            )?)?;
            println!("{} is {}", m.id, m.state);
        }
        MachineCommand::Recycle {
            id,
            keep_disks,
            confirm,
            api,
        } => {
            let c = Client::new(&api)?;
            let m: MachineView = serde_json::from_str(&c.call(
                "POST",
                &format!("/api/v1/machines/{}/recycle", enc(&id)),
                Some(serde_json::json!({ "keep_disks": keep_disks, "confirm": confirm })),
            )?)?;
            if m.keep_disks.is_empty() {
                println!("{} is {}", m.id, m.state);
            } else {
                println!(
                    "{} is {} (keeping {})",
                    m.id,
                    m.state,
                    m.keep_disks.join(", ").escape_debug()
                );
            }
        }
        MachineCommand::InUse { id, api } => simple(&api, &id, "in-use")?,
        MachineCommand::Retire { id, api } => simple(&api, &id, "retire")?,
    }
    Ok(())
}

fn simple(api: &ApiArgs, id: &str, action: &str) -> Result<()> {
    let c = Client::new(api)?;
    let m: MachineView = serde_json::from_str(&c.call(
        "POST",
        &format!("/api/v1/machines/{}/{action}", enc(id)),
        Some(serde_json::json!({})),
    )?)?;
    println!("{} is {}", m.id, m.state);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn progress_reads_like_a_progress_line() {
        let p = pxe_api::machine::OrderProgress {
            order: "install".into(),
            stage: "write".into(),
            percent: Some(45),
            bytes_done: Some(960 << 20),
            bytes_total: Some(2 << 30),
            rate_bytes_per_sec: Some(85 << 20),
            eta_secs: Some(13),
            updated_at_ms: 0,
        };
        assert_eq!(
            super::progress_text(&p),
            "install write 45% (960.0 MiB of 2.0 GiB, 85.0 MiB/s, ETA 13 s), reported \
             1970-01-01 00:00:00 UTC"
        );
        let bare = pxe_api::machine::OrderProgress {
            percent: None,
            bytes_done: Some(512),
            bytes_total: None,
            rate_bytes_per_sec: None,
            eta_secs: None,
            ..p
        };
        assert!(super::progress_text(&bare).starts_with("install write (512 B), reported"));
    }

    #[test]
    fn order_lines_show_attempts_next_attempt_and_kept_disks() {
        let mut m: pxe_api::MachineView = serde_json::from_value(serde_json::json!({
            "id": "m-1", "identity_key": "serial:A", "identity_kind": "serial",
            "serial": "A", "system_uuid": null, "serial_untrusted": false,
            "state": "installing", "version": 3, "macs": [], "hostname": null, "role": null,
            "snapshot": "deb12", "reason": null, "conflict_with": null, "hardware": null,
            "created_at_ms": 0, "updated_at_ms": 0
        }))
        .unwrap();
        assert!(
            super::order_lines(&m).is_empty(),
            "older replies decode too"
        );
        m.attempts = 2;
        m.next_attempt_at_ms = Some(1_795_687_200_000);
        m.keep_disks = vec!["SER-2".into(), "naa.5000".into()];
        assert_eq!(
            super::order_lines(&m),
            [
                "attempts:      2 failed",
                "next attempt:  2026-11-26 10:00:00 UTC",
                "keep disks:    SER-2, naa.5000",
            ]
        );
    }

    #[test]
    fn time_formatting() {
        assert_eq!(super::fmt_time(0), "1970-01-01 00:00:00");
        assert_eq!(super::fmt_time(1_795_687_200_000), "2026-11-26 10:00:00");
        assert_eq!(super::fmt_time(951_782_400_000), "2000-02-29 00:00:00");
    }
}
