//! SIGKILL during a burst of registrations and transitions: after a restart, every change that
//! got a 2xx is there, and the appliance serves again within 5 s.

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pxe_api::MachineView;
use pxe_api::machine::EventView;
use serde_json::Value;

use crate::common::report;

struct Appliance {
    child: Child,
}

impl Drop for Appliance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &std::path::Path, assets: &std::path::Path, port: u16) -> Appliance {
    let child = Command::new(env!("CARGO_BIN_EXE_pxe-server"))
        .args(["serve", "--http", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .arg("--assets")
        .arg(assets)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Appliance { child }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn wait_healthy(base: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    let a = agent();
    while t0.elapsed() < limit {
        if let Ok(r) = a.get(&format!("{base}/healthz")).call()
            && r.status() == 200
        {
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("appliance not serving within {limit:?}");
}

enum Acked {
    Registered(String),
    Transition {
        id: String,
        version: i64,
        state: String,
    },
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let assets = root.path().join("assets");
    std::fs::create_dir_all(assets.join("snapshots/deb12")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut app = start(&data, &assets, port);
    wait_healthy(&base, Duration::from_secs(30));
    let op = std::fs::read_to_string(data.join("operator.token"))
        .unwrap()
        .trim()
        .to_owned();

    let acked: Mutex<Vec<Acked>> = Mutex::new(Vec::new());
    let attempts = AtomicUsize::new(0);
    let dead = AtomicBool::new(false);
    const MAX_OPS: usize = 1000;
    std::thread::scope(|scope| {
        for w in 0..4usize {
            let (acked, attempts, dead, base, op) = (&acked, &attempts, &dead, &base, &op);
            scope.spawn(move || {
                let a = agent();
                let auth = format!("Bearer {op}");
                let mut mine: Vec<String> = Vec::new();
                let mut i = 0usize;
                let deadline = Instant::now() + Duration::from_secs(60);
                while !dead.load(Ordering::SeqCst)
                    && attempts.fetch_add(1, Ordering::SeqCst) < MAX_OPS
                    && Instant::now() < deadline
                {
                    i += 1;
                    if mine.is_empty() || i.is_multiple_of(3) {
                        let mac = format!("52:54:{w:02x}:00:{:02x}:{:02x}", i / 256, i % 256);
                        let Ok(mut r) = a.get(&format!("{base}/boot.ipxe?mac={mac}")).call() else {
                            break;
                        };
                        let script = r.body_mut().read_to_string().unwrap_or_default();
                        let Some(tok) = script
                            .split_whitespace()
                            .find_map(|x| x.strip_prefix("rackhand.token="))
                        else {
                            continue;
                        };
                        let body = report(&format!("CRASH-{w}-{i}"), &[&mac]).to_string();
                        let Ok(mut r) = a
                            .post(&format!("{base}/api/v1/agent/register"))
                            .header("Authorization", &format!("Bearer {tok}"))
                            .header("Content-Type", "application/json")
                            .send(body.as_str())
                        else {
                            break;
                        };
                        if r.status().is_success() {
                            let v: Value =
                                serde_json::from_str(&r.body_mut().read_to_string().unwrap())
                                    .unwrap();
                            let id = v["machine_id"].as_str().unwrap().to_owned();
                            mine.push(id.clone());
                            acked.lock().unwrap().push(Acked::Registered(id));
                        }
                    } else {
                        let id = &mine[i % mine.len()];
                        let (action, body) = [
                            ("install", r#"{"snapshot":"deb12"}"#),
                            ("in-use", "{}"),
                            ("recycle", "{}"),
                            ("broken", r#"{"reason":"crash test"}"#),
                        ][i % 4];
                        let Ok(mut r) = a
                            .post(&format!("{base}/api/v1/machines/{id}/{action}"))
                            .header("Authorization", &auth)
                            .header("Content-Type", "application/json")
                            .send(body)
                        else {
                            break;
                        };
                        if r.status().is_success() {
                            let m: MachineView =
                                serde_json::from_str(&r.body_mut().read_to_string().unwrap())
                                    .unwrap();
                            acked.lock().unwrap().push(Acked::Transition {
                                id: m.id,
                                version: m.version,
                                state: m.state.to_string(),
                            });
                        }
                    }
                }
            });
        }
        // Kill mid-burst, once a good number of writes has been acknowledged.
        let t0 = Instant::now();
        while acked.lock().unwrap().len() < 250 && t0.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        app.child.kill().unwrap(); // SIGKILL
        let _ = app.child.wait();
        dead.store(true, Ordering::SeqCst);
    });
    let acked = acked.into_inner().unwrap();
    assert!(
        acked.len() >= 250,
        "only {} writes acknowledged before the kill",
        acked.len()
    );

    let _app = start(&data, &assets, port);
    let restart = wait_healthy(&base, Duration::from_secs(30));
    assert!(restart < Duration::from_secs(5), "restart took {restart:?}");

    let a = agent();
    let auth = format!("Bearer {op}");
    let get = |path: &str| -> String {
        let mut r = a
            .get(&format!("{base}{path}"))
            .header("Authorization", &auth)
            .call()
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.body_mut().read_to_string().unwrap()
    };
    let machines: Vec<MachineView> = serde_json::from_str(&get("/api/v1/machines")).unwrap();
    let mut checked = 0;
    for ack in &acked {
        match ack {
            Acked::Registered(id) => {
                assert!(machines.iter().any(|m| &m.id == id), "registered {id} lost");
            }
            Acked::Transition { id, version, state } => {
                let m = machines.iter().find(|m| &m.id == id).expect("machine lost");
                assert!(
                    m.version >= *version,
                    "{id}: version {} < acked {version}",
                    m.version
                );
                let hist: Vec<EventView> =
                    serde_json::from_str(&get(&format!("/api/v1/machines/{id}/history"))).unwrap();
                let transitions: Vec<&EventView> =
                    hist.iter().filter(|e| e.kind == "transition").collect();
                let nth = usize::try_from(*version - 2).unwrap();
                let e = transitions
                    .get(nth)
                    .unwrap_or_else(|| panic!("{id}: transition to v{version} lost"));
                assert_eq!(
                    e.to_state.as_deref(),
                    Some(state.as_str()),
                    "{id} v{version}"
                );
            }
        }
        checked += 1;
    }
    eprintln!(
        "crash test: {checked} acknowledged writes verified after SIGKILL; restart to serving in {restart:?}"
    );
}
