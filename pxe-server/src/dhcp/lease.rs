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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use pxe_api::Mac;

use super::addrset::AddrSet;
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

/// An ordered index `(key, address)` with the key each address is filed under, so an entry
/// can be moved or dropped knowing only the address.
#[derive(Debug, Default, Clone)]
struct KeyedIndex {
    ordered: BTreeSet<(i64, Ipv4Addr)>,
    key_of: HashMap<Ipv4Addr, i64>,
}

impl KeyedIndex {
    /// File `ip` under `key`, or drop it (`None`).
    fn set(&mut self, ip: Ipv4Addr, key: Option<i64>) {
        if self.key_of.get(&ip).copied() == key {
            return;
        }
        if let Some(old) = self.key_of.remove(&ip) {
            self.ordered.remove(&(old, ip));
        }
        if let Some(k) = key {
            self.key_of.insert(ip, k);
            self.ordered.insert((k, ip));
        }
    }
}

/// What one persisted change overwrote in the table, so [`LeaseTable::revert`] can put it
/// back when the write fails. Produced by [`LeaseTable::apply_tracked`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undo {
    macs: Vec<MacState>,
    quarantine: Option<(Ipv4Addr, Option<i64>)>,
}

/// Everything the table keeps per MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MacState {
    mac: Mac,
    record: Option<Lease>,
    hold: Option<(Ipv4Addr, i64)>,
    unknown: Option<i64>,
}

/// The in-memory lease table. `decide` only reads it; the service applies [`LeaseOp`]s.
///
/// Allocation does not walk the range: besides the records, holds and quarantine it keeps
/// (a) the set of addresses that have any of those ([`AddrSet`], whose first gap after the
/// range start is the lowest never-used address), (b) the records that can no longer be live
/// and whose address is neither held nor quarantined, ordered by last change (the
/// "longest unused" candidates), and (c) the possibly-live records and the holds and
/// quarantine entries ordered by expiry. Entries that expired since the last [`prune`] are
/// looked at one by one, so the service prunes often and keeps that set small.
///
/// [`prune`]: LeaseTable::prune
#[derive(Debug, Default, Clone)]
pub struct LeaseTable {
    by_mac: HashMap<Mac, Lease>,
    by_ip: HashMap<Ipv4Addr, Mac>,
    /// Quarantined addresses → end of probation (kept even after the declining MAC moves on).
    quarantine: HashMap<Ipv4Addr, i64>,
    quarantine_by_expiry: BTreeSet<(i64, Ipv4Addr)>,
    /// Live leases and offer holds of unknown clients, to bound their share.
    unknown: ExpirySet,
    /// Offer holds: MAC → (address, end of hold).
    holds: HashMap<Mac, (Ipv4Addr, i64)>,
    holds_by_expiry: BTreeSet<(i64, Mac)>,
    /// Offer holds by address.
    held_ips: HashMap<Ipv4Addr, Mac>,
    /// Addresses with a record, a hold or a quarantine entry.
    used: AddrSet,
    /// Records that cannot be live at or after `pruned_at` and whose address is neither held
    /// nor quarantined, by `updated_at_ms`.
    idle: KeyedIndex,
    /// Offered/bound records not yet seen expired by `prune`, by `expires_at_ms`.
    live: KeyedIndex,
    /// The latest `now_ms` given to `prune`.
    pruned_at: Option<i64>,
}

fn can_be_live(state: LeaseState) -> bool {
    matches!(state, LeaseState::Offered | LeaseState::Bound)
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
                self.insert_hold(*mac, *ip, *until_ms);
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
                    let until = self
                        .quarantine
                        .get(&l.ip)
                        .map_or(l.expires_at_ms, |u| (*u).max(l.expires_at_ms));
                    self.set_quarantine(l.ip, Some(until));
                }
                if !known && can_be_live(l.state) {
                    self.unknown.set(l.mac, l.expires_at_ms);
                }
                self.by_ip.insert(l.ip, l.mac);
                self.by_mac.insert(l.mac, l.clone());
                self.sync(l.ip);
            }
        }
    }

    /// [`apply`](LeaseTable::apply) a change that is about to be persisted, returning what it
    /// overwrote. If persisting fails, pass the [`Undo`]s to [`revert`](LeaseTable::revert)
    /// in reverse order (latest first) to restore the records, holds and quarantine.
    pub fn apply_tracked(&mut self, op: &LeaseOp, known: bool) -> Undo {
        let mut macs: Vec<Mac> = Vec::with_capacity(3);
        let mut quarantine = None;
        match op {
            LeaseOp::Remove(mac) => macs.push(*mac),
            LeaseOp::Hold { mac, ip, .. } => {
                macs.push(*mac);
                macs.extend(self.held_ips.get(ip).copied());
            }
            LeaseOp::Upsert(l) => {
                macs.push(l.mac);
                macs.extend(self.by_ip.get(&l.ip).copied());
                macs.extend(self.held_ips.get(&l.ip).copied());
                quarantine = Some((l.ip, self.quarantine.get(&l.ip).copied()));
            }
        }
        macs.sort_unstable();
        macs.dedup();
        let macs = macs
            .into_iter()
            .map(|mac| MacState {
                mac,
                record: self.by_mac.get(&mac).cloned(),
                hold: self.holds.get(&mac).copied(),
                unknown: self.unknown.expiry(mac),
            })
            .collect();
        self.apply(op, known);
        Undo { macs, quarantine }
    }

    /// Undo one [`apply_tracked`](LeaseTable::apply_tracked) change. Undo changes latest
    /// first. A saved record or hold whose address another MAC has taken since is not
    /// restored (the table never holds one address twice).
    pub fn revert(&mut self, undo: Undo) {
        for s in &undo.macs {
            self.remove(s.mac);
            self.drop_hold(s.mac);
            self.unknown.remove(s.mac);
        }
        for s in undo.macs {
            if let Some(l) = s.record
                && !self.by_ip.contains_key(&l.ip)
            {
                self.by_ip.insert(l.ip, l.mac);
                let ip = l.ip;
                self.by_mac.insert(l.mac, l);
                self.sync(ip);
            }
            if let Some((ip, until)) = s.hold
                && !self.held_ips.contains_key(&ip)
            {
                self.insert_hold(s.mac, ip, until);
            }
            if let Some(e) = s.unknown {
                self.unknown.set(s.mac, e);
            }
        }
        if let Some((ip, until)) = undo.quarantine {
            self.set_quarantine(ip, until);
        }
    }

    fn insert_hold(&mut self, mac: Mac, ip: Ipv4Addr, until: i64) {
        self.holds.insert(mac, (ip, until));
        self.holds_by_expiry.insert((until, mac));
        self.held_ips.insert(ip, mac);
        self.sync(ip);
    }

    fn drop_hold(&mut self, mac: Mac) {
        if let Some((ip, until)) = self.holds.remove(&mac) {
            self.holds_by_expiry.remove(&(until, mac));
            if self.held_ips.get(&ip) == Some(&mac) {
                self.held_ips.remove(&ip);
            }
            self.sync(ip);
        }
    }

    fn set_quarantine(&mut self, ip: Ipv4Addr, until: Option<i64>) {
        if let Some(old) = self.quarantine.remove(&ip) {
            self.quarantine_by_expiry.remove(&(old, ip));
        }
        if let Some(u) = until {
            self.quarantine.insert(ip, u);
            self.quarantine_by_expiry.insert((u, ip));
        }
        self.sync(ip);
    }

    fn remove(&mut self, mac: Mac) {
        if let Some(old) = self.by_mac.remove(&mac)
            && self.by_ip.get(&old.ip) == Some(&mac)
        {
            self.by_ip.remove(&old.ip);
            self.sync(old.ip);
        }
        self.unknown.remove(mac);
    }

    /// Recompute the allocation indexes for `ip` from the primary maps.
    fn sync(&mut self, ip: Ipv4Addr) {
        let record = self.by_ip.get(&ip).and_then(|m| self.by_mac.get(m));
        let blocked = self.held_ips.contains_key(&ip) || self.quarantine.contains_key(&ip);
        let pruned_at = self.pruned_at;
        let expired = |l: &Lease| pruned_at.is_some_and(|p| l.expires_at_ms <= p);
        let live_key = record
            .filter(|l| can_be_live(l.state) && !expired(l))
            .map(|l| l.expires_at_ms);
        let idle_key = record
            .filter(|l| !blocked && (!can_be_live(l.state) || expired(l)))
            .map(|l| l.updated_at_ms);
        let used = record.is_some() || blocked;
        self.used.set(u32::from(ip), used);
        self.live.set(ip, live_key);
        self.idle.set(ip, idle_key);
    }

    /// Drop expired holds, quarantine entries and unknown-share entries, and file records
    /// that expired as no longer live. Costs time proportional to what expired since the last
    /// call; the service calls it for every batch of packets.
    pub fn prune(&mut self, now_ms: i64) {
        let at = self.pruned_at.map_or(now_ms, |p| p.max(now_ms));
        self.pruned_at = Some(at);
        while let Some(&(until, ip)) = self.quarantine_by_expiry.first() {
            if until > now_ms {
                break;
            }
            self.set_quarantine(ip, None);
        }
        self.unknown.prune(now_ms);
        while let Some(&(until, mac)) = self.holds_by_expiry.first() {
            if until > now_ms {
                break;
            }
            self.drop_hold(mac);
        }
        while let Some(&(expires, ip)) = self.live.ordered.first() {
            if expires > at {
                break;
            }
            self.sync(ip);
            if self.live.ordered.first() == Some(&(expires, ip)) {
                break; // cannot happen (sync re-files it); never loop forever
            }
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
    /// requested one, else a free one (never used first, lowest address first; then the
    /// longest-unused record).
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
        let in_range = |ip: Ipv4Addr| (start..=end).contains(&u32::from(ip));
        // A candidate record: in range, available, not live. `None` if not a candidate.
        let reusable = |ip: Ipv4Addr| -> Option<i64> {
            let l = self.by_ip.get(&ip).and_then(|m| self.by_mac.get(m))?;
            (in_range(ip) && !l.is_live(now_ms) && self.available_for(ip, mac, policy, now_ms))
                .then_some(l.updated_at_ms)
        };
        let mut fresh = self.first_untouched(start, end, policy);
        let mut oldest: Option<(i64, Ipv4Addr)> = None;
        let mut consider = |cand: Option<(i64, Ipv4Addr)>| {
            if let Some(c) = cand
                && oldest.is_none_or(|o| c < o)
            {
                oldest = Some(c);
            }
        };
        // Held or quarantined addresses whose entries have expired but are not pruned yet.
        let expired_blocked = self
            .holds_by_expiry
            .iter()
            .take_while(|(u, _)| *u <= now_ms)
            .filter_map(|(_, m)| self.holds.get(m).map(|(ip, _)| *ip))
            .chain(
                self.quarantine_by_expiry
                    .iter()
                    .take_while(|(u, _)| *u <= now_ms)
                    .map(|(_, ip)| *ip),
            );
        for ip in expired_blocked {
            if !in_range(ip) || !self.available_for(ip, mac, policy, now_ms) {
                continue;
            }
            if self.by_ip.contains_key(&ip) {
                consider(reusable(ip).map(|u| (u, ip)));
            } else if fresh.is_none_or(|f| u32::from(ip) < f) {
                fresh = Some(u32::from(ip));
            }
        }
        if let Some(v) = fresh {
            return Ok(Ipv4Addr::from(v));
        }
        // Records that expired but are not filed as idle yet.
        for (_, ip) in self.live.ordered.iter().take_while(|(e, _)| *e <= now_ms) {
            consider(reusable(*ip).map(|u| (u, *ip)));
        }
        // The idle records, oldest first: the first usable one is the oldest of them.
        if let Some(c) = self
            .idle
            .ordered
            .iter()
            .find(|(_, ip)| reusable(*ip).is_some())
        {
            consider(Some(*c));
        }
        oldest.map(|(_, ip)| ip).ok_or(AllocError::PoolExhausted)
    }

    /// The lowest assignable address in `start..=end` with no record, hold or quarantine.
    fn first_untouched(&self, start: u32, end: u32, policy: &Policy) -> Option<u32> {
        let mut v = start;
        loop {
            let gap = self.used.first_gap_from(v)?;
            if gap > end {
                return None;
            }
            if policy.assignable(Ipv4Addr::from(gap)) {
                return Some(gap);
            }
            // Only the network, broadcast, server and router addresses are skipped here.
            v = gap.checked_add(1)?;
        }
    }
}

/// Per-MAC fixed-window rate limiter with a bounded number of tracked MACs.
///
/// Window starts are also queued in arrival order, so making room for a new MAC drops the
/// expired windows from the front of the queue instead of scanning every tracked MAC.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    max: u32,
    window_ms: i64,
    max_tracked: usize,
    windows: HashMap<Mac, (i64, u32)>,
    /// `(window start, MAC)` in the order windows started; entries whose MAC has started a
    /// newer window since are stale and skipped.
    starts: VecDeque<(i64, Mac)>,
}

impl RateLimiter {
    /// At most `max` requests per `window_ms` per MAC; track at most `max_tracked` MACs.
    pub fn new(max: u32, window_ms: u64, max_tracked: usize) -> Self {
        RateLimiter {
            max,
            window_ms: i64::try_from(window_ms).unwrap_or(i64::MAX),
            max_tracked,
            windows: HashMap::new(),
            starts: VecDeque::new(),
        }
    }

    /// Record a request from `mac` at `now_ms`; false if it is over the limit. When the table
    /// is full of live windows, untracked MACs are refused unless `known`.
    pub fn allow(&mut self, mac: Mac, known: bool, now_ms: i64) -> bool {
        let window = self.window_ms;
        if !self.windows.contains_key(&mac) && self.windows.len() >= self.max_tracked {
            while let Some(&(start, m)) = self.starts.front() {
                if now_ms.saturating_sub(start) < window {
                    break;
                }
                self.starts.pop_front();
                if self.windows.get(&m).is_some_and(|w| w.0 == start) {
                    self.windows.remove(&m);
                }
            }
            if self.windows.len() >= self.max_tracked {
                return known;
            }
        }
        let e = self.windows.entry(mac).or_insert((now_ms, 0));
        if now_ms.saturating_sub(e.0) >= window || now_ms < e.0 {
            *e = (now_ms, 0);
        }
        let started = e.1 == 0;
        e.1 = e.1.saturating_add(1);
        let allowed = e.1 <= self.max;
        if started {
            self.starts.push_back((now_ms, mac));
            if self.starts.len() > self.max_tracked.saturating_mul(2).saturating_add(16) {
                let windows = &self.windows;
                self.starts
                    .retain(|(start, m)| windows.get(m).is_some_and(|w| w.0 == *start));
            }
        }
        allowed
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
    /// Apply every [`LeaseOp::Upsert`] and [`LeaseOp::Remove`] in `ops` in order, as one
    /// atomic write (all or nothing), durable when this returns `Ok`; [`LeaseOp::Hold`]s are
    /// skipped. The result must equal calling [`upsert`](LeaseStore::upsert) and
    /// [`remove`](LeaseStore::remove) one by one. The service batches the bindings of all the
    /// REQUESTs that arrive while a write is in flight into one call (group commit).
    fn write_batch(
        &self,
        ops: &[LeaseOp],
    ) -> impl Future<Output = Result<(), LeaseStoreError>> + Send;
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
        self.write_batch(std::slice::from_ref(&LeaseOp::Upsert(lease.clone())))
            .await
            .map_err(|e| LeaseStoreError { op: "upsert", ..e })
    }

    async fn remove(&self, mac: Mac) -> Result<(), LeaseStoreError> {
        self.write_batch(&[LeaseOp::Remove(mac)])
            .await
            .map_err(|e| LeaseStoreError { op: "remove", ..e })
    }

    async fn write_batch(&self, ops: &[LeaseOp]) -> Result<(), LeaseStoreError> {
        self.check("write_batch")?;
        let mut rows = self.rows.lock().map_err(|_| LeaseStoreError {
            op: "write_batch",
            source: Box::new(Injected),
        })?;
        // All or nothing: work on a copy, swap it in at the end.
        let mut next = rows.clone();
        for op in ops {
            match op {
                LeaseOp::Upsert(lease) => {
                    // Mirror the SQL UNIQUE(ip) constraint.
                    if next
                        .values()
                        .any(|r| r.ip == lease.ip && r.mac != lease.mac)
                    {
                        return Err(LeaseStoreError {
                            op: "write_batch",
                            source: "UNIQUE constraint failed: leases.ip".into(),
                        });
                    }
                    next.insert(lease.mac, lease.clone());
                }
                LeaseOp::Remove(mac) => {
                    next.remove(mac);
                }
                LeaseOp::Hold { .. } => {}
            }
        }
        *rows = next;
        Ok(())
    }
}

/// Conformance check for a [`LeaseStore`] implementation, starting from an empty store:
/// upsert replaces by MAC, remove deletes (and tolerates absent rows), a batch equals its
/// writes one by one, load returns exactly what was written, field for field. `MemLeaseStore` passes it; the SQLite store should too.
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
    if got != vec![a2.clone(), c.clone()] {
        return Err(format!("after moving an address: {got:?}"));
    }
    // One batch, in order: a row removed and its address reused, a row moved, its old
    // address reused, a hold (not stored) and the removal of an absent row.
    let d = Lease {
        mac: mac(4),
        ip: a2.ip,
        hostname: Some("node-4".into()),
        updated_at_ms: 1_700_000_000_002,
        ..c.clone()
    };
    let mut c2 = c.clone();
    c2.ip = Ipv4Addr::new(10, 99, 0, 160);
    let e = Lease {
        mac: mac(5),
        ip: c.ip,
        client_id: Some("ff00".into()),
        ..d.clone()
    };
    let batch = [
        LeaseOp::Remove(mac(1)),
        LeaseOp::Upsert(d.clone()),
        LeaseOp::Upsert(c2.clone()),
        LeaseOp::Hold {
            mac: mac(6),
            ip: Ipv4Addr::new(10, 99, 0, 170),
            until_ms: 1,
        },
        LeaseOp::Remove(mac(9)),
        LeaseOp::Upsert(e.clone()),
    ];
    store.write_batch(&batch).await.map_err(err)?;
    let got = sorted(store.load_all().await.map_err(err)?);
    if got != vec![c2, d, e] {
        return Err(format!("after a batch: {got:?}"));
    }
    store.write_batch(&[]).await.map_err(err)?;
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
        // A batch is all or nothing: the first write is not kept when the second fails.
        let before = s.rows();
        let mut fresh = l.clone();
        fresh.mac = Mac([2, 0, 0, 0, 0, 0x43]);
        fresh.ip = Ipv4Addr::new(10, 99, 0, 250);
        let r = s
            .write_batch(&[LeaseOp::Upsert(fresh), LeaseOp::Upsert(dup)])
            .await;
        assert!(r.is_err());
        assert_eq!(s.rows(), before);
        s.set_failing(true);
        assert!(s.write_batch(&[LeaseOp::Remove(l.mac)]).await.is_err());
        assert_eq!(s.rows(), before);
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

    // ------------------------------------------------------------ allocator vs. a scan

    use super::super::config::{DhcpConfig, DhcpMode};
    use proptest::prelude::*;

    /// The allocator as it was before the indexes: walk the whole range. The reference model
    /// for the indexed [`LeaseTable::allocate`].
    fn allocate_by_scan(
        t: &LeaseTable,
        mac: Mac,
        requested: Option<Ipv4Addr>,
        known: bool,
        policy: &Policy,
        now_ms: i64,
    ) -> Result<Ipv4Addr, AllocError> {
        if let Some(ip) = t.hold(mac, now_ms)
            && t.available_for(ip, mac, policy, now_ms)
        {
            return Ok(ip);
        }
        if let Some(l) = t.get(mac)
            && l.state != LeaseState::Declined
            && t.available_for(l.ip, mac, policy, now_ms)
        {
            return Ok(l.ip);
        }
        let counted = t.unknown.expiry(mac).is_some_and(|e| e > now_ms);
        if !known && !counted && t.unknown_live(now_ms) >= policy.unknown_max_leases as usize {
            return Err(AllocError::UnknownShareExhausted);
        }
        if let Some(r) = requested
            && t.available_for(r, mac, policy, now_ms)
        {
            return Ok(r);
        }
        let mut oldest: Option<(i64, Ipv4Addr)> = None;
        for v in u32::from(policy.range_start)..=u32::from(policy.range_end) {
            let ip = Ipv4Addr::from(v);
            if !t.available_for(ip, mac, policy, now_ms) {
                continue;
            }
            match t.holder(ip).and_then(|m| t.get(m)) {
                None => return Ok(ip),
                Some(l) if !l.is_live(now_ms) => {
                    if oldest.is_none_or(|(u, _)| l.updated_at_ms < u) {
                        oldest = Some((l.updated_at_ms, ip));
                    }
                }
                Some(_) => {}
            }
        }
        oldest.map(|(_, ip)| ip).ok_or(AllocError::PoolExhausted)
    }

    /// A /28 with the server on .1 and the router on .5, range .0–.7: the network, server
    /// and router addresses are inside the range and must be skipped, leaving 5 assignable
    /// addresses for 8 MACs, so the pool often runs out and old records get reused.
    fn small_policy(unknown_max: u32) -> Policy {
        let mut c = DhcpConfig::new(
            DhcpMode::Full,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 0),
            Ipv4Addr::new(10, 0, 0, 7),
        );
        c.netmask = Ipv4Addr::new(255, 255, 255, 240);
        c.router = Some(Ipv4Addr::new(10, 0, 0, 5));
        c.http_base = "http://10.0.0.1:8080".into();
        c.unknown_max_leases = Some(unknown_max);
        Policy::from_config(&c).expect("valid policy")
    }

    /// Table operations for the property tests. Addresses go a little past the range
    /// (stored rows from an older, larger range).
    #[derive(Debug, Clone)]
    enum Step {
        Op(LeaseOp, bool),
        Prune(i64),
    }

    fn pmac(n: u8) -> Mac {
        Mac([2, 0, 0, 0, 0, n])
    }

    fn pip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    fn arb_state() -> impl Strategy<Value = LeaseState> {
        prop_oneof![
            Just(LeaseState::Bound),
            Just(LeaseState::Bound),
            Just(LeaseState::Released),
            Just(LeaseState::Declined),
            Just(LeaseState::Offered),
        ]
    }

    fn arb_lease() -> impl Strategy<Value = Lease> {
        (0u8..8, 0u8..12, arb_state(), 0i64..200, 0i64..200).prop_map(
            |(m, ip, state, expires, updated)| Lease {
                mac: pmac(m),
                ip: pip(ip),
                state,
                expires_at_ms: expires,
                client_id: None,
                hostname: None,
                updated_at_ms: updated,
            },
        )
    }

    fn arb_persisted_op() -> impl Strategy<Value = LeaseOp> {
        prop_oneof![
            4 => arb_lease().prop_map(LeaseOp::Upsert),
            1 => (0u8..8).prop_map(|m| LeaseOp::Remove(pmac(m))),
        ]
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            5 => (arb_persisted_op(), any::<bool>()).prop_map(|(op, k)| Step::Op(op, k)),
            3 => (0u8..8, 0u8..12, 0i64..200, any::<bool>()).prop_map(|(m, ip, until, k)| {
                Step::Op(LeaseOp::Hold { mac: pmac(m), ip: pip(ip), until_ms: until }, k)
            }),
            1 => (0i64..200).prop_map(Step::Prune),
        ]
    }

    fn run(t: &mut LeaseTable, step: &Step) {
        match step {
            Step::Op(op, known) => t.apply(op, *known),
            Step::Prune(now) => t.prune(*now),
        }
    }

    /// The address index agrees with the maps it is derived from.
    fn check_indexes(t: &LeaseTable) -> Result<(), TestCaseError> {
        for n in 0..=255u8 {
            let ip = pip(n);
            let used = t.by_ip.contains_key(&ip)
                || t.held_ips.contains_key(&ip)
                || t.quarantine.contains_key(&ip);
            prop_assert_eq!(t.used.contains(u32::from(ip)), used, "used({})", ip);
        }
        prop_assert_eq!(t.holds.len(), t.holds_by_expiry.len());
        prop_assert_eq!(t.quarantine.len(), t.quarantine_by_expiry.len());
        Ok(())
    }

    /// Every MAC, with and without a requested address, known and unknown, at several times
    /// (including every expiry in the table, where off-by-ones live).
    fn check_allocations(t: &LeaseTable, policy: &Policy) -> Result<(), TestCaseError> {
        let mut times: BTreeSet<i64> = [0, 37, 99, 150, 199, 250].into();
        times.extend(t.by_mac.values().map(|l| l.expires_at_ms));
        times.extend(t.holds.values().map(|(_, u)| *u));
        times.extend(t.quarantine.values().copied());
        for now in times {
            for m in 0..9u8 {
                for requested in [None, Some(pip(3)), Some(pip(9))] {
                    for known in [true, false] {
                        let got = t.allocate(pmac(m), requested, known, policy, now);
                        let want = allocate_by_scan(t, pmac(m), requested, known, policy, now);
                        prop_assert_eq!(
                            got,
                            want,
                            "mac {} req {:?} known {} now {}",
                            m,
                            requested,
                            known,
                            now
                        );
                    }
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The indexed allocator picks exactly what the full range scan picks, after any
        /// sequence of upserts, removes, holds and prunes (time may also go backwards).
        #[test]
        fn allocate_matches_the_range_scan(
            steps in proptest::collection::vec(arb_step(), 0..40),
            unknown_max in 0u32..6,
        ) {
            let policy = small_policy(unknown_max);
            let mut t = LeaseTable::new();
            for s in &steps {
                run(&mut t, s);
                check_indexes(&t)?;
            }
            check_allocations(&t, &policy)?;
        }

        /// Tracked changes undone latest-first restore the records, holds, quarantine and
        /// unknown share exactly, and the indexes with them.
        #[test]
        fn revert_restores_the_table(
            setup in proptest::collection::vec(arb_step(), 0..30),
            tracked in proptest::collection::vec((arb_persisted_op(), any::<bool>()), 1..10),
        ) {
            let policy = small_policy(3);
            let mut t = LeaseTable::new();
            for s in &setup {
                run(&mut t, s);
            }
            let before = t.clone();
            let undos: Vec<Undo> = tracked.iter().map(|(op, k)| t.apply_tracked(op, *k)).collect();
            for u in undos.into_iter().rev() {
                t.revert(u);
            }
            prop_assert_eq!(&t.by_mac, &before.by_mac);
            prop_assert_eq!(&t.by_ip, &before.by_ip);
            prop_assert_eq!(&t.holds, &before.holds);
            prop_assert_eq!(&t.held_ips, &before.held_ips);
            prop_assert_eq!(&t.quarantine, &before.quarantine);
            prop_assert_eq!(&t.unknown.by_mac, &before.unknown.by_mac);
            prop_assert_eq!(&t.used, &before.used);
            prop_assert_eq!(&t.idle.ordered, &before.idle.ordered);
            prop_assert_eq!(&t.live.ordered, &before.live.ordered);
            check_indexes(&t)?;
            check_allocations(&t, &policy)?;
        }
    }

    #[test]
    fn allocation_does_not_walk_a_full_pool() {
        // 65,534 bound leases in a /16 pool, then one more client: the answer comes from the
        // indexes (the scan would look at every address for every DISCOVER).
        let mut c = DhcpConfig::new(
            DhcpMode::Full,
            Ipv4Addr::new(10, 1, 0, 1),
            Ipv4Addr::new(10, 1, 0, 0),
            Ipv4Addr::new(10, 1, 255, 255),
        );
        c.netmask = Ipv4Addr::new(255, 255, 0, 0);
        c.http_base = "http://10.1.0.1:8080".into();
        let policy = Policy::from_config(&c).expect("policy");
        let mut t = LeaseTable::new();
        let now = 1_000;
        let mut n: u32 = 0;
        loop {
            let mac = Mac([2, 0, 0, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
            let Ok(ip) = t.allocate(mac, None, true, &policy, now) else {
                break;
            };
            assert!(policy.assignable(ip), "{ip}");
            t.apply(
                &LeaseOp::Upsert(Lease {
                    mac,
                    ip,
                    state: LeaseState::Bound,
                    expires_at_ms: now + 3_600_000,
                    client_id: None,
                    hostname: None,
                    updated_at_ms: now,
                }),
                true,
            );
            n += 1;
            assert!(n <= 70_000, "allocation never runs out");
        }
        assert_eq!(n, 65_533, "every assignable address handed out once");
        assert_eq!(t.len(), 65_533);
        // One client releases; a newcomer gets exactly that address.
        let first = t.holder(Ipv4Addr::new(10, 1, 0, 2)).expect("holder");
        let mut l = t.get(first).cloned().expect("lease");
        l.state = LeaseState::Released;
        l.expires_at_ms = now;
        t.apply(&LeaseOp::Upsert(l), true);
        let newcomer = Mac([4, 0, 0, 0, 0, 1]);
        assert_eq!(
            t.allocate(newcomer, None, true, &policy, now + 1),
            Ok(Ipv4Addr::new(10, 1, 0, 2))
        );
    }
}
