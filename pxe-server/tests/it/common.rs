//! Test harness: an in-process appliance on 127.0.0.1:0 and a blocking HTTP client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use pxe_server::config::FileConfig;
use pxe_server::http::AppState;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) base: String,
    pub(crate) op: String,
    pub(crate) state: Arc<AppState>,
    pub(crate) root: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    shutdown: CancellationToken,
    agent: ureq::Agent,
}

impl Server {
    pub(crate) fn start() -> Server {
        Self::start_with(FileConfig::default())
    }

    /// Starts with `extra` config keys (data dir, assets and address are the harness's).
    pub(crate) fn start_with(extra: FileConfig) -> Server {
        let root = tempfile::tempdir().unwrap();
        let assets = root.path().join("assets");
        std::fs::create_dir_all(assets.join("snapshots/deb12")).unwrap();
        std::fs::write(assets.join("vmlinuz"), b"0123456789abcdef").unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = FileConfig {
            data_dir: Some(root.path().join("data")),
            http: Some(addr),
            assets: Some(assets),
            ..extra
        }
        .validate()
        .unwrap();
        let state = rt.block_on(pxe_server::app::prepare(&cfg)).unwrap();
        let shutdown = CancellationToken::new();
        let s2 = shutdown.clone();
        rt.spawn(pxe_server::http::serve(
            listener,
            state.clone(),
            async move { s2.cancelled().await },
        ));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Server {
            addr,
            base: format!("http://{addr}"),
            op: state.operator_token.clone(),
            state,
            root,
            rt,
            shutdown,
            agent,
        }
    }

    /// `(status, body)`; `auth` is the raw Authorization header value.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let resp = match method {
            "GET" => {
                let mut r = self.agent.get(&url);
                if let Some(a) = auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            _ => {
                let mut r = self
                    .agent
                    .post(&url)
                    .header("Content-Type", "application/json");
                if let Some(a) = auth {
                    r = r.header("Authorization", a);
                }
                r.send(body.unwrap_or(""))
            }
        };
        let mut resp = resp.unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, text)
    }

    pub(crate) fn op_get(&self, path: &str) -> (u16, String) {
        let a = format!("Bearer {}", self.op);
        self.request("GET", path, Some(&a), None)
    }

    pub(crate) fn op_post(&self, path: &str, body: &str) -> (u16, String) {
        let a = format!("Bearer {}", self.op);
        self.request("POST", path, Some(&a), Some(body))
    }

    pub(crate) fn agent_get(&self, token: &str, path: &str) -> (u16, String) {
        let a = format!("Bearer {token}");
        self.request("GET", path, Some(&a), None)
    }

    pub(crate) fn agent_post(&self, token: &str, path: &str, body: &str) -> (u16, String) {
        let a = format!("Bearer {token}");
        self.request("POST", path, Some(&a), Some(body))
    }

    /// Fetches the boot script for `mac` and returns it with the agent token it carries.
    /// Runs `pxe-server machine ARGS` against this server (its API and data directory, for
    /// the operator token): success, stdout, stderr.
    pub(crate) fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pxe-server"))
            .arg("machine")
            .args(args)
            .args(["--api", &self.base])
            .arg("--data-dir")
            .arg(self.root.path().join("data"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub(crate) fn boot(&self, mac: &str) -> (String, Option<String>) {
        let (st, script) = self.request(
            "GET",
            &format!("/boot.ipxe?mac={mac}&platform=pcbios"),
            None,
            None,
        );
        assert_eq!(st, 200, "{script}");
        let tok = script
            .split_whitespace()
            .find_map(|w| w.strip_prefix("rackhand.token="))
            .map(str::to_owned);
        (script, tok)
    }

    /// Netboots `macs[0]` and registers with `serial`; returns (status, reply, token).
    pub(crate) fn boot_and_register(&self, serial: &str, macs: &[&str]) -> (u16, Value, String) {
        let (_, tok) = self.boot(macs[0]);
        let tok = tok.expect("discovery script carries a token");
        let (st, body) = self.agent_post(
            &tok,
            "/api/v1/agent/register",
            &report(serial, macs).to_string(),
        );
        (st, serde_json::from_str(&body).unwrap_or(Value::Null), tok)
    }

    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub(crate) fn digest(&self) -> String {
        self.rt.block_on(self.state.store.content_digest()).unwrap()
    }

    /// Raw request bytes over TCP (for paths no client library would send as-is).
    pub(crate) fn raw(&self, request: &[u8]) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let status = std::str::from_utf8(out.get(9..12).unwrap_or(b"000"))
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, out)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A hardware report; the system UUID is derived from the first MAC, so it is unique per
/// machine.
pub(crate) fn report(serial: &str, macs: &[&str]) -> Value {
    let uuid = format!(
        "5e1ec7ed-0000-4000-8000-{}",
        macs[0].replace([':', '-'], "")
    );
    json!({
        "hardware": {
            "dmi": { "system_serial": serial, "system_uuid": uuid },
            "nics": macs.iter().enumerate().map(|(i, m)| json!({ "name": format!("eth{i}"), "mac": m })).collect::<Vec<_>>(),
            "disks": [{ "name": "vda", "size_bytes": 8589934592u64 }],
            "memory": { "total_bytes": 1073741824u64 },
        }
    })
}

pub(crate) fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}
