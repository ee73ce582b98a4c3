//! The pure DHCP decision: request + lease view + policy + `now` → [`Decision`].
//!
//! Full mode follows RFC 2131 §4.3 (DISCOVER→OFFER; REQUEST in SELECTING, INIT-REBOOT and
//! RENEWING/REBINDING → ACK or NAK; RELEASE; DECLINE; INFORM) and §4.1 for reply routing
//! (relay → giaddr:67; NAK → broadcast; ciaddr set → unicast; otherwise broadcast, since
//! this server does not inject ARP entries). Proxy mode answers only PXE/HTTP-boot clients
//! with boot information and never assigns an address.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::boot::{BootChoice, select_boot};
use super::config::{DhcpMode, Policy};
use super::lease::{
    AllocError, Lease, LeaseOp, LeaseState, LeaseTable, client_id_hex, sanitize_hostname,
};
use super::wire::{ClientMessage, Destination, Reply, ReplyKind, RequestView};

/// UDP port of the DHCP server (and of relays).
pub const SERVER_PORT: u16 = 67;
/// UDP port of DHCP clients.
pub const CLIENT_PORT: u16 = 68;
/// UDP port of PXE boot-server discovery (proxyDHCP REQUESTs).
pub const PXE_PORT: u16 = 4011;

/// What the decision may read about leases and the client, computed by the caller.
#[derive(Debug, Clone, Copy)]
pub struct LeaseView<'a> {
    /// The lease table.
    pub table: &'a LeaseTable,
    /// The inventory knows this MAC.
    pub known: bool,
    /// The per-MAC rate limiter refused this request.
    pub rate_limited: bool,
}

/// Why a request gets no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    /// DHCP is off.
    ModeOff,
    /// Over the per-MAC rate limit.
    RateLimited,
    /// Relayed from a giaddr outside the served subnet.
    ForeignRelay,
    /// A full-mode request on port 4011.
    WrongPort,
    /// No free address.
    PoolExhausted,
    /// The unknown-client share of the pool is used up.
    UnknownShareExhausted,
    /// The client selected another server's offer.
    OtherServerSelected,
    /// Proxy mode: not a PXE/HTTP-boot client.
    NotPxeClient,
    /// Proxy mode: no boot file for this client.
    NoBootFile,
    /// REQUEST with neither option 54, option 50 nor ciaddr.
    RequestWithoutAddress,
    /// DECLINE for an address this client does not hold from us.
    DeclineNotOurs,
    /// RELEASE for an address this client does not hold from us.
    ReleaseNotOurs,
    /// INFORM without ciaddr.
    InformWithoutCiaddr,
    /// A message type proxy mode does not answer (DECLINE, RELEASE, INFORM).
    NotHandledInProxy,
    /// RENEWING/REBINDING for an address outside our subnet: not ours to answer.
    RenewNotOurs,
    /// Not relayed, yet sent from a source address outside the served subnet.
    ForeignSource,
}

impl IgnoreReason {
    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            IgnoreReason::ModeOff => "mode_off",
            IgnoreReason::RateLimited => "rate_limited",
            IgnoreReason::ForeignRelay => "foreign_relay",
            IgnoreReason::WrongPort => "wrong_port",
            IgnoreReason::PoolExhausted => "pool_exhausted",
            IgnoreReason::UnknownShareExhausted => "unknown_share_exhausted",
            IgnoreReason::OtherServerSelected => "other_server_selected",
            IgnoreReason::NotPxeClient => "not_pxe_client",
            IgnoreReason::NoBootFile => "no_boot_file",
            IgnoreReason::RequestWithoutAddress => "request_without_address",
            IgnoreReason::DeclineNotOurs => "decline_not_ours",
            IgnoreReason::ReleaseNotOurs => "release_not_ours",
            IgnoreReason::InformWithoutCiaddr => "inform_without_ciaddr",
            IgnoreReason::NotHandledInProxy => "not_handled_in_proxy",
            IgnoreReason::RenewNotOurs => "renew_not_ours",
            IgnoreReason::ForeignSource => "foreign_source",
        }
    }
}

/// Why a REQUEST is NAKed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NakReason {
    /// SELECTING: the requested address is not what we offered.
    NotOffered,
    /// The requested address is not on our subnet.
    WrongSubnet,
    /// The requested address is held by another client or quarantined.
    AddressUnavailable,
    /// This client is bound to a different address.
    WrongAddress,
    /// The requested address is on our subnet but outside the dynamic range.
    OutOfRange,
    /// Re-creating the binding would exceed the unknown-client share.
    UnknownShareExhausted,
}

impl NakReason {
    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            NakReason::NotOffered => "not_offered",
            NakReason::WrongSubnet => "wrong_subnet",
            NakReason::AddressUnavailable => "address_unavailable",
            NakReason::WrongAddress => "wrong_address",
            NakReason::OutOfRange => "out_of_range",
            NakReason::UnknownShareExhausted => "unknown_share_exhausted",
        }
    }
}

/// A state change without a reply (RELEASE, DECLINE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordEvent {
    /// The client released its address.
    Released,
    /// The client declined its address; it is quarantined.
    Declined,
}

impl RecordEvent {
    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            RecordEvent::Released => "released",
            RecordEvent::Declined => "declined",
        }
    }
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send an OFFER; apply `ops` (in-memory hold) to the table.
    Offer {
        /// The reply.
        reply: Reply,
        /// The boot file chosen.
        boot: BootChoice,
        /// Table changes (an offer hold; not persisted).
        ops: Vec<LeaseOp>,
    },
    /// Persist `ops`, then apply them and send the ACK. If persisting fails, send nothing.
    Ack {
        /// The reply.
        reply: Reply,
        /// The boot file chosen.
        boot: BootChoice,
        /// Bindings to persist before the ACK.
        ops: Vec<LeaseOp>,
    },
    /// Send a NAK.
    Nak {
        /// Why.
        reason: NakReason,
        /// The reply.
        reply: Reply,
    },
    /// Persist and apply `ops`; no reply.
    Record {
        /// What happened.
        event: RecordEvent,
        /// Changes.
        ops: Vec<LeaseOp>,
    },
    /// No reply, no change.
    Ignore {
        /// Why.
        reason: IgnoreReason,
    },
}

impl Decision {
    /// Stable code of the outcome (`offer`, `ack`, `nak:<reason>`, …) for logs.
    pub fn code(&self) -> String {
        match self {
            Decision::Offer { .. } => "offer".to_owned(),
            Decision::Ack { .. } => "ack".to_owned(),
            Decision::Nak { reason, .. } => format!("nak:{}", reason.code()),
            Decision::Record { event, .. } => format!("record:{}", event.code()),
            Decision::Ignore { reason } => format!("ignore:{}", reason.code()),
        }
    }

    /// The reply to send, if any.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Decision::Offer { reply, .. }
            | Decision::Ack { reply, .. }
            | Decision::Nak { reply, .. } => Some(reply),
            _ => None,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code())
    }
}

fn ignore(reason: IgnoreReason) -> Decision {
    Decision::Ignore { reason }
}

/// Decide how to answer `req`.
pub fn decide(req: &RequestView, view: &LeaseView<'_>, policy: &Policy, now_ms: i64) -> Decision {
    match policy.mode {
        DhcpMode::Off => ignore(IgnoreReason::ModeOff),
        DhcpMode::Full => decide_full(req, view, policy, now_ms),
        DhcpMode::Proxy => decide_proxy(req, view, policy),
    }
}

fn relayed(req: &RequestView) -> bool {
    !req.giaddr.is_unspecified()
}

/// Where the request may come from: a relay on our subnet, or a client on our subnet (with no
/// address yet, or one of ours). Anything else is not for us (reliability D7).
fn source_check(req: &RequestView, policy: &Policy) -> Option<IgnoreReason> {
    if relayed(req) {
        return (!policy.in_subnet(req.giaddr)).then_some(IgnoreReason::ForeignRelay);
    }
    let src = *req.arrival.src.ip();
    (!src.is_unspecified() && !policy.in_subnet(src)).then_some(IgnoreReason::ForeignSource)
}

/// RFC 2131 §4.1 routing for non-NAK replies: relay → giaddr:67; ciaddr set → ciaddr:68
/// (even with the BROADCAST flag); otherwise broadcast.
fn destination(req: &RequestView) -> Destination {
    if relayed(req) {
        Destination::Unicast(SocketAddrV4::new(req.giaddr, SERVER_PORT))
    } else if !req.ciaddr.is_unspecified() {
        Destination::Unicast(SocketAddrV4::new(req.ciaddr, CLIENT_PORT))
    } else {
        Destination::Broadcast
    }
}

fn base_reply(req: &RequestView, kind: ReplyKind, yiaddr: Ipv4Addr, policy: &Policy) -> Reply {
    let mut options = vec![(54, policy.server_ip.octets().to_vec())];
    if let Some(r82) = &req.relay_agent_info {
        options.push((82, r82.clone()));
    }
    Reply {
        kind,
        xid: req.xid,
        mac: req.mac,
        broadcast: req.broadcast,
        ciaddr: if kind == ReplyKind::Nak {
            Ipv4Addr::UNSPECIFIED
        } else {
            req.ciaddr
        },
        yiaddr,
        siaddr: Ipv4Addr::UNSPECIFIED,
        giaddr: req.giaddr,
        file: None,
        options,
        dest: destination(req),
    }
}

fn nak(req: &RequestView, reason: NakReason, policy: &Policy) -> Decision {
    let mut reply = base_reply(req, ReplyKind::Nak, Ipv4Addr::UNSPECIFIED, policy);
    // RFC 2131 §4.3.2: a relayed NAK carries the BROADCAST bit so the relay broadcasts it.
    reply.broadcast = true;
    reply.dest = if relayed(req) {
        Destination::Unicast(SocketAddrV4::new(req.giaddr, SERVER_PORT))
    } else {
        Destination::Broadcast
    };
    reply.options.push((56, reason.code().as_bytes().to_vec()));
    Decision::Nak { reason, reply }
}

fn add_lease_options(reply: &mut Reply, policy: &Policy) {
    let lease = policy.lease_secs;
    let mask = u32::from(policy.netmask);
    let bcast = Ipv4Addr::from(u32::from(policy.server_ip) | !mask);
    reply.options.push((1, policy.netmask.octets().to_vec()));
    if let Some(r) = policy.router {
        reply.options.push((3, r.octets().to_vec()));
    }
    if !policy.dns.is_empty() {
        reply
            .options
            .push((6, policy.dns.iter().flat_map(|a| a.octets()).collect()));
    }
    reply.options.push((28, bcast.octets().to_vec()));
    reply.options.push((51, lease.to_be_bytes().to_vec()));
    reply.options.push((58, (lease / 2).to_be_bytes().to_vec()));
    reply
        .options
        .push((59, (lease / 8 * 7).to_be_bytes().to_vec()));
}

/// Put the boot choice into the reply. `proxy` adds the proxyDHCP PXE options.
fn add_boot(reply: &mut Reply, req: &RequestView, boot: &BootChoice, policy: &Policy, proxy: bool) {
    let Some(file) = boot.file() else { return };
    reply.siaddr = policy.server_ip;
    if file.len() <= 127 {
        reply.file = Some(file.to_owned());
    }
    // Option 67 is what iPXE and EDK2 prefer; NUL-terminated as dnsmasq sends it.
    let mut f = file.as_bytes().to_vec();
    f.push(0);
    reply.options.push((67, f));
    match boot {
        BootChoice::HttpBoot(_) => reply.options.push((60, b"HTTPClient".to_vec())),
        BootChoice::IpxeScript(_) if !proxy => {
            // iPXE encapsulated option 176 (no-pxedhcp) = 1: skip the 3.4 s ProxyDHCP wait.
            reply.options.push((175, vec![176, 1, 1, 255]));
        }
        _ => {}
    }
    if proxy && !matches!(boot, BootChoice::HttpBoot(_)) {
        reply.options.push((60, b"PXEClient".to_vec()));
        // PXE vendor options: sub-option 6 (PXE_DISCOVERY_CONTROL) = 8: boot the file name
        // straight away, no boot-server discovery or menu.
        reply.options.push((43, vec![6, 1, 8, 255]));
    }
    if proxy && let Some(uuid) = &req.client_uuid {
        reply.options.push((97, uuid.clone()));
    }
}

fn bound_lease(req: &RequestView, ip: Ipv4Addr, policy: &Policy, now_ms: i64) -> Lease {
    let lease_ms = i64::try_from(policy.lease_ms()).unwrap_or(i64::MAX);
    Lease {
        mac: req.mac,
        ip,
        state: LeaseState::Bound,
        expires_at_ms: now_ms.saturating_add(lease_ms),
        client_id: req.client_id.as_deref().and_then(client_id_hex),
        hostname: req.hostname.as_deref().and_then(sanitize_hostname),
        updated_at_ms: now_ms,
    }
}

fn ack(
    req: &RequestView,
    ip: Ipv4Addr,
    table: &LeaseTable,
    policy: &Policy,
    now_ms: i64,
) -> Decision {
    let boot = select_boot(req, policy);
    let mut reply = base_reply(req, ReplyKind::Ack, ip, policy);
    add_lease_options(&mut reply, policy);
    add_boot(&mut reply, req, &boot, policy, false);
    let mut ops = Vec::new();
    if let Some(other) = table.holder(ip).filter(|m| *m != req.mac) {
        ops.push(LeaseOp::Remove(other));
    }
    ops.push(LeaseOp::Upsert(bound_lease(req, ip, policy, now_ms)));
    Decision::Ack { reply, boot, ops }
}

fn decide_full(req: &RequestView, view: &LeaseView<'_>, policy: &Policy, now_ms: i64) -> Decision {
    if view.rate_limited {
        return ignore(IgnoreReason::RateLimited);
    }
    if let Some(reason) = source_check(req, policy) {
        return ignore(reason);
    }
    if req.arrival.local_port != SERVER_PORT {
        return ignore(IgnoreReason::WrongPort);
    }
    let table = view.table;
    match req.msg {
        ClientMessage::Discover => {
            let ip = match table.allocate(req.mac, req.requested_ip, view.known, policy, now_ms) {
                Ok(ip) => ip,
                Err(AllocError::PoolExhausted) => return ignore(IgnoreReason::PoolExhausted),
                Err(AllocError::UnknownShareExhausted) => {
                    return ignore(IgnoreReason::UnknownShareExhausted);
                }
            };
            let boot = select_boot(req, policy);
            let mut reply = base_reply(req, ReplyKind::Offer, ip, policy);
            add_lease_options(&mut reply, policy);
            add_boot(&mut reply, req, &boot, policy, false);
            let hold_ms = i64::try_from(policy.offer_hold_ms).unwrap_or(i64::MAX);
            let ops = vec![LeaseOp::Hold {
                mac: req.mac,
                ip,
                until_ms: now_ms.saturating_add(hold_ms),
            }];
            Decision::Offer { reply, boot, ops }
        }
        ClientMessage::Request => decide_request(req, view, policy, now_ms),
        ClientMessage::Decline => {
            if req.server_id.is_some_and(|s| s != policy.server_ip) {
                return ignore(IgnoreReason::DeclineNotOurs);
            }
            let Some(ip) = req.requested_ip else {
                return ignore(IgnoreReason::DeclineNotOurs);
            };
            let ours = table.get(req.mac).is_some_and(|l| l.ip == ip)
                || table.hold(req.mac, now_ms) == Some(ip);
            if !ours {
                return ignore(IgnoreReason::DeclineNotOurs);
            }
            let probation = i64::try_from(policy.decline_probation_ms).unwrap_or(i64::MAX);
            let mut ops = Vec::new();
            if let Some(other) = table.holder(ip).filter(|m| *m != req.mac) {
                ops.push(LeaseOp::Remove(other));
            }
            ops.push(LeaseOp::Upsert(Lease {
                mac: req.mac,
                ip,
                state: LeaseState::Declined,
                expires_at_ms: now_ms.saturating_add(probation),
                client_id: req.client_id.as_deref().and_then(client_id_hex),
                hostname: None,
                updated_at_ms: now_ms,
            }));
            Decision::Record {
                event: RecordEvent::Declined,
                ops,
            }
        }
        ClientMessage::Release => {
            if req.server_id.is_some_and(|s| s != policy.server_ip) {
                return ignore(IgnoreReason::ReleaseNotOurs);
            }
            match table.get(req.mac) {
                Some(l) if l.ip == req.ciaddr && l.state == LeaseState::Bound => {
                    let mut l = l.clone();
                    l.state = LeaseState::Released;
                    l.expires_at_ms = now_ms;
                    l.updated_at_ms = now_ms;
                    Decision::Record {
                        event: RecordEvent::Released,
                        ops: vec![LeaseOp::Upsert(l)],
                    }
                }
                _ => ignore(IgnoreReason::ReleaseNotOurs),
            }
        }
        ClientMessage::Inform => {
            if req.ciaddr.is_unspecified() {
                return ignore(IgnoreReason::InformWithoutCiaddr);
            }
            let boot = select_boot(req, policy);
            let mut reply = base_reply(req, ReplyKind::Ack, Ipv4Addr::UNSPECIFIED, policy);
            reply.options.push((1, policy.netmask.octets().to_vec()));
            if let Some(r) = policy.router {
                reply.options.push((3, r.octets().to_vec()));
            }
            if !policy.dns.is_empty() {
                reply
                    .options
                    .push((6, policy.dns.iter().flat_map(|a| a.octets()).collect()));
            }
            add_boot(&mut reply, req, &boot, policy, false);
            Decision::Ack {
                reply,
                boot,
                ops: Vec::new(),
            }
        }
    }
}

fn decide_request(
    req: &RequestView,
    view: &LeaseView<'_>,
    policy: &Policy,
    now_ms: i64,
) -> Decision {
    let table = view.table;
    if let Some(sid) = req.server_id {
        // SELECTING.
        if sid != policy.server_ip {
            return ignore(IgnoreReason::OtherServerSelected);
        }
        let requested = req
            .requested_ip
            .or((!req.ciaddr.is_unspecified()).then_some(req.ciaddr));
        let Some(ip) = requested else {
            return nak(req, NakReason::NotOffered, policy);
        };
        let offered = table.hold(req.mac, now_ms) == Some(ip)
            || table
                .get(req.mac)
                .is_some_and(|l| l.ip == ip && l.state != LeaseState::Declined);
        if offered && table.available_for(ip, req.mac, policy, now_ms) {
            return ack(req, ip, table, policy, now_ms);
        }
        return nak(req, NakReason::NotOffered, policy);
    }
    // INIT-REBOOT (option 50) or RENEWING/REBINDING (ciaddr).
    let renewing = req.requested_ip.is_none();
    let ip = match (req.requested_ip, req.ciaddr.is_unspecified()) {
        (Some(ip), _) => ip,
        (None, false) => req.ciaddr,
        (None, true) => return ignore(IgnoreReason::RequestWithoutAddress),
    };
    // Relayed requests come from our subnet's relay (foreign relays were dropped above).
    if !policy.in_subnet(ip) {
        return if renewing {
            ignore(IgnoreReason::RenewNotOurs)
        } else {
            nak(req, NakReason::WrongSubnet, policy)
        };
    }
    match table.get(req.mac) {
        Some(l) if l.ip == ip && l.state != LeaseState::Declined => {
            if table.available_for(ip, req.mac, policy, now_ms) {
                ack(req, ip, table, policy, now_ms)
            } else {
                nak(req, NakReason::AddressUnavailable, policy)
            }
        }
        Some(l) if l.is_live(now_ms) => nak(req, NakReason::WrongAddress, policy),
        _ => {
            // No binding for this client at this address (store lost or rolled back, or the
            // lease expired): re-create it if the address is free (authoritative on our subnet).
            if !policy.in_range(ip) {
                return nak(req, NakReason::OutOfRange, policy);
            }
            if !table.available_for(ip, req.mac, policy, now_ms) {
                return nak(req, NakReason::AddressUnavailable, policy);
            }
            let counted = table.hold(req.mac, now_ms).is_some();
            if !view.known
                && !counted
                && table.unknown_live(now_ms) >= policy.unknown_max_leases as usize
            {
                return nak(req, NakReason::UnknownShareExhausted, policy);
            }
            ack(req, ip, table, policy, now_ms)
        }
    }
}

fn decide_proxy(req: &RequestView, view: &LeaseView<'_>, policy: &Policy) -> Decision {
    let pxe_vendor = req
        .vendor_class
        .as_deref()
        .is_some_and(|v| v.starts_with(b"PXEClient") || v.starts_with(b"HTTPClient"));
    if !pxe_vendor {
        return ignore(IgnoreReason::NotPxeClient);
    }
    if view.rate_limited {
        return ignore(IgnoreReason::RateLimited);
    }
    if let Some(reason) = source_check(req, policy) {
        return ignore(reason);
    }
    let on_4011 = req.arrival.local_port == PXE_PORT;
    let kind = match (req.msg, on_4011) {
        (ClientMessage::Discover, false) => ReplyKind::Offer,
        (ClientMessage::Request, true) => ReplyKind::Ack,
        (ClientMessage::Request, false) => {
            // A REQUEST on 67 is for the address server unless it names us.
            if req.server_id != Some(policy.server_ip) {
                return ignore(IgnoreReason::OtherServerSelected);
            }
            ReplyKind::Ack
        }
        _ => return ignore(IgnoreReason::NotHandledInProxy),
    };
    let boot = select_boot(req, policy);
    if boot.file().is_none() {
        return ignore(IgnoreReason::NoBootFile);
    }
    let mut reply = base_reply(req, kind, Ipv4Addr::UNSPECIFIED, policy);
    if on_4011 && !req.arrival.src.ip().is_unspecified() {
        reply.dest = Destination::Unicast(req.arrival.src);
    }
    add_boot(&mut reply, req, &boot, policy, true);
    match kind {
        ReplyKind::Offer => Decision::Offer {
            reply,
            boot,
            ops: Vec::new(),
        },
        _ => Decision::Ack {
            reply,
            boot,
            ops: Vec::new(),
        },
    }
}
