//! Leases: the record, the in-memory table the decision reads, allocation, the per-MAC rate
//! limiter and the persistence seam ([`LeaseStore`]).
//!
//! Rules:
//! * One lease per MAC. A MAC that had an address gets the same one back (sticky), across
//!   the firmware → iPXE → OS handover and across restarts (leases are loaded from the store).
//! * Expiry is judged against the `now_ms` the caller passes; nothing here reads a clock.
//! * A DECLINEd address is quarantined for the probation period. No ICMP/ARP probe is sent
//!   before an offer (it would cost every boot about 3 s); a conflicting host is found when
//!   the client DECLINEs the address, which then sits out its probation. The quarantine is
//!   stored as the declining MAC's row (state `declined`); once that MAC is given another
//!   address its row is replaced, and the quarantine lives on in memory only (a restart
//!   during the probation forgets it; a second DECLINE re-creates it).
//!   DECLINEs are honoured only from the MAC that holds the address, so strangers cannot
//!   poison the pool.
//! * MACs the inventory does not know may hold at most `unknown_max_leases` live leases, so a
//!   flood of random MACs cannot exhaust the pool for known machines.
//! * Offers are held in memory only (for `offer_hold_ms`); a binding is persisted before its
//!   ACK is sent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use pxe_api::Mac;

use super::config::Policy;

/// State of a lease record. Stored as the lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Offered, not yet requested. This service never writes it (offers are in-memory
    /// [`LeaseOp::Hold`]s); a stored row in this state is loaded as a live reservation.
    Offered,
    /// Bound: ACKed and persisted.
    Bound,
    /// Released by the client; the address stays associated with the MAC for stickiness.
    Released,
    /// The client declined the address (conflict); quarantined until `expires_at_ms`.
    Declined,
}

impl LeaseState {
    /// Stable storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Offered => "offered",
            LeaseState::Bound => "bound",
            LeaseState::Released => "released",
            LeaseState::Declined => "declined",
        }
    }

    /// Parse a storage name.
    pub fn parse(s: &str) -> Option<LeaseState> {
        match s {
            "offered" => Some(LeaseState::Offered),
            "bound" => Some(LeaseState::Bound),
            "released" => Some(LeaseState::Released),
            "declined" => Some(LeaseState::Declined),
            _ => None,
        }
    }
}

/// One lease record; maps onto the `leases` table:
/// `leases(mac TEXT PRIMARY KEY, ip TEXT NOT NULL UNIQUE, state TEXT NOT NULL,
/// expires_at_ms BIGINT NOT NULL, client_id TEXT, hostname TEXT, updated_at_ms BIGINT NOT NULL)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Client MAC (primary key).
    pub mac: Mac,
    /// Address (unique).
    pub ip: Ipv4Addr,
    /// State.
    pub state: LeaseState,
    /// Expiry (Unix ms): end of the lease, of the offer hold, or of the decline probation.
    pub expires_at_ms: i64,
    /// Option 61 as lower-case hex, at most 255 bytes of input.
    pub client_id: Option<String>,
    /// Option 12, sanitised (see [`sanitize_hostname`]).
    pub hostname: Option<String>,
    /// Last change (Unix ms).
    pub updated_at_ms: i64,
}

impl Lease {
    /// True if the lease holds its address at `now_ms` (offered or bound, not expired).
    pub fn is_live(&self, now_ms: i64) -> bool {
        matches!(self.state, LeaseState::Offered | LeaseState::Bound) && self.expires_at_ms > now_ms
    }
}

/// Keep a hostname only if it is a plausible DNS label sequence: `[A-Za-z0-9.-]`, at most 63
/// bytes (longer input is truncated), no leading/trailing dot or hyphen. Anything with other
/// bytes (NUL, newline, non-UTF-8) is dropped entirely (reliability D2).
pub fn sanitize_hostname(raw: &[u8]) -> Option<String> {
    if raw.is_empty()
        || !raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
    {
        return None;
    }
    let cut = raw.get(..raw.len().min(63))?;
    let s = std::str::from_utf8(cut)
        .ok()?
        .trim_matches(|c| c == '.' || c == '-');
    (!s.is_empty()).then(|| s.to_owned())
}

/// Option 61 as hex (bounded by the option length, at most 255 bytes → 510 hex chars).
pub fn client_id_hex(raw: &[u8]) -> Option<String> {
    (!raw.is_empty()).then(|| hex::encode(raw.get(..raw.len().min(255)).unwrap_or(raw)))
}

/// A change the service applies to the table after (for bindings) persisting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOp {
    /// Insert or replace the record for `lease.mac`.
    Upsert(Lease),
    /// Delete the record for this MAC (an address moving to another client).
    Remove(Mac),
    /// Reserve `ip` for `mac` until `until_ms` after an OFFER (in memory only, not persisted).
    Hold {
        /// Client.
        mac: Mac,
        /// Offered address.
        ip: Ipv4Addr,
        /// End of the hold (Unix ms).
        until_ms: i64,
    },
}

/// Why no address could be allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocError {
    /// Every assignable address is live, quarantined, or held.
    PoolExhausted,
    /// The client is unknown and unknown clients already hold their share of the pool.
    UnknownShareExhausted,
}

/// MACs with an expiry, countable by "still live at `now`" in time proportional to the
/// number of expired entries (which housekeeping keeps small), not to the set's size.
#[derive(Debug, Default, Clone)]
struct ExpirySet {
    by_mac: HashMap<Mac, i64>,
    by_expiry: BTreeSet<(i64, Mac)>,
}

impl ExpirySet {
    fn set(&mut self, mac: Mac, expires: i64) {
        self.remove(mac);
        self.by_mac.insert(mac, expires);
        self.by_expiry.insert((expires, mac));
    }

    /// Set the expiry to the later of the current one and `expires`.
    fn extend(&mut self, mac: Mac, expires: i64) {
        let e = self.expiry(mac).map_or(expires, |old| old.max(expires));
        self.set(mac, e);
    }

    fn remove(&mut self, mac: Mac) {
        if let Some(old) = self.by_mac.remove(&mac) {
            self.by_expiry.remove(&(old, mac));
        }
    }

    fn expiry(&self, mac: Mac) -> Option<i64> {
        self.by_mac.get(&mac).copied()
    }

    fn live(&self, now_ms: i64) -> usize {
        let expired = self
            .by_expiry
            .iter()
            .take_while(|(e, _)| *e <= now_ms)
            .count();
        self.by_expiry.len() - expired
    }

    fn prune(&mut self, now_ms: i64) {
        while let Some(&(e, mac)) = self.by_expiry.first() {
            if e > now_ms {
                break;
            }
            self.by_expiry.pop_first();
            self.by_mac.remove(&mac);
        }
    }
}

/// The in-memory lease table. `decide` only reads it; the service applies [`LeaseOp`]s.
#[derive(Debug, Default, Clone)]
pub struct LeaseTable {
    by_mac: HashMap<Mac, Lease>,
    by_ip: BTreeMap<Ipv4Addr, Mac>,
    /// Quarantined addresses → end of probation (kept even after the declining MAC moves on).
    quarantine: BTreeMap<Ipv4Addr, i64>,
    /// Live leases and offer holds of unknown clients, to bound their share.
    unknown: ExpirySet,
    /// Offer holds: MAC → (address, end of hold).
    holds: HashMap<Mac, (Ipv4Addr, i64)>,
    /// Offer holds by address.
    held_ips: HashMap<Ipv4Addr, Mac>,
}

impl LeaseTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Build from stored records. Records that conflict (same IP twice) keep the newest.
    /// `known` classifies each MAC for the unknown-client share.
    pub fn from_leases(
        leases: impl IntoIterator<Item = Lease>,
        known: &dyn Fn(Mac) -> bool,
    ) -> Self {
        let mut v: Vec<Lease> = leases.into_iter().collect();
        v.sort_by_key(|l| l.updated_at_ms);
        let mut t = LeaseTable::new();
        for l in v {
            let k = known(l.mac);
            t.apply(&LeaseOp::Upsert(l), k);
        }
        t
    }

    /// The record for a MAC.
    pub fn get(&self, mac: Mac) -> Option<&Lease> {
        self.by_mac.get(&mac)
    }

    /// The MAC whose record holds `ip`.
    pub fn holder(&self, ip: Ipv4Addr) -> Option<Mac> {
        self.by_ip.get(&ip).copied()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    /// True if there are no records.
    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }

    /// All records (unordered).
    pub fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.by_mac.values()
    }

    /// True if `ip` is in decline probation at `now_ms`.
    pub fn quarantined(&self, ip: Ipv4Addr, now_ms: i64) -> bool {
        self.quarantine
            .get(&ip)
            .is_some_and(|until| *until > now_ms)
    }

    /// Live leases held by unknown clients at `now_ms`.
    pub fn unknown_live(&self, now_ms: i64) -> usize {
        self.unknown.live(now_ms)
    }

    /// The unexpired offer hold of `mac`.
    pub fn hold(&self, mac: Mac, now_ms: i64) -> Option<Ipv4Addr> {
        self.holds
            .get(&mac)
            .filter(|(_, until)| *until > now_ms)
            .map(|(ip, _)| *ip)
    }

    /// Apply a change. `known` says whether the lease's MAC is known to the inventory.
    pub fn apply(&mut self, op: &LeaseOp, known: bool) {
        match op {
            LeaseOp::Remove(mac) => self.remove(*mac),
            LeaseOp::Hold { mac, ip, until_ms } => {
                self.drop_hold(*mac);
                if let Some(other) = self.held_ips.get(ip).copied() {
                    self.drop_hold(other);
                }
                self.holds.insert(*mac, (*ip, *until_ms));
                self.held_ips.insert(*ip, *mac);
                if !known {
                    self.unknown.extend(*mac, *until_ms);
                }
            }
            LeaseOp::Upsert(l) => {
                self.remove(l.mac);
                self.drop_hold(l.mac);
                if let Some(other) = self.held_ips.get(&l.ip).copied() {
                    self.drop_hold(other);
                }
                if let Some(other) = self.by_ip.get(&l.ip).copied() {
                    self.remove(other);
                }
                if l.state == LeaseState::Declined {
                    let until = self.quarantine.entry(l.ip).or_insert(l.expires_at_ms);
                    *until = (*until).max(l.expires_at_ms);
                }
                if !known && matches!(l.state, LeaseState::Offered | LeaseState::Bound) {
                    self.unknown.set(l.mac, l.expires_at_ms);
                }
                self.by_ip.insert(l.ip, l.mac);
                self.by_mac.insert(l.mac, l.clone());
            }
        }
    }

    fn drop_hold(&mut self, mac: Mac) {
        if let Some((ip, _)) = self.holds.remove(&mac)
            && self.held_ips.get(&ip) == Some(&mac)
        {
            self.held_ips.remove(&ip);
        }
    }

    fn remove(&mut self, mac: Mac) {
        if let Some(old) = self.by_mac.remove(&mac)
            && self.by_ip.get(&old.ip) == Some(&mac)
        {
            self.by_ip.remove(&old.ip);
        }
        self.unknown.remove(mac);
    }

    /// Drop expired quarantine entries and unknown-share entries (housekeeping; call now and
    /// then so the maps stay bounded).
    pub fn prune(&mut self, now_ms: i64) {
        self.quarantine.retain(|_, until| *until > now_ms);
        self.unknown.prune(now_ms);
        let expired: Vec<Mac> = self
            .holds
            .iter()
            .filter(|(_, (_, until))| *until <= now_ms)
            .map(|(m, _)| *m)
            .collect();
        for m in expired {
            self.drop_hold(m);
        }
    }

    /// True if `ip` can go to `mac` at `now_ms`: assignable, not quarantined, and not held
    /// live by another MAC.
    pub fn available_for(&self, ip: Ipv4Addr, mac: Mac, policy: &Policy, now_ms: i64) -> bool {
        if !policy.assignable(ip) || self.quarantined(ip, now_ms) {
            return false;
        }
        if let Some(m) = self.held_ips.get(&ip)
            && *m != mac
            && self.holds.get(m).is_some_and(|(_, until)| *until > now_ms)
        {
            return false;
        }
        match self.by_ip.get(&ip) {
            None => true,
            Some(m) if *m == mac => true,
            Some(m) => !self.by_mac.get(m).is_some_and(|l| l.is_live(now_ms)),
        }
    }

    /// Choose an address for `mac`: its own previous address if still available, else the
    /// requested one, else a free one (never used first, then the longest-unused record).
    pub fn allocate(
        &self,
        mac: Mac,
        requested: Option<Ipv4Addr>,
        known: bool,
        policy: &Policy,
        now_ms: i64,
    ) -> Result<Ipv4Addr, AllocError> {
        if let Some(ip) = self.hold(mac, now_ms)
            && self.available_for(ip, mac, policy, now_ms)
        {
            return Ok(ip);
        }
        if let Some(l) = self.by_mac.get(&mac)
            && l.state != LeaseState::Declined
            && self.available_for(l.ip, mac, policy, now_ms)
        {
            return Ok(l.ip);
        }
        let already_counted = self.unknown.expiry(mac).is_some_and(|e| e > now_ms);
        if !known
            && !already_counted
            && self.unknown_live(now_ms) >= policy.unknown_max_leases as usize
        {
            return Err(AllocError::UnknownShareExhausted);
        }
        if let Some(r) = requested
            && self.available_for(r, mac, policy, now_ms)
        {
            return Ok(r);
        }
        let (start, end) = (u32::from(policy.range_start), u32::from(policy.range_end));
        let mut oldest: Option<(i64, Ipv4Addr)> = None;
        for v in start..=end {
            let ip = Ipv4Addr::from(v);
            if !self.available_for(ip, mac, policy, now_ms) {
                continue;
            }
            match self.by_ip.get(&ip).and_then(|m| self.by_mac.get(m)) {
                None => return Ok(ip),
                Some(l) if !l.is_live(now_ms) => {
                    if oldest.is_none_or(|(t, _)| l.updated_at_ms < t) {
                        oldest = Some((l.updated_at_ms, ip));
                    }
                }
                Some(_) => {}
            }
        }
        oldest.map(|(_, ip)| ip).ok_or(AllocError::PoolExhausted)
    }
}

/// Per-MAC fixed-window rate limiter with a bounded number of tracked MACs.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    max: u32,
    window_ms: i64,
    max_tracked: usize,
    windows: HashMap<Mac, (i64, u32)>,
}

impl RateLimiter {
    /// At most `max` requests per `window_ms` per MAC; track at most `max_tracked` MACs.
    pub fn new(max: u32, window_ms: u64, max_tracked: usize) -> Self {
        RateLimiter {
            max,
            window_ms: i64::try_from(window_ms).unwrap_or(i64::MAX),
            max_tracked,
            windows: HashMap::new(),
        }
    }

    /// Record a request from `mac` at `now_ms`; false if it is over the limit. When the table
    /// is full of live windows, untracked MACs are refused unless `known`.
    pub fn allow(&mut self, mac: Mac, known: bool, now_ms: i64) -> bool {
        let window = self.window_ms;
        if !self.windows.contains_key(&mac) && self.windows.len() >= self.max_tracked {
            self.windows
                .retain(|_, (start, _)| now_ms.saturating_sub(*start) < window);
            if self.windows.len() >= self.max_tracked {
                return known;
            }
        }
        let e = self.windows.entry(mac).or_insert((now_ms, 0));
        if now_ms.saturating_sub(e.0) >= window || now_ms < e.0 {
            *e = (now_ms, 0);
        }
        e.1 = e.1.saturating_add(1);
        e.1 <= self.max
    }

    /// Number of tracked MACs.
    pub fn tracked(&self) -> usize {
        self.windows.len()
    }
}

/// A lease store failure. The service sends no ACK when persisting fails.
#[derive(Debug, thiserror::Error)]
#[error("lease store {op} failed")]
pub struct LeaseStoreError {
    /// The operation (`load_all`, `upsert`, `remove`).
    pub op: &'static str,
    /// Cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Durable lease persistence. The lead implements it on the SQLite store.
pub trait LeaseStore: Send + Sync + 'static {
    /// Every stored record.
    fn load_all(&self) -> impl Future<Output = Result<Vec<Lease>, LeaseStoreError>> + Send;
    /// Insert or replace the record for `lease.mac`; it must be durable when this returns.
    /// Another MAC's record holding the same IP has already been removed by the caller.
    fn upsert(&self, lease: &Lease) -> impl Future<Output = Result<(), LeaseStoreError>> + Send;
    /// Delete the record for `mac` (no error if absent).
    fn remove(&self, mac: Mac) -> impl Future<Output = Result<(), LeaseStoreError>> + Send;
}

/// In-memory [`LeaseStore`] for tests; can be told to fail to exercise the no-ACK path.
#[derive(Debug, Default)]
pub struct MemLeaseStore {
    rows: Mutex<BTreeMap<Mac, Lease>>,
    fail: std::sync::atomic::AtomicBool,
}

#[derive(Debug, thiserror::Error)]
#[error("injected failure")]
struct Injected;

impl MemLeaseStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Make every later write fail (or succeed again).
    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, std::sync::atomic::Ordering::SeqCst);
    }

    /// A copy of the rows.
    pub fn rows(&self) -> Vec<Lease> {
        self.rows
            .lock()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default()
    }

    fn check(&self, op: &'static str) -> Result<(), LeaseStoreError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(LeaseStoreError {
                op,
                source: Box::new(Injected),
            });
        }
        Ok(())
    }
}

impl LeaseStore for MemLeaseStore {
    async fn load_all(&self) -> Result<Vec<Lease>, LeaseStoreError> {
        Ok(self.rows())
    }

    async fn upsert(&self, lease: &Lease) -> Result<(), LeaseStoreError> {
        self.check("upsert")?;
        let mut rows = self.rows.lock().map_err(|_| LeaseStoreError {
            op: "upsert",
            source: Box::new(Injected),
        })?;
        // Mirror the SQL UNIQUE(ip) constraint.
        if rows
            .values()
            .any(|r| r.ip == lease.ip && r.mac != lease.mac)
        {
            return Err(LeaseStoreError {
                op: "upsert",
                source: "UNIQUE constraint failed: leases.ip".into(),
            });
        }
        rows.insert(lease.mac, lease.clone());
        Ok(())
    }

    async fn remove(&self, mac: Mac) -> Result<(), LeaseStoreError> {
        self.check("remove")?;
        let mut rows = self.rows.lock().map_err(|_| LeaseStoreError {
            op: "remove",
            source: Box::new(Injected),
        })?;
        rows.remove(&mac);
        Ok(())
    }
}

/// Conformance check for a [`LeaseStore`] implementation, starting from an empty store:
/// upsert replaces by MAC, remove deletes (and tolerates absent rows), load returns exactly
/// what was written, field for field. `MemLeaseStore` passes it; the SQLite store should too.
pub async fn check_lease_store<S: LeaseStore>(store: &S) -> Result<(), String> {
    let mac = |n: u8| Mac([0x52, 0x54, 0, 0, 0, n]);
    let a = Lease {
        mac: mac(1),
        ip: Ipv4Addr::new(10, 99, 0, 100),
        state: LeaseState::Bound,
        expires_at_ms: 1_800_000_000_000,
        client_id: Some("01525400000001".into()),
        hostname: Some("node-1".into()),
        updated_at_ms: 1_700_000_000_000,
    };
    let b = Lease {
        mac: mac(2),
        ip: Ipv4Addr::new(10, 99, 0, 101),
        state: LeaseState::Declined,
        expires_at_ms: 1_700_000_600_000,
        client_id: None,
        hostname: None,
        updated_at_ms: 1_700_000_000_001,
    };
    let err = |e: LeaseStoreError| e.to_string();
    let sorted = |mut v: Vec<Lease>| {
        v.sort_by_key(|l| l.mac);
        v
    };
    if !store.load_all().await.map_err(err)?.is_empty() {
        return Err("store is not empty at start".into());
    }
    store.upsert(&a).await.map_err(err)?;
    store.upsert(&b).await.map_err(err)?;
    let got = sorted(store.load_all().await.map_err(err)?);
    if got != vec![a.clone(), b.clone()] {
        return Err(format!("after two upserts: {got:?}"));
    }
    // Replace by MAC: new address, new state.
    let mut a2 = a.clone();
    a2.ip = Ipv4Addr::new(10, 99, 0, 150);
    a2.state = LeaseState::Released;
    a2.hostname = None;
    store.upsert(&a2).await.map_err(err)?;
    let got = sorted(store.load_all().await.map_err(err)?);
    if got != vec![a2.clone(), b.clone()] {
        return Err(format!("after replacing by MAC: {got:?}"));
    }
    // An address moving to another MAC: the caller removes the old row first.
    store.remove(mac(2)).await.map_err(err)?;
    store.remove(mac(2)).await.map_err(err)?;
    let mut c = b.clone();
    c.mac = mac(3);
    c.state = LeaseState::Bound;
    store.upsert(&c).await.map_err(err)?;
    let got = sorted(store.load_all().await.map_err(err)?);
    if got != vec![a2, c] {
        return Err(format!("after moving an address: {got:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn mem_store_conforms_and_fails_on_demand() {
        let s = MemLeaseStore::new();
        check_lease_store(&s).await.expect("conformance");
        s.set_failing(true);
        let l = s.rows().first().cloned().expect("a row");
        assert!(s.upsert(&l).await.is_err());
        s.set_failing(false);
        // UNIQUE(ip) like the SQL table.
        let mut dup = l.clone();
        dup.mac = Mac([2, 0, 0, 0, 0, 0x42]);
        assert!(s.upsert(&dup).await.is_err());
    }

    #[test]
    fn hostname_sanitising() {
        assert_eq!(
            sanitize_hostname(b"node-01.rack"),
            Some("node-01.rack".into())
        );
        assert_eq!(sanitize_hostname(b"bad\nname"), None);
        assert_eq!(sanitize_hostname(b"nul\0"), None);
        assert_eq!(sanitize_hostname(&[b'a'; 4096]).map(|s| s.len()), Some(63));
        assert_eq!(sanitize_hostname(b"-."), None);
        assert_eq!(sanitize_hostname(&[0xff, 0xfe]), None);
    }

    fn lease(n: u8, ip: u8, state: LeaseState, expires: i64, updated: i64) -> Lease {
        Lease {
            mac: Mac([2, 0, 0, 0, 0, n]),
            ip: Ipv4Addr::new(10, 99, 0, ip),
            state,
            expires_at_ms: expires,
            client_id: None,
            hostname: None,
            updated_at_ms: updated,
        }
    }

    #[test]
    fn table_from_stored_rows() {
        let rows = vec![
            lease(2, 100, LeaseState::Bound, 5_000, 20),
            lease(1, 100, LeaseState::Bound, 5_000, 10), // older claim on the same address
            lease(3, 101, LeaseState::Declined, 9_000, 30),
            lease(4, 102, LeaseState::Bound, 5_000, 40),
        ];
        let t = LeaseTable::from_leases(rows, &|m| m != Mac([2, 0, 0, 0, 0, 4]));
        assert_eq!(
            t.holder(Ipv4Addr::new(10, 99, 0, 100)),
            Some(Mac([2, 0, 0, 0, 0, 2]))
        );
        assert!(t.get(Mac([2, 0, 0, 0, 0, 1])).is_none());
        assert!(t.quarantined(Ipv4Addr::new(10, 99, 0, 101), 8_999));
        assert!(!t.quarantined(Ipv4Addr::new(10, 99, 0, 101), 9_000));
        assert_eq!(t.unknown_live(4_999), 1);
        assert_eq!(t.unknown_live(5_000), 0);
        let mut t = t;
        t.prune(10_000);
        assert!(!t.quarantined(Ipv4Addr::new(10, 99, 0, 101), 0));
    }

    #[test]
    fn lease_state_names_roundtrip() {
        for s in [
            LeaseState::Offered,
            LeaseState::Bound,
            LeaseState::Released,
            LeaseState::Declined,
        ] {
            assert_eq!(LeaseState::parse(s.as_str()), Some(s));
        }
        assert_eq!(LeaseState::parse("BOUND"), None);
    }

    #[test]
    fn rate_limiter_windows_and_bound() {
        let mut r = RateLimiter::new(2, 1000, 3);
        let m = |n: u8| Mac([2, 0, 0, 0, 0, n]);
        assert!(r.allow(m(1), false, 0));
        assert!(r.allow(m(1), false, 10));
        assert!(!r.allow(m(1), false, 20));
        assert!(r.allow(m(1), false, 1000));
        assert!(r.allow(m(2), false, 1000));
        assert!(r.allow(m(3), false, 1000));
        // Full of live windows: a new unknown MAC is refused, a known one passes.
        assert!(!r.allow(m(4), false, 1001));
        assert!(r.allow(m(5), true, 1001));
        assert!(r.tracked() <= 3);
        // After the windows pass, room again.
        assert!(r.allow(m(4), false, 2500));
    }
}
