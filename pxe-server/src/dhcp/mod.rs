//! DHCPv4 server and proxyDHCP: pure decisions, lease allocation, and the socket service.
//!
//! Layout (pure cores first; only `service` and `ra` open sockets or read the clock):
//! * [`config`]: operator settings ([`DhcpConfig`]) and the validated [`Policy`].
//! * [`wire`]: strict packet validation with per-reason drop codes, the decoded
//!   [`RequestView`], and reply encoding (dhcproto underneath).
//! * [`boot`]: PXE/iPXE/UEFI-HTTP boot-file selection and the option-97 UUID normaliser.
//! * [`lease`]: lease records, the in-memory [`LeaseTable`] with allocation (over an address
//!   run set, `addrset`), the per-MAC
//!   [`RateLimiter`], and the [`LeaseStore`] persistence seam (+ [`MemLeaseStore`]).
//! * [`mod@decide`]: the pure decision `decide(request, lease view, policy, now) -> Decision`.
//! * [`stats`]: counters and the rogue-server record shared with the API.
//! * [`service`]: sockets and the receive loop ([`serve`]); [`ra`]: IPv6 RAs for iPXE.
//!
//! Address conflicts: no ICMP/ARP probe is sent before an offer (it costs every boot ~3 s).
//! A client that finds its address in use sends DHCPDECLINE; the address is then quarantined
//! for `decline_probation_ms` and the client gets another one.

mod addrset;
pub mod boot;
pub mod config;
pub mod decide;
pub mod lease;
pub mod ra;
pub mod service;
pub mod stats;
pub mod wire;

pub use boot::{BootChoice, ClientKind, NoBootReason, normalize_client_uuid, select_boot};
pub use config::{BootFiles, ConfigError, DhcpConfig, DhcpMode, Policy, parse_range};
pub use decide::{Decision, IgnoreReason, LeaseView, NakReason, RecordEvent, decide};
pub use lease::{
    Lease, LeaseOp, LeaseState, LeaseStore, LeaseStoreError, LeaseTable, MemLeaseStore,
    RateLimiter, Undo, check_lease_store,
};
pub use service::{DhcpServiceError, DhcpSockets, KnownClients, serve};
pub use stats::{DhcpShared, DhcpStats, RogueServer};
pub use wire::{MalformedReason, Reply, RequestView};
