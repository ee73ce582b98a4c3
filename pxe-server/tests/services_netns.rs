//! Acceptance tests of the real `pxe-server serve` binary's boot network services (DHCP,
//! proxyDHCP and the lease-bound agent token on `/boot.ipxe`; TFTP is in `tftp_netns.rs`)
//! inside two network namespaces the tests create, joined by one veth pair (10.99.0.0/24
//! exists only there).
//!
//! Needs root (namespaces); without it each test prints why and returns. Namespaces and
//! processes are removed on success, failure and panic (drop guards; processes are killed by
//! PID).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod services;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{Message, MessageType};
use pxe_api::Mac;
use pxe_server::dhcp::{Lease, LeaseState, LeaseStore};
use pxe_server::store::Store;
use services::appliance::{self, Dirs, Opts, SERVER_IP};
use services::dhcp::{self, Client, Firmware, bcast, bootfile, mac_for, raw_opt, reply_mac};
use services::netns::{CLI_IF, Netns, Proc, is_root};
use services::{Rng, http_get};

const BIN: &str = env!("CARGO_BIN_EXE_pxe-server");
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 250);

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipping: creating network namespaces needs root");
            return;
        }
    };
}

fn netns(tag: &str) -> Netns {
    Netns::create(tag, "10.99.0.1/24", "10.99.0.250/24")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Every lease in the store of `data_dir` (opened while the server is stopped).
fn stored_leases(data_dir: &Path) -> Vec<Lease> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = Store::open(data_dir).await.expect("open the store");
        let rows = store.load_all().await.expect("load leases");
        store.close().await;
        rows
    })
}

/// DORA that must succeed (the server may still be starting: up to 30 s).
fn dora_ok(c: &Client, fw: Firmware, mac: Mac, xid: u32, dirs: &Dirs) -> (Message, Message) {
    c.dora(fw, mac, xid, SERVER_IP, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n--- server log\n{}", dirs.log_tail(4000)))
}

// ------------------------------------------------------------------ kill -9 during DORA

/// Distinct MACs driven through DORA (below the unknown-client share of the 240-address range).
const POOL: u32 = 96;
/// DORAs kept in flight at once, so that the server is mostly busy persisting.
const IN_FLIGHT: usize = 12;
const MIN_KILLS: u32 = 24;
const MAX_KILLS: u32 = 60;
const KILL_TEST_BOUND: Duration = Duration::from_secs(240);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Discover,
    Request(Ipv4Addr),
}

#[derive(Debug)]
struct Flight {
    fw: Firmware,
    xid: u32,
    stage: Stage,
    sent: Option<Instant>,
    tries: u32,
    /// Wall-clock ms when the first REQUEST of this DORA left (for the window check).
    requested_at_ms: Option<i64>,
}

/// What the client saw, across every server start.
#[derive(Debug, Default)]
struct Ledger {
    /// MAC → address of its last DHCPACK.
    acked: HashMap<Mac, Ipv4Addr>,
    /// address → MAC it was ACKed to.
    holder: HashMap<Ipv4Addr, Mac>,
    acks: u64,
    offers: u64,
    violations: Vec<String>,
}

impl Ledger {
    /// An OFFER or ACK of `ip` to `mac` must not hand out another MAC's acknowledged address,
    /// nor move `mac` away from its own.
    fn check(&mut self, what: &str, mac: Mac, ip: Ipv4Addr, round: u32) {
        if let Some(&other) = self.holder.get(&ip)
            && other != mac
        {
            self.violations.push(format!(
                "round {round}: {what} of {ip} to {mac}, but {ip} was ACKed to {other}"
            ));
        }
        if let Some(&mine) = self.acked.get(&mac)
            && mine != ip
        {
            self.violations.push(format!(
                "round {round}: {what} of {ip} to {mac}, which holds an ACKed lease on {mine}"
            ));
        }
    }

    fn ack(&mut self, mac: Mac, ip: Ipv4Addr, round: u32) {
        self.check("ACK", mac, ip, round);
        self.acked.insert(mac, ip);
        self.holder.insert(ip, mac);
        self.acks += 1;
    }
}

/// One server lifetime: DORAs from random pool MACs until the SIGKILL.
struct Round<'a> {
    client: &'a Client,
    ledger: &'a mut Ledger,
    rng: &'a mut Rng,
    n: u32,
    flights: HashMap<Mac, Flight>,
    by_xid: HashMap<u32, Mac>,
    next_xid: u32,
    kill_at: Option<Instant>,
}

impl Round<'_> {
    fn new_xid(&mut self) -> u32 {
        self.next_xid = self.next_xid.wrapping_add(1);
        (self.n << 20) | (self.next_xid & 0xf_ffff)
    }

    fn top_up(&mut self) {
        let mut guard = 0;
        while self.flights.len() < IN_FLIGHT && guard < 1000 {
            guard += 1;
            let mac = mac_for(self.rng.below(u64::from(POOL)) as u32);
            if self.flights.contains_key(&mac) {
                continue;
            }
            let fw = if mac.0[5].is_multiple_of(2) {
                Firmware::UefiPxe
            } else {
                Firmware::BiosIpxe
            };
            let xid = self.new_xid();
            self.by_xid.insert(xid, mac);
            self.flights.insert(
                mac,
                Flight {
                    fw,
                    xid,
                    stage: Stage::Discover,
                    sent: None,
                    tries: 0,
                    requested_at_ms: None,
                },
            );
        }
    }

    fn packet(mac: Mac, f: &Flight) -> Vec<u8> {
        match f.stage {
            Stage::Discover => dhcp::discover(f.fw, mac, f.xid),
            Stage::Request(ip) => dhcp::request(f.fw, mac, f.xid, ip, SERVER_IP),
        }
    }

    /// (Re)transmits what is due; a DORA stuck for 10 tries starts over.
    fn transmit(&mut self) {
        let macs: Vec<Mac> = self.flights.keys().copied().collect();
        for mac in macs {
            let due = self.flights[&mac]
                .sent
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(300));
            if !due {
                continue;
            }
            if self.flights[&mac].tries >= 10 {
                self.restart(mac);
            }
            let f = self.flights.get_mut(&mac).expect("flight");
            f.tries += 1;
            f.sent = Some(Instant::now());
            if matches!(f.stage, Stage::Request(_)) && f.requested_at_ms.is_none() {
                f.requested_at_ms = Some(now_ms());
            }
            let pkt = Self::packet(mac, f);
            self.client.send(&pkt, bcast());
        }
    }

    /// Runs one DORA alone (nothing else in flight) for a pool MAC not in flight. Returns the
    /// MAC, its REQUEST and when it would be sent; the caller sends it.
    fn lone_offer(&mut self) -> Option<(Mac, Vec<u8>)> {
        let mac = loop {
            let m = mac_for(self.rng.below(u64::from(POOL)) as u32);
            if !self.flights.contains_key(&m) {
                break m;
            }
        };
        let xid = self.new_xid();
        let (offer, _) = self.client.exchange(
            &dhcp::discover(Firmware::UefiPxe, mac, xid),
            bcast(),
            MessageType::Offer,
            3,
            Duration::from_millis(300),
        )?;
        self.ledger.offers += 1;
        self.ledger.check("OFFER", mac, offer.yiaddr(), self.n);
        let xid = self.new_xid();
        let req = dhcp::request(Firmware::UefiPxe, mac, xid, offer.yiaddr(), SERVER_IP);
        self.by_xid.insert(xid, mac);
        self.flights.insert(
            mac,
            Flight {
                fw: Firmware::UefiPxe,
                xid,
                stage: Stage::Request(offer.yiaddr()),
                sent: Some(Instant::now()),
                tries: 1,
                requested_at_ms: Some(now_ms()),
            },
        );
        Some((mac, req))
    }

    /// Waits up to `limit` for the ACK to `mac`'s pending REQUEST, handling other replies.
    fn await_ack(&mut self, mac: Mac, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while let Some((m, _)) = self
            .client
            .recv(until.saturating_duration_since(Instant::now()))
        {
            self.handle(&m, false);
            if !self.flights.contains_key(&mac) {
                return true;
            }
        }
        false
    }

    /// The targeted kill: let the server go idle, time a few lone REQUEST→ACK round trips,
    /// then send one more REQUEST and SIGKILL a fraction of that round trip later, drawn from
    /// `aim` (which earlier rounds narrow down to the lease write and the ACK). Returns the
    /// lone MAC and the fraction used.
    fn targeted_kill(&mut self, srv: &mut Proc, aim: KillAim) -> Option<(Mac, f64)> {
        while let Some((m, _)) = self.client.recv(Duration::from_millis(30)) {
            self.handle(&m, false);
        }
        let mut rtts = Vec::new();
        for _ in 0..3 {
            if let Some((mac, req)) = self.lone_offer() {
                let t = Instant::now();
                self.client.send(&req, bcast());
                if self.await_ack(mac, Duration::from_millis(500)) {
                    rtts.push(t.elapsed());
                }
            }
        }
        rtts.sort();
        let rtt = rtts
            .get(rtts.len() / 2)
            .copied()
            .unwrap_or(Duration::from_millis(2));
        let mut lone = None;
        if let Some((mac, req)) = self.lone_offer() {
            let frac = aim.lo + (aim.hi - aim.lo) * (self.rng.below(1001) as f64 / 1000.0);
            let delay = rtt.mul_f64(frac);
            lone = Some((mac, frac));
            let t = Instant::now();
            self.client.send(&req, bcast());
            // Sleep, not spin: the server needs the CPU in the meantime.
            std::thread::sleep(delay.saturating_sub(t.elapsed()));
            if std::env::var_os("RACKHAND_KILL_DEBUG").is_some() {
                eprintln!(
                    "  round {}: round trips {rtts:?}, kill after {delay:?} ({frac:.2} of {aim:?})",
                    self.n
                );
            }
        }
        srv.kill9();
        lone
    }

    fn restart(&mut self, mac: Mac) {
        let xid = self.new_xid();
        if let Some(f) = self.flights.get_mut(&mac) {
            self.by_xid.remove(&f.xid);
            f.xid = xid;
            f.stage = Stage::Discover;
            f.sent = None;
            f.tries = 0;
            f.requested_at_ms = None;
            self.by_xid.insert(xid, mac);
        }
    }

    /// Handles one reply; returns true if it was a reply to one of this round's packets.
    /// `live` is false after the kill (then nothing is sent any more).
    fn handle(&mut self, m: &Message, live: bool) -> bool {
        let Some(&mac) = self.by_xid.get(&m.xid()) else {
            return false;
        };
        if reply_mac(m) != mac {
            self.ledger.violations.push(format!(
                "round {}: reply for xid {:#x} carries chaddr {} instead of {mac}",
                self.n,
                m.xid(),
                reply_mac(m)
            ));
            return true;
        }
        let stage = self.flights[&mac].stage;
        match (m.opts().msg_type(), stage) {
            (Some(MessageType::Offer), Stage::Discover) => {
                self.ledger.offers += 1;
                self.ledger.check("OFFER", mac, m.yiaddr(), self.n);
                if live {
                    let xid = self.new_xid();
                    let f = self.flights.get_mut(&mac).expect("flight");
                    self.by_xid.remove(&f.xid);
                    self.by_xid.insert(xid, mac);
                    f.xid = xid;
                    f.stage = Stage::Request(m.yiaddr());
                    f.sent = None;
                    f.tries = 0;
                }
            }
            (Some(MessageType::Ack), Stage::Request(ip)) => {
                if m.yiaddr() != ip {
                    self.ledger.violations.push(format!(
                        "round {}: {mac} asked for {ip}, ACK carries {}",
                        self.n,
                        m.yiaddr()
                    ));
                }
                self.ledger.ack(mac, m.yiaddr(), self.n);
                let f = self.flights.remove(&mac).expect("flight");
                self.by_xid.remove(&f.xid);
            }
            (Some(MessageType::Nak), _) if live => self.restart(mac),
            _ => {}
        }
        true
    }
}

/// What a round left behind for the store check.
struct RoundEnd {
    /// REQUESTs sent without an ACK: MAC and when the first one left.
    unacked_requests: Vec<(Mac, i64)>,
    /// The lone REQUEST of a targeted kill and the fraction of its round trip waited.
    lone: Option<(Mac, f64)>,
    /// Time from the first reply to the kill (None: killed before it answered).
    killed_after_ready: Option<Duration>,
}

fn run_round(
    client: &Client,
    srv: &mut Proc,
    dirs: &Dirs,
    ledger: &mut Ledger,
    rng: &mut Rng,
    n: u32,
    aim: KillAim,
) -> RoundEnd {
    let spawned = Instant::now();
    // Where the kill lands: one round in four during start-up (store open, migrations,
    // binding), one in four at a random time under load, half just after a lone REQUEST.
    let mode = rng.below(4);
    let kill_at = (mode == 0).then(|| spawned + Duration::from_millis(rng.below(900)));
    let mut target_at: Option<Instant> = None;
    let mut lone = None;
    let mut ready: Option<Instant> = None;
    let mut r = Round {
        client,
        ledger,
        rng,
        n,
        flights: HashMap::new(),
        by_xid: HashMap::new(),
        next_xid: 0,
        kill_at,
    };
    loop {
        let now = Instant::now();
        if r.kill_at.is_some_and(|k| now >= k) {
            srv.kill9();
            break;
        }
        if target_at.is_some_and(|a| now >= a) {
            lone = r.targeted_kill(srv, aim);
            break;
        }
        assert!(
            spawned.elapsed() < Duration::from_secs(30),
            "round {n}: the server did not answer within 30 s\n--- server log\n{}",
            dirs.log_tail(4000)
        );
        assert!(
            srv.running(),
            "round {n}: the server exited by itself\n--- server log\n{}",
            dirs.log_tail(4000)
        );
        r.top_up();
        r.transmit();
        let wait = r.kill_at.map_or(Duration::from_millis(2), |k| {
            k.saturating_duration_since(Instant::now())
                .clamp(Duration::from_micros(100), Duration::from_millis(2))
        });
        if let Some((m, _)) = client.recv(wait)
            && r.handle(&m, true)
            && ready.is_none()
        {
            let now = Instant::now();
            ready = Some(now);
            let after = Duration::from_millis(10 + r.rng.below(400));
            match mode {
                0 => {}
                1 => r.kill_at = Some(now + after),
                _ => target_at = Some(now + after),
            }
        }
    }
    let killed = Instant::now();
    // Replies the server sent before it died are still queued here: they count.
    while let Some((m, _)) = client.recv(Duration::from_millis(50)) {
        r.handle(&m, false);
    }
    let unacked_requests = r
        .flights
        .iter()
        .filter(|(_, f)| matches!(f.stage, Stage::Request(_)))
        .filter_map(|(mac, f)| f.requested_at_ms.map(|t| (*mac, t)))
        .collect();
    RoundEnd {
        unacked_requests,
        lone,
        killed_after_ready: ready.map(|t| killed.duration_since(t)),
    }
}

/// Checks the store after a kill; returns the MACs whose REQUEST was persisted but never
/// ACKed (the kill landed between the lease write and the ACK).
fn check_store_after_kill(dirs: &Dirs, ledger: &mut Ledger, end: &RoundEnd, n: u32) -> Vec<Mac> {
    let rows = stored_leases(&dirs.data);
    let now = now_ms();
    let by_mac: HashMap<Mac, &Lease> = rows.iter().map(|l| (l.mac, l)).collect();
    for (mac, ip) in &ledger.acked {
        match by_mac.get(mac) {
            Some(l) if l.ip == *ip && l.state == LeaseState::Bound && l.expires_at_ms > now => {}
            other => ledger.violations.push(format!(
                "after kill {n}: {mac} was ACKed {ip}, but the store holds {other:?}"
            )),
        }
    }
    let mut seen: HashMap<Ipv4Addr, Mac> = HashMap::new();
    for l in rows
        .iter()
        .filter(|l| l.state == LeaseState::Bound && l.expires_at_ms > now)
    {
        if let Some(other) = seen.insert(l.ip, l.mac) {
            ledger.violations.push(format!(
                "after kill {n}: {} bound to both {other} and {}",
                l.ip, l.mac
            ));
        }
    }
    if std::env::var_os("RACKHAND_KILL_DEBUG").is_some() {
        for (mac, sent) in &end.unacked_requests {
            eprintln!(
                "  kill {n}: unacked {mac} sent {sent} store {:?}",
                by_mac.get(mac).map(|l| (l.ip, l.updated_at_ms - sent))
            );
        }
    }
    end.unacked_requests
        .iter()
        .filter(|(mac, sent_ms)| {
            by_mac.get(mac).is_some_and(|l| {
                l.state == LeaseState::Bound && l.updated_at_ms >= sent_ms.saturating_sub(5)
            })
        })
        .map(|(mac, _)| *mac)
        .collect()
}

/// Where in a lone REQUEST→ACK round trip targeted kills land: a fraction drawn from
/// `lo..hi`, narrowed after each targeted kill (too early: nothing written; too late: the
/// ACK arrived) so that later kills concentrate on the window between write and ACK.
#[derive(Debug, Clone, Copy)]
struct KillAim {
    lo: f64,
    hi: f64,
}

impl KillAim {
    fn learn(&mut self, frac: f64, outcome: std::cmp::Ordering) {
        match outcome {
            std::cmp::Ordering::Less => self.lo = frac,
            std::cmp::Ordering::Greater => self.hi = frac,
            std::cmp::Ordering::Equal => {}
        }
        // Stay a little wide: round trips vary between server starts.
        self.lo = (self.lo - 0.03).max(0.0);
        self.hi = (self.hi + 0.03).min(2.0).max(self.lo + 0.06);
    }
}

/// SIGKILL at random points while many clients run DORA: an ACKed lease is never missing
/// after a restart, and no acknowledged address is ever offered or ACKed to another MAC.
///
/// At least 24 kills, and more (up to 60) until one has provably landed between a lease
/// write and its ACK (the lease is in the store, the ACK never arrived). After the last
/// kill every acknowledged MAC must get its address back. `RACKHAND_KILL_SEED=N` replays a
/// run's random choices; `RACKHAND_KILL_DEBUG=1` prints each kill's timing and outcome.
#[test]
fn sigkill_during_dora_never_loses_an_acked_lease() {
    require_root!();
    let started = Instant::now();
    let ns = netns("kill");
    let dirs = Dirs::new();
    let client = Client::new(&ns.cli, CLI_IF);
    let seed = std::env::var("RACKHAND_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() as u64 | 1);
    eprintln!("kill test seed {seed} (RACKHAND_KILL_SEED to repeat)");
    let mut rng = Rng(seed);
    let mut ledger = Ledger::default();
    let opts = Opts {
        log_filter: "warn",
        ..Opts::default()
    };
    let (mut kills, mut window_hits, mut early_kills) = (0u32, 0usize, 0u32);
    let mut aim = KillAim { lo: 0.1, hi: 1.3 };
    while kills < MIN_KILLS || (window_hits == 0 && kills < MAX_KILLS) {
        assert!(
            started.elapsed() < KILL_TEST_BOUND,
            "time bound hit after {kills} kills ({window_hits} between write and ACK)"
        );
        client.drain();
        let mut srv = appliance::start(&ns, Path::new(BIN), &dirs, &opts);
        let end = run_round(
            &client,
            &mut srv,
            &dirs,
            &mut ledger,
            &mut rng,
            kills + 1,
            aim,
        );
        kills += 1;
        if end.killed_after_ready.is_none() {
            early_kills += 1;
        }
        let hits = check_store_after_kill(&dirs, &mut ledger, &end, kills);
        if !hits.is_empty() {
            window_hits += 1;
        }
        if let Some((mac, frac)) = end.lone {
            let outcome = if hits.contains(&mac) {
                std::cmp::Ordering::Equal
            } else if end.unacked_requests.iter().any(|(m, _)| *m == mac) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            };
            aim.learn(frac, outcome);
        }
        assert!(
            ledger.violations.is_empty(),
            "{} violations (seed {seed}):\n{}\n--- server log\n{}",
            ledger.violations.len(),
            ledger.violations.join("\n"),
            dirs.log_tail(4000)
        );
    }
    eprintln!(
        "{kills} kills ({early_kills} during start-up), {} ACKs and {} OFFERs seen, {} MACs \
         bound, {window_hits} kills landed between the lease write and the ACK, {:.1} s",
        ledger.acks,
        ledger.offers,
        ledger.acked.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        ledger.acks >= u64::from(kills),
        "too few ACKs ({}) to mean anything",
        ledger.acks
    );
    assert!(
        window_hits > 0,
        "no kill landed between a lease write and its ACK in {kills} kills"
    );

    // A last start: every acknowledged MAC gets its address back, a newcomer gets none of them.
    client.drain();
    let mut srv = appliance::start(&ns, Path::new(BIN), &dirs, &opts);
    let mut macs: Vec<(Mac, Ipv4Addr)> = ledger.acked.iter().map(|(m, i)| (*m, *i)).collect();
    macs.sort();
    for (i, (mac, ip)) in macs.iter().enumerate() {
        let (offer, ack) = dora_ok(
            &client,
            Firmware::BiosIpxe,
            *mac,
            0x7000_0000 + 16 * i as u32,
            &dirs,
        );
        assert_eq!(
            (offer.yiaddr(), ack.yiaddr()),
            (*ip, *ip),
            "{mac} after the last restart"
        );
    }
    let (_, ack) = dora_ok(
        &client,
        Firmware::UefiPxe,
        mac_for(0xfff),
        0x7800_0000,
        &dirs,
    );
    assert!(
        !ledger.holder.contains_key(&ack.yiaddr()),
        "a new MAC got {}, which an acknowledged lease holds",
        ack.yiaddr()
    );
    assert!(
        srv.terminate(Duration::from_secs(10)),
        "clean exit on SIGTERM\n{}",
        dirs.log_tail(2000)
    );
    eprintln!("kill test total {:.1} s", started.elapsed().as_secs_f64());
}

/// The kill test's own checks (no root needed): an ACKed lease missing from the store, an
/// acknowledged address offered to another MAC, and a MAC moved off its address are all
/// reported, and a persisted-but-unACKed REQUEST counts as a hit of the window.
#[test]
fn kill_checks_catch_lost_and_stolen_leases() {
    let dirs = Dirs::new();
    let (a, b) = (mac_for(1), mac_for(2));
    let ip_a = Ipv4Addr::new(10, 99, 0, 10);
    let now = now_ms();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = Store::open(&dirs.data).await.expect("store");
        store
            .upsert(&Lease {
                mac: a,
                ip: ip_a,
                state: LeaseState::Bound,
                expires_at_ms: now + 3_600_000,
                client_id: None,
                hostname: None,
                updated_at_ms: now,
            })
            .await
            .expect("upsert");
        store.close().await;
    });
    let mut ledger = Ledger::default();
    ledger.ack(a, ip_a, 1);
    assert!(ledger.violations.is_empty());
    let end = RoundEnd {
        unacked_requests: vec![(a, now - 1)],
        lone: None,
        killed_after_ready: None,
    };
    assert_eq!(check_store_after_kill(&dirs, &mut ledger, &end, 1), vec![a]);
    assert!(ledger.violations.is_empty(), "{:?}", ledger.violations);

    // B was ACKed but the store never saw it: reported.
    ledger.ack(b, Ipv4Addr::new(10, 99, 0, 11), 1);
    check_store_after_kill(&dirs, &mut ledger, &end, 1);
    assert_eq!(ledger.violations.len(), 1, "{:?}", ledger.violations);
    assert!(ledger.violations[0].contains(&b.to_string()));
    // A's address offered to B, and B moved to A's address: both reported.
    ledger.violations.clear();
    ledger.check("OFFER", b, ip_a, 2);
    assert_eq!(ledger.violations.len(), 2, "{:?}", ledger.violations);
}

// ------------------------------------------------------------------ restart keeps the address

/// The same MAC gets the same address after a clean restart and after a SIGKILL, even when
/// another machine asks first.
#[test]
fn restart_keeps_the_address() {
    require_root!();
    let t = Instant::now();
    let ns = netns("rst");
    let dirs = Dirs::new();
    let client = Client::new(&ns.cli, CLI_IF);
    let opts = Opts::default();
    let a = Mac([0x52, 0x54, 0, 0x99, 0, 0x0a]);
    let mut srv = appliance::start(&ns, Path::new(BIN), &dirs, &opts);
    let (_, ack) = dora_ok(&client, Firmware::BiosIpxe, a, 0x100, &dirs);
    let ip_a = ack.yiaddr();
    assert_eq!(
        ip_a,
        Ipv4Addr::new(10, 99, 0, 10),
        "first address of the range"
    );
    assert!(
        srv.terminate(Duration::from_secs(10)),
        "clean exit on SIGTERM"
    );
    let rows = stored_leases(&dirs.data);
    assert!(
        rows.iter()
            .any(|l| l.mac == a && l.ip == ip_a && l.state == LeaseState::Bound),
        "{rows:?}"
    );

    for (round, how) in ["SIGTERM", "SIGKILL"].iter().enumerate() {
        let mut srv = appliance::start(&ns, Path::new(BIN), &dirs, &opts);
        // Another machine first: it would get A's address if A's lease had been lost.
        let other = Mac([0x52, 0x54, 0, 0x99, 1, round as u8]);
        let (_, ack_o) = dora_ok(
            &client,
            Firmware::UefiPxe,
            other,
            0x200 + 16 * round as u32,
            &dirs,
        );
        assert_ne!(
            ack_o.yiaddr(),
            ip_a,
            "after {how}: A's address went to {other}"
        );
        let (offer, ack) = dora_ok(
            &client,
            Firmware::BiosIpxe,
            a,
            0x300 + 16 * round as u32,
            &dirs,
        );
        assert_eq!(
            (offer.yiaddr(), ack.yiaddr()),
            (ip_a, ip_a),
            "after a restart that followed {how}"
        );
        if round == 0 {
            srv.kill9();
        } else {
            assert!(
                srv.terminate(Duration::from_secs(10)),
                "clean exit on SIGTERM"
            );
        }
    }
    eprintln!("restart test {:.1} s", t.elapsed().as_secs_f64());
}

// ------------------------------------------------------------------ token bound to the lease

/// `GET /boot.ipxe?mac=M` with an agent token is served only to the address holding M's lease.
#[test]
fn agent_token_only_for_the_lease_holder() {
    require_root!();
    let t = Instant::now();
    let ns = netns("tok");
    let dirs = Dirs::new();
    let client = Client::new(&ns.cli, CLI_IF);
    let mut srv = appliance::start(&ns, Path::new(BIN), &dirs, &Opts::default());
    let a = Mac([0x52, 0x54, 0, 0x99, 0, 0x21]);
    let b = Mac([0x52, 0x54, 0, 0x99, 0, 0x22]);
    let (_, ack_a) = dora_ok(&client, Firmware::BiosIpxe, a, 0x1000, &dirs);
    let (_, ack_b) = dora_ok(&client, Firmware::UefiPxe, b, 0x2000, &dirs);
    let (ip_a, ip_b) = (ack_a.yiaddr(), ack_b.yiaddr());
    assert_ne!(ip_a, ip_b);
    ns.add_client_addr(&format!("{ip_a}/24"));
    ns.add_client_addr(&format!("{ip_b}/24"));
    let http = SocketAddrV4::new(SERVER_IP, 8080);
    let get = |from: Ipv4Addr, mac: Mac| {
        let path = format!("/boot.ipxe?mac={mac}");
        http_get(&ns.cli, from, http, &path)
            .unwrap_or_else(|e| panic!("GET {path} from {from}: {e}\n{}", dirs.log_tail(2000)))
    };

    let own = get(ip_a, a);
    assert_eq!(own.status, 200, "{}", own.body);
    assert!(own.body.contains("rackhand.token="), "{}", own.body);
    assert!(own.body.starts_with("#!ipxe"), "{}", own.body);

    // Another host: no lease at all (the client's static address), and a host holding
    // another MAC's lease.
    for from in [CLIENT_IP, ip_b] {
        let r = get(from, a);
        assert_eq!(r.status, 403, "from {from}: {}", r.body);
        assert!(r.body.contains("lease_mismatch"), "from {from}: {}", r.body);
        assert!(
            !r.body.contains("rackhand.token"),
            "from {from}: {}",
            r.body
        );
    }
    // B's own address gets B's script; a MAC with no lease gets nothing anywhere.
    let own_b = get(ip_b, b);
    assert_eq!(own_b.status, 200, "{}", own_b.body);
    assert!(own_b.body.contains("rackhand.token="));
    let nobody = Mac([0x52, 0x54, 0, 0x99, 0, 0x23]);
    for from in [CLIENT_IP, ip_a] {
        let r = get(from, nobody);
        assert_eq!(r.status, 403, "unleased MAC from {from}: {}", r.body);
        assert!(!r.body.contains("rackhand.token"));
    }
    assert!(
        srv.terminate(Duration::from_secs(10)),
        "clean exit on SIGTERM"
    );
    eprintln!("token test {:.1} s", t.elapsed().as_secs_f64());
}

// ------------------------------------------------------------------ proxyDHCP

/// proxyDHCP with the real binary: a PXE DISCOVER on 67 gets boot information without an
/// address; the REQUEST to 4011 is answered from 4011; no lease is stored.
#[test]
fn proxy_dhcp_on_67_and_4011() {
    require_root!();
    let t = Instant::now();
    let ns = netns("pxy");
    let dirs = Dirs::new();
    let client = Client::new(&ns.cli, CLI_IF);
    let opts = Opts {
        dhcp_mode: "proxy",
        dhcp_range: None,
        ..Opts::default()
    };
    let mut srv = appliance::start(&ns, Path::new(BIN), &dirs, &opts);
    let mac = Mac([0x52, 0x54, 0, 0x99, 0, 0x31]);
    let (offer, _) = client
        .exchange(
            &dhcp::discover(Firmware::UefiPxe, mac, 0x4000),
            bcast(),
            MessageType::Offer,
            30,
            Duration::from_secs(1),
        )
        .unwrap_or_else(|| panic!("no ProxyDHCPOFFER\n{}", dirs.log_tail(3000)));
    assert_eq!(
        offer.yiaddr(),
        Ipv4Addr::UNSPECIFIED,
        "proxy offers no address"
    );
    assert_eq!(offer.siaddr(), SERVER_IP);
    assert_eq!(raw_opt(&offer, 60).as_deref(), Some(&b"PXEClient"[..]));
    assert_eq!(
        raw_opt(&offer, 54).as_deref(),
        Some(&SERVER_IP.octets()[..])
    );
    assert_eq!(bootfile(&offer).as_deref(), Some("ipxe.efi"));

    // The client now has an address (the namespace's static one) and asks on 4011.
    let mut req = dhcp::request(Firmware::UefiPxe, mac, 0x4001, CLIENT_IP, SERVER_IP);
    req[12..16].copy_from_slice(&CLIENT_IP.octets()); // ciaddr
    let (ack, from) = client
        .exchange(
            &req,
            SocketAddrV4::new(SERVER_IP, 4011),
            MessageType::Ack,
            5,
            Duration::from_secs(1),
        )
        .unwrap_or_else(|| panic!("no ACK from 4011\n{}", dirs.log_tail(3000)));
    assert_eq!(from, SocketAddr::V4(SocketAddrV4::new(SERVER_IP, 4011)));
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(bootfile(&ack).as_deref(), Some("ipxe.efi"));

    // iPXE gets the script URL.
    let (offer, _) = client
        .exchange(
            &dhcp::discover(Firmware::BiosIpxe, mac, 0x4100),
            bcast(),
            MessageType::Offer,
            5,
            Duration::from_secs(1),
        )
        .expect("offer to iPXE");
    assert_eq!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(
        bootfile(&offer).as_deref(),
        Some("http://10.99.0.1:8080/boot.ipxe")
    );
    assert!(
        srv.terminate(Duration::from_secs(10)),
        "clean exit on SIGTERM"
    );
    assert!(
        stored_leases(&dirs.data).is_empty(),
        "proxy mode stores no leases"
    );
    eprintln!("proxy test {:.1} s", t.elapsed().as_secs_f64());
}

// TFTP acceptance (interop matrix, 100 MiB, ERROR 8, WRQ, traversal) lives in tftp_netns.rs.
