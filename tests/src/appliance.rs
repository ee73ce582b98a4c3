//! The real `pxe-server` binary, running inside a test's namespace.
//!
//! It binds the bridge address (10.99.0.1) only, so machines on the namespace's taps reach it
//! and nothing outside the namespace can. Operator queries go through the binary's own CLI
//! (`pxe-server machine list --json`), run inside the namespace with `ip netns exec`; raw
//! HTTP requests use `curl` inside the namespace.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pxe_api::machine::EventView;
use pxe_api::{MachineState, MachineView};

use crate::error::{Error, Result};
use crate::gate::announce;
use crate::netns::{BRIDGE, Netns, NsCommand, ProcId, SERVER_V4};
use crate::paths::{self, Prefer};
use crate::proc::{bounded_text, poll_until};
use crate::qemu::Vm;
use crate::serial::{TAIL_LINES, tail_lines};

/// HTTP port of the appliance inside the namespace.
pub const HTTP_PORT: u16 = 8080;
/// DHCP range handed to VMs in full DHCP mode.
pub const DHCP_RANGE: &str = "10.99.0.100-10.99.0.199";
/// How long the appliance may take to answer `/healthz`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for one CLI call or HTTP request.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start the appliance.
#[derive(Debug, Clone)]
pub struct ApplianceConfig {
    binary: Option<PathBuf>,
    prefer: Prefer,
    assets: PathBuf,
    dhcp_and_tftp: bool,
    extra: Vec<String>,
}

impl ApplianceConfig {
    /// The production shape: DHCP (full mode) and TFTP on `br0`, HTTP on 10.99.0.1:8080,
    /// assets from the dist directory, the dist `pxe-server` preferred.
    pub fn full() -> Self {
        ApplianceConfig {
            binary: None,
            prefer: Prefer::Dist,
            assets: paths::dist_dir(),
            dhcp_and_tftp: true,
            extra: Vec::new(),
        }
    }

    /// HTTP only (no DHCP, no TFTP), assets from `assets`, the debug build preferred.
    pub fn http_only(assets: &Path) -> Self {
        ApplianceConfig {
            binary: None,
            prefer: Prefer::Debug,
            assets: assets.to_path_buf(),
            dhcp_and_tftp: false,
            extra: Vec::new(),
        }
    }

    /// Use exactly this binary.
    pub fn binary(mut self, path: &Path) -> Self {
        self.binary = Some(path.to_path_buf());
        self
    }

    /// Serve assets from `dir` instead (e.g. a copy of the dist directory with extra
    /// snapshots). Files must be real files: the appliance refuses symlinks leading out.
    pub fn assets(mut self, dir: &Path) -> Self {
        self.assets = dir.to_path_buf();
        self
    }

    /// Append these arguments to `serve` (e.g. retry settings a scenario needs).
    pub fn extra_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }

    /// The `serve` arguments for a data directory. Pure.
    pub fn serve_args(&self, data_dir: &Path) -> Vec<String> {
        let http = format!("{SERVER_V4}:{HTTP_PORT}");
        let mut a: Vec<String> = vec![
            "serve".into(),
            "--http".into(),
            http.clone(),
            "--public-url".into(),
            format!("http://{http}"),
            "--assets".into(),
            self.assets.display().to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        if self.dhcp_and_tftp {
            a.extend(
                [
                    "--interface",
                    BRIDGE,
                    "--dhcp-mode",
                    "full",
                    "--dhcp-range",
                    DHCP_RANGE,
                    "--tftp",
                    &format!("{SERVER_V4}:69"),
                ]
                .map(String::from),
            );
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

/// A running appliance. Dropping it stops the process (SIGTERM, 5 s, SIGKILL).
#[derive(Debug)]
pub struct Appliance<'ns> {
    ns: &'ns Netns,
    proc: ProcId,
    binary: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    url: String,
}

/// An HTTP response fetched with curl.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// Body (lossy UTF-8).
    pub body: String,
}

impl<'ns> Appliance<'ns> {
    /// Starts `pxe-server serve` in `ns` with its data directory and log in `dir`, and waits
    /// until `/healthz` answers.
    pub fn start(ns: &'ns Netns, dir: &Path, cfg: &ApplianceConfig) -> Result<Self> {
        let binary = match &cfg.binary {
            Some(b) => b.clone(),
            None => {
                let (b, note) = paths::locate_pxe_server(cfg.prefer).ok_or_else(|| {
                    Error::Invalid(
                        "no pxe-server binary: run `cargo xtask dist` or `cargo build -p pxe-server`"
                            .into(),
                    )
                })?;
                if let Some(note) = note {
                    announce(&format!("appliance: {note}"));
                }
                b
            }
        };
        let data_dir = dir.join("appliance-data");
        std::fs::create_dir_all(&data_dir).map_err(|e| Error::io("creating", &data_dir, e))?;
        let log = dir.join("appliance.log");
        let proc = ns.spawn(
            "pxe-server",
            &NsCommand::new(&binary)
                .args(cfg.serve_args(&data_dir))
                .env("NO_COLOR", "1")
                .log(&log),
        )?;
        let app = Appliance {
            ns,
            proc,
            binary,
            data_dir,
            log,
            url: format!("http://{SERVER_V4}:{HTTP_PORT}"),
        };
        app.wait_ready(READY_TIMEOUT)?;
        Ok(app)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let mut exited = None;
        let ok = poll_until(timeout, Duration::from_millis(250), || {
            if let Some(st) = self.ns.try_wait(self.proc) {
                exited = Some(st);
                return Some(false);
            }
            match self.get("/healthz") {
                Ok(r) if r.status == 200 && r.body.trim() == "ok" => Some(true),
                _ => None,
            }
        });
        match (ok, exited) {
            (Some(true), _) => Ok(()),
            (_, Some(st)) => Err(Error::ExitedEarly {
                what: format!("pxe-server {}", self.binary.display()),
                status: st.to_string(),
                detail: self.report(),
            }),
            _ => Err(Error::Timeout {
                what: format!("{}/healthz", self.url),
                after: timeout,
                detail: self.report(),
            }),
        }
    }

    /// The base URL, `http://10.99.0.1:8080`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The binary that runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The data directory (store, `operator.token`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The process ID.
    pub fn pid(&self) -> Option<u32> {
        self.ns.pid(self.proc)
    }

    /// `GET <url><path>` with curl inside the namespace; no proxy, 10 s bound.
    pub fn get(&self, path: &str) -> Result<HttpReply> {
        self.curl(&[], path)
    }

    /// `POST <url><path>` with a JSON body and the operator bearer token (read from
    /// `operator.token` in the data directory and handed to curl in a header file, so it does
    /// not show up in the process list).
    pub fn operator_post(&self, path: &str, body: &serde_json::Value) -> Result<HttpReply> {
        let token_file = self.data_dir.join("operator.token");
        let token = std::fs::read_to_string(&token_file)
            .map_err(|e| Error::io("reading", &token_file, e))?;
        let header_file = self.data_dir.join("operator.curl-header");
        std::fs::write(
            &header_file,
            format!("Authorization: Bearer {}\n", token.trim()),
        )
        .map_err(|e| Error::io("writing", &header_file, e))?;
        let reply = self.curl(
            &[
                "-X".into(),
                "POST".into(),
                "-H".into(),
                "Content-Type: application/json".into(),
                "-H".into(),
                format!("@{}", header_file.display()),
                "--data-binary".into(),
                body.to_string(),
            ],
            path,
        );
        let _ = std::fs::remove_file(&header_file);
        reply
    }

    /// curl inside the namespace with extra arguments; returns status and body.
    fn curl(&self, extra: &[String], path: &str) -> Result<HttpReply> {
        let marker = "\nrackhand-http-status:";
        let out = self.ns.exec_ok(
            &NsCommand::new("curl")
                .args([
                    "-sS",
                    "--noproxy",
                    "*",
                    "--max-time",
                    "10",
                    "-w",
                    &format!("{marker}%{{http_code}}"),
                ])
                .args(extra)
                .arg(format!("{}{path}", self.url)),
            CALL_TIMEOUT,
        )?;
        let (body, status) = out.rsplit_once(marker).ok_or_else(|| {
            Error::Invalid(format!(
                "curl output without status: {}",
                bounded_text(out.as_bytes(), 500)
            ))
        })?;
        let status = status
            .trim()
            .parse()
            .map_err(|_| Error::Invalid(format!("curl status {status:?}")))?;
        Ok(HttpReply {
            status,
            body: body.to_owned(),
        })
    }

    /// Runs `pxe-server <args> --api <url> --data-dir <data dir>` inside the namespace (the
    /// operator CLI, e.g. `["machine", "list"]`); returns its stdout, fails unless it exits 0.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        self.ns.exec_ok(
            &NsCommand::new(&self.binary)
                .args(args)
                .args(["--api", &self.url, "--data-dir"])
                .arg(&self.data_dir)
                .env("NO_COLOR", "1"),
            CALL_TIMEOUT,
        )
    }

    /// Every machine, via `pxe-server machine list --json` run inside the namespace.
    pub fn machines(&self) -> Result<Vec<MachineView>> {
        let out = self.ns.exec_ok(
            &NsCommand::new(&self.binary)
                .args([
                    "machine",
                    "list",
                    "--json",
                    "--api",
                    &self.url,
                    "--data-dir",
                ])
                .arg(&self.data_dir),
            CALL_TIMEOUT,
        )?;
        serde_json::from_str(&out).map_err(|source| Error::Decode {
            what: "`pxe-server machine list --json` output".into(),
            text: bounded_text(out.as_bytes(), 2000),
            source,
        })
    }

    /// One machine with its hardware report, via `pxe-server machine show ID --json` (the list
    /// leaves hardware reports out). `id` may be the id, the serial or a MAC.
    pub fn machine(&self, id: &str) -> Result<MachineView> {
        let out = self.ns.exec_ok(
            &NsCommand::new(&self.binary)
                .args([
                    "machine",
                    "show",
                    id,
                    "--json",
                    "--api",
                    &self.url,
                    "--data-dir",
                ])
                .arg(&self.data_dir),
            CALL_TIMEOUT,
        )?;
        serde_json::from_str(&out).map_err(|source| Error::Decode {
            what: "`pxe-server machine show --json` output".into(),
            text: bounded_text(out.as_bytes(), 2000),
            source,
        })
    }

    /// Polls [`Appliance::machines`] until a machine with this SMBIOS serial is in `state`.
    /// Returns it in full (with [`Appliance::machine`]) and the time the wait took. With `vm`, fails as soon as QEMU exits or its
    /// console shows a dead end, and error messages include its console.
    pub fn wait_for_machine(
        &self,
        serial: &str,
        state: MachineState,
        timeout: Duration,
        vm: Option<&Vm<'_>>,
    ) -> Result<(MachineView, Duration)> {
        let start = Instant::now();
        let mut last: Vec<MachineView> = Vec::new();
        let mut last_err: Option<String> = None;
        let mut stopped: Option<String> = None;
        let found = poll_until(timeout, Duration::from_secs(1), || {
            if let Some(st) = self.ns.try_wait(self.proc) {
                stopped = Some(format!("pxe-server exited ({st})"));
                return Some(None);
            }
            if let Some(a) = vm.and_then(|v| v.failed()) {
                stopped = Some(format!("{}: {}", a.what, a.why));
                return Some(None);
            }
            match self.machines() {
                Ok(ms) => {
                    let hit = ms
                        .iter()
                        .find(|m| m.serial.as_deref() == Some(serial) && m.state == state)
                        .cloned();
                    last = ms;
                    hit.map(Some)
                }
                Err(e) => {
                    last_err = Some(e.to_string());
                    None
                }
            }
        });
        let what = format!("machine with serial {serial} in state {state}");
        let detail = || {
            let seen: Vec<String> = last
                .iter()
                .map(|m| {
                    format!(
                        "{} serial={:?} state={} macs={:?}",
                        m.id, m.serial, m.state, m.macs
                    )
                })
                .collect();
            let mut d = format!("--- machines last seen: {seen:?}\n");
            if let Some(e) = &last_err {
                d.push_str(&format!("--- last CLI error: {e}\n"));
            }
            d.push_str(&self.report());
            if let Some(vm) = vm {
                d.push('\n');
                d.push_str(&vm.report());
            }
            d
        };
        match found {
            Some(Some(m)) => {
                let took = start.elapsed();
                Ok((self.machine(&m.id)?, took))
            }
            Some(None) => Err(Error::ExitedEarly {
                what: format!("the scenario (while waiting for {what})"),
                status: stopped.unwrap_or_default(),
                detail: detail(),
            }),
            None => Err(Error::Timeout {
                what,
                after: timeout,
                detail: detail(),
            }),
        }
    }

    /// A machine's history, oldest first, via `pxe-server machine history ID --json`.
    pub fn history(&self, id: &str) -> Result<Vec<EventView>> {
        let out = self.cli(&["machine", "history", id, "--json"])?;
        serde_json::from_str(&out).map_err(|source| Error::Decode {
            what: "`pxe-server machine history --json` output".into(),
            text: bounded_text(out.as_bytes(), 2000),
            source,
        })
    }

    /// The last `n` lines of the appliance's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        tail_lines(&String::from_utf8_lossy(&text), n)
    }

    /// The log tail, for failure messages.
    pub fn report(&self) -> String {
        format!(
            "--- pxe-server log tail ({}):\n{}",
            self.log.display(),
            self.log_tail(TAIL_LINES)
        )
    }

    /// Stops the appliance now.
    pub fn stop(&self) -> Option<std::process::ExitStatus> {
        self.ns.stop(self.proc)
    }
}

impl Drop for Appliance<'_> {
    fn drop(&mut self) {
        let _ = self.ns.stop(self.proc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_mode_arguments_bind_only_namespace_addresses() {
        let cfg = ApplianceConfig::full().binary(Path::new("/x/pxe-server"));
        let a = cfg.serve_args(Path::new("/d"));
        let pairs: Vec<(&str, &str)> = a
            .windows(2)
            .map(|w| (w[0].as_str(), w[1].as_str()))
            .collect();
        for want in [
            ("--interface", "br0"),
            ("--dhcp-mode", "full"),
            ("--dhcp-range", "10.99.0.100-10.99.0.199"),
            ("--http", "10.99.0.1:8080"),
            ("--public-url", "http://10.99.0.1:8080"),
            ("--tftp", "10.99.0.1:69"),
            ("--data-dir", "/d"),
        ] {
            assert!(pairs.contains(&want), "{want:?} in {a:?}");
        }
        assert_eq!(a.first().map(String::as_str), Some("serve"));

        let h = ApplianceConfig::http_only(Path::new("/assets")).serve_args(Path::new("/d"));
        assert!(
            h.windows(2)
                .any(|w| w[0] == "--assets" && w[1] == "/assets")
        );
        assert!(
            !h.iter()
                .any(|x| x == "--dhcp-mode" || x == "--tftp" || x == "--interface")
        );

        let x = ApplianceConfig::full()
            .assets(Path::new("/w/assets"))
            .extra_args(["--flag", "1"])
            .serve_args(Path::new("/d"));
        assert!(
            x.windows(2)
                .any(|w| w[0] == "--assets" && w[1] == "/w/assets")
        );
        assert_eq!(&x[x.len() - 2..], ["--flag", "1"]);
    }
}
