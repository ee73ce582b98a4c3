//! The agent loop over real HTTP on 127.0.0.1: the production `HttpTransport` (ureq) against a
//! small `std::net` server that speaks the appliance's agent contract, including being down at
//! first, failing with 503, answering with unknown orders, and revoking the token.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pxe_api::agent::{Outcome, ProgressReport, RegisterRequest, ResultReport};
use pxe_api::hardware::{Disk, Nic};
use pxe_api::{HardwareReport, MachineState, routes};
use pxeimage::agent::{
    self, Api, Finish, RebootReason, Request, Response, Timing, Transport, TransportError,
    TransportErrorKind,
};
use pxeimage::boot::SystemEnv;
use pxeimage::client::{HttpTransport, Timeouts};
use pxeimage::cmdline;
use pxeimage::install::LiveInstaller;

const TOKEN: &str = "f00dfeedf00dfeedf00dfeedf00dfeedf00dfeedf00dfeedf00dfeedf00dfeed";
/// Every test run is bounded by this.
const TEST_DEADLINE: Duration = Duration::from_secs(30);

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Vec<u8>,
    at: Instant,
}

/// The server's answer; `last` stops the server after sending it.
struct Reply {
    status: u16,
    body: String,
    last: bool,
}

fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        body: body.to_owned(),
        last: false,
    }
}

fn error_body(code: &str) -> String {
    format!(r#"{{"error":{{"code":"{code}","message":"test"}}}}"#)
}

/// Reads one HTTP/1.1 request (headers, then `Content-Length` bytes of body).
fn read_request(stream: &TcpStream) -> Option<Seen> {
    let mut r = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut len = 0usize;
    let mut authorization = None;
    for _ in 0..100 {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse().ok()?,
            "authorization" => authorization = Some(v.trim().to_owned()),
            _ => {}
        }
    }
    let mut body = vec![0u8; len.min(1 << 20)];
    r.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        path,
        authorization,
        body,
        at: Instant::now(),
    })
}

struct TestServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: JoinHandle<()>,
    up_at: Arc<Mutex<Option<Instant>>>,
}

/// Starts a server on a free loopback port that only starts listening after `down_for` (so
/// connections are refused until then), and answers with `handler` until it returns a `last`
/// reply or the test deadline passes.
fn start_server(
    down_for: Duration,
    mut handler: impl FnMut(&Seen) -> Reply + Send + 'static,
) -> TestServer {
    let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = probe.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let up_at = Arc::new(Mutex::new(None));
    let listener = if down_for.is_zero() {
        Some(probe)
    } else {
        drop(probe);
        None
    };
    let (seen2, up2) = (seen.clone(), up_at.clone());
    let thread = std::thread::spawn(move || {
        let deadline = Instant::now() + TEST_DEADLINE;
        std::thread::sleep(down_for);
        let listener = listener.unwrap_or_else(|| {
            // re-bind the port we probed (std sets SO_REUSEADDR); retry briefly
            let mut last = None;
            for _ in 0..50 {
                match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
                    Ok(l) => return l,
                    Err(e) => last = Some(e),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("cannot re-bind port {port}: {last:?}");
        });
        *up2.lock().unwrap() = Some(Instant::now());
        listener.set_nonblocking(true).unwrap();
        while Instant::now() < deadline {
            let stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(e) => panic!("accept: {e}"),
            };
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let Some(req) = read_request(&stream) else {
                continue;
            };
            let r = handler(&req);
            seen2.lock().unwrap().push(req);
            let reason = if r.status < 300 { "OK" } else { "Error" };
            let msg = format!(
                "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                r.status,
                r.body.len(),
                r.body
            );
            let mut s = &stream;
            let _ = s.write_all(msg.as_bytes());
            let _ = s.flush();
            if r.last {
                return;
            }
        }
    });
    TestServer {
        port,
        seen,
        thread,
        up_at,
    }
}

/// The real transport, counting how each call ended (the agent only sees the results).
struct Counting {
    inner: HttpTransport,
    errors: Arc<Mutex<Vec<TransportErrorKind>>>,
}

impl Transport for Counting {
    fn send(&mut self, req: &Request) -> Result<Response, TransportError> {
        let r = self.inner.send(req);
        if let Err(e) = &r {
            self.errors.lock().unwrap().push(e.kind);
        }
        r
    }
}

fn fast_timing() -> Timing {
    Timing {
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(200),
        wait_unit: Duration::from_millis(20),
        wait_max_units: 10,
        state_reboot_delay: Duration::from_millis(10),
        max_rejections: 3,
    }
}

fn report() -> HardwareReport {
    HardwareReport {
        nics: vec![Nic {
            name: "eth0".into(),
            mac: "52:54:00:99:00:01".parse().unwrap(),
            driver: Some("virtio_net".into()),
            link_up: Some(true),
            speed_mbps: None,
            pci_address: Some("0000:00:03.0".into()),
        }],
        disks: vec![Disk {
            name: "vda".into(),
            size_bytes: 8 << 30,
            logical_block_size: Some(512),
            physical_block_size: Some(512),
            rotational: Some(false),
            removable: Some(false),
            read_only: Some(false),
            model: None,
            serial: Some("disk-1".into()),
            wwn: None,
            transport: Some("virtio".into()),
            discard: Some(true),
        }],
        boot_mac: Some("52:54:00:99:00:01".parse().unwrap()),
        agent_version: Some("pxeimage test".into()),
        ..HardwareReport::default()
    }
}

/// Runs the agent against `port` in a thread; returns how it finished, bounded in time.
fn run_agent(port: u16, hw: HardwareReport) -> (Finish, Vec<TransportErrorKind>) {
    let cfg = cmdline::parse(&format!(
        "rackhand.url=http://127.0.0.1:{port} rackhand.token={TOKEN} \
         BOOTIF=01-52-54-00-99-00-01 ip=10.99.0.100::10.99.0.1:255.255.255.0::::"
    ))
    .unwrap();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let transport = Counting {
        inner: HttpTransport::new(
            cfg.url.clone(),
            &cfg.token,
            Timeouts {
                connect: Duration::from_secs(2),
                total: Duration::from_secs(5),
            },
        ),
        errors: errors.clone(),
    };
    // No trusted keys: an install order must fail before anything is fetched.
    let keys = tempfile::tempdir().unwrap();
    let mut executor =
        LiveInstaller::with_keys_dir(cfg.url.clone(), &cfg.token, keys.path().to_owned());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let f = agent::run(
            &mut Api::new(transport),
            &mut SystemEnv::new(),
            &fast_timing(),
            &hw,
            &mut executor,
        );
        drop(keys);
        let _ = tx.send(f);
    });
    let finish = rx
        .recv_timeout(TEST_DEADLINE)
        .expect("the agent loop did not finish in time");
    let errors = errors.lock().unwrap().clone();
    (finish, errors)
}

const REGISTERED: &str = r#"{"machine_id":"m-00000000000000aa","identity_key":"serial:S1","identity_kind":"serial","state":"available","created":true}"#;

#[test]
fn survives_an_outage_reports_unknown_orders_and_reboots_on_revocation() {
    let mut registers = 0;
    let mut orders = 0;
    let server = start_server(Duration::from_millis(800), move |req| {
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", routes::AGENT_REGISTER) => {
                registers += 1;
                if registers <= 2 {
                    reply(503, &error_body("starting"))
                } else {
                    reply(201, REGISTERED)
                }
            }
            ("POST", routes::AGENT_PROGRESS | routes::AGENT_RESULT) => reply(200, "{}"),
            ("GET", routes::AGENT_ORDERS) => {
                orders += 1;
                match orders {
                    1 => reply(200, r#"{"order":"dance","tempo":120}"#),
                    2 => reply(200, r#"{"order":"wait","retry_after_secs":1}"#),
                    3 => reply(
                        200,
                        r#"{"order":"install","snapshot":"debian-12","url":"/assets/snapshots/debian-12"}"#,
                    ),
                    _ => Reply {
                        status: 401,
                        body: error_body("token_revoked"),
                        last: true,
                    },
                }
            }
            _ => reply(404, &error_body("not_found")),
        }
    });
    let hw = report();
    let started = Instant::now();
    let (finish, errors) = run_agent(server.port, hw.clone());
    server.thread.join().unwrap();
    let seen = server.seen.lock().unwrap().clone();
    let up_at = server.up_at.lock().unwrap().unwrap();

    assert_eq!(finish, Finish::Reboot(RebootReason::TokenRevoked));
    // the appliance was down at first: the agent saw refused connections and kept trying
    assert!(
        errors.contains(&TransportErrorKind::Connect),
        "no connection failures seen: {errors:?}"
    );
    assert!(up_at.duration_since(started) >= Duration::from_millis(700));
    assert!(seen.first().unwrap().at >= up_at);

    // every call carried the token
    for s in &seen {
        assert_eq!(
            s.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{} {}",
            s.method,
            s.path
        );
    }

    let calls: Vec<(&str, &str)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str()))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("POST", routes::AGENT_REGISTER),
            ("POST", routes::AGENT_REGISTER),
            ("POST", routes::AGENT_REGISTER),
            ("POST", routes::AGENT_PROGRESS),
            ("GET", routes::AGENT_ORDERS),
            ("POST", routes::AGENT_RESULT),
            ("GET", routes::AGENT_ORDERS),
            ("GET", routes::AGENT_ORDERS),
            ("POST", routes::AGENT_RESULT),
            ("GET", routes::AGENT_ORDERS),
        ]
    );

    // the register body is exactly the hardware report
    for s in seen.iter().filter(|s| s.path == routes::AGENT_REGISTER) {
        let body: RegisterRequest = serde_json::from_slice(&s.body).unwrap();
        assert_eq!(body.hardware, hw);
    }
    let progress: ProgressReport = serde_json::from_slice(&seen[3].body).unwrap();
    assert_eq!(progress.stage, "register");

    let unknown: ResultReport = serde_json::from_slice(&seen[5].body).unwrap();
    assert_eq!(unknown.order, "dance");
    assert_eq!(unknown.outcome, Outcome::Unsupported);
    assert_eq!(unknown.code.as_deref(), Some("unknown_order"));
    let install: ResultReport = serde_json::from_slice(&seen[8].body).unwrap();
    assert_eq!(install.order, "install");
    assert_eq!(install.outcome, Outcome::Failure);
    assert_eq!(install.code.as_deref(), Some("no_trusted_keys"));

    // `wait` (1 unit of 20 ms, ±20 %) was honoured before the next poll
    let gap = seen[7].at.duration_since(seen[6].at);
    assert!(
        gap >= Duration::from_millis(16),
        "wait not honoured: {gap:?}"
    );
}

#[test]
fn a_conflicting_machine_is_rebooted_without_polling() {
    let server = start_server(Duration::ZERO, |req| Reply {
        status: if req.path == routes::AGENT_REGISTER {
            200
        } else {
            500
        },
        body: REGISTERED.replace("available", "conflict"),
        last: true,
    });
    let (finish, _) = run_agent(server.port, report());
    server.thread.join().unwrap();
    assert_eq!(
        finish,
        Finish::Reboot(RebootReason::StateNotServed(MachineState::Conflict))
    );
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, routes::AGENT_REGISTER);
}

#[test]
fn repeated_refusals_end_in_a_reboot() {
    let mut n = 0;
    let server = start_server(Duration::ZERO, move |_| {
        n += 1;
        Reply {
            status: 403,
            body: error_body("forbidden"),
            last: n == 3,
        }
    });
    let (finish, _) = run_agent(server.port, report());
    server.thread.join().unwrap();
    assert_eq!(
        finish,
        Finish::Reboot(RebootReason::Rejected {
            status: 403,
            code: Some("forbidden".into())
        })
    );
    assert_eq!(server.seen.lock().unwrap().len(), 3);
}

#[test]
fn a_silent_server_times_out() {
    // accepts connections (the kernel's backlog) but never answers
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let cfg = cmdline::parse(&format!(
        "rackhand.url=http://127.0.0.1:{port} rackhand.token={TOKEN} \
         BOOTIF=01-52-54-00-99-00-01 ip=10.99.0.100::10.99.0.1:255.255.255.0::::"
    ))
    .unwrap();
    let mut t = HttpTransport::new(
        cfg.url,
        &cfg.token,
        Timeouts {
            connect: Duration::from_millis(300),
            total: Duration::from_millis(300),
        },
    );
    let started = Instant::now();
    let r = t.send(&Request {
        method: agent::Method::Get,
        path: routes::AGENT_ORDERS,
        body: None,
    });
    assert_eq!(r.map_err(|e| e.kind), Err(TransportErrorKind::Timeout));
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(listener);
}
