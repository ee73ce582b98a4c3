//! DHCP lease persistence on the store: the `LeaseStore` the DHCP service writes through before
//! every DHCPACK. Each upsert, remove or batch is one committed (fsynced) transaction.
//!
//! A batch (the service's group commit) is written as its net effect: one `DELETE` of every
//! row the batch touches or displaces and one multi-row `INSERT` of the rows it leaves, so a
//! transaction costs a handful of statements however many bindings it carries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use pxe_api::Mac;
use sqlx::Row;

use super::Store;
use crate::dhcp::{Lease, LeaseOp, LeaseState, LeaseStore, LeaseStoreError};

/// Parameters per `IN (...)` list, and rows per `INSERT` (7 parameters each): well below
/// SQLite's and PostgreSQL's parameter limits.
const DELETE_CHUNK: usize = 256;
const INSERT_CHUNK: usize = 128;

/// The net effect of a batch of lease writes: delete the rows of `macs` and any row holding
/// one of `ips`, then insert `rows` (distinct MACs, distinct addresses).
#[derive(Debug, Default, PartialEq, Eq)]
struct NetWrite {
    macs: Vec<Mac>,
    ips: Vec<Ipv4Addr>,
    rows: Vec<Lease>,
}

/// Fold `ops` (applied in order with `upsert`'s semantics: an upsert first deletes another
/// MAC's row on its address) into one [`NetWrite`].
fn net_write(ops: &[LeaseOp]) -> Result<NetWrite, LeaseStoreError> {
    let mut macs = BTreeSet::new();
    let mut ips = BTreeSet::new();
    let mut rows: BTreeMap<Mac, Lease> = BTreeMap::new();
    let mut owner: HashMap<Ipv4Addr, Mac> = HashMap::new();
    for op in ops {
        match op {
            LeaseOp::Upsert(l) => {
                if l.state == LeaseState::Offered {
                    return Err(corrupt("write_batch", "offers are not persisted".into()));
                }
                macs.insert(l.mac);
                ips.insert(l.ip);
                if let Some(other) = owner.remove(&l.ip)
                    && other != l.mac
                {
                    rows.remove(&other);
                }
                if let Some(old) = rows.insert(l.mac, l.clone())
                    && old.ip != l.ip
                {
                    owner.remove(&old.ip);
                }
                owner.insert(l.ip, l.mac);
            }
            LeaseOp::Remove(mac) => {
                macs.insert(*mac);
                if let Some(old) = rows.remove(mac) {
                    owner.remove(&old.ip);
                }
            }
            LeaseOp::Hold { .. } => {}
        }
    }
    Ok(NetWrite {
        macs: macs.into_iter().collect(),
        ips: ips.into_iter().collect(),
        rows: rows.into_values().collect(),
    })
}

/// How a batch statement names its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Params {
    /// `?, ?, …` bound in order. For SQLite: numbered parameters cost a linear lookup each
    /// when sqlx binds them (quadratic in a statement's parameter count), anonymous ones not.
    Anonymous,
    /// `$1, $2, …` (PostgreSQL).
    Numbered,
}

/// Placeholders for parameters `first..first + n` (1-based).
fn placeholders(style: Params, first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| match style {
            Params::Anonymous => "?".to_owned(),
            Params::Numbered => format!("${i}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn err(op: &'static str) -> impl FnOnce(sqlx::Error) -> LeaseStoreError {
    move |e| LeaseStoreError {
        op,
        source: Box::new(e),
    }
}

fn corrupt(op: &'static str, what: String) -> LeaseStoreError {
    LeaseStoreError {
        op,
        source: what.into(),
    }
}

impl LeaseStore for Store {
    async fn load_all(&self) -> Result<Vec<Lease>, LeaseStoreError> {
        let rows = sqlx::query(
            "SELECT mac, ip, state, expires_at_ms, client_id, hostname, updated_at_ms FROM leases \
             ORDER BY mac",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(err("load_all"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mac: String = r.try_get("mac").map_err(err("load_all"))?;
            let ip: String = r.try_get("ip").map_err(err("load_all"))?;
            let state: String = r.try_get("state").map_err(err("load_all"))?;
            // Tolerant load: a row that does not decode is skipped and named, never fatal
            // (a bad row must not stop the appliance from starting).
            let (Ok(mac), Ok(ip), Some(state)) = (
                mac.parse::<Mac>(),
                ip.parse::<Ipv4Addr>(),
                LeaseState::parse(&state),
            ) else {
                tracing::warn!(mac, ip, state, "skipping an undecodable lease row");
                continue;
            };
            out.push(Lease {
                mac,
                ip,
                state,
                expires_at_ms: r.try_get("expires_at_ms").map_err(err("load_all"))?,
                client_id: r.try_get("client_id").map_err(err("load_all"))?,
                hostname: r.try_get("hostname").map_err(err("load_all"))?,
                updated_at_ms: r.try_get("updated_at_ms").map_err(err("load_all"))?,
            });
        }
        Ok(out)
    }

    async fn upsert(&self, lease: &Lease) -> Result<(), LeaseStoreError> {
        if lease.state == LeaseState::Offered {
            return Err(corrupt("upsert", "offers are not persisted".into()));
        }
        let mut tx = self.pool.begin().await.map_err(err("upsert"))?;
        sqlx::query("DELETE FROM leases WHERE ip = $1 AND mac <> $2")
            .bind(lease.ip.to_string())
            .bind(lease.mac.to_string())
            .execute(&mut *tx)
            .await
            .map_err(err("upsert"))?;
        sqlx::query(
            "INSERT INTO leases (mac, ip, state, expires_at_ms, client_id, hostname, \
             updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (mac) DO UPDATE SET ip = excluded.ip, state = excluded.state, \
             expires_at_ms = excluded.expires_at_ms, client_id = excluded.client_id, \
             hostname = excluded.hostname, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(lease.mac.to_string())
        .bind(lease.ip.to_string())
        .bind(lease.state.as_str())
        .bind(lease.expires_at_ms)
        .bind(lease.client_id.clone())
        .bind(lease.hostname.clone())
        .bind(lease.updated_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(err("upsert"))?;
        tx.commit().await.map_err(err("upsert"))
    }

    async fn remove(&self, mac: Mac) -> Result<(), LeaseStoreError> {
        sqlx::query("DELETE FROM leases WHERE mac = $1")
            .bind(mac.to_string())
            .execute(&self.pool)
            .await
            .map_err(err("remove"))?;
        Ok(())
    }

    async fn write_batch(&self, ops: &[LeaseOp]) -> Result<(), LeaseStoreError> {
        const OP: &str = "write_batch";
        let net = net_write(ops)?;
        if net.macs.is_empty() {
            return Ok(());
        }
        let sqlite = self.pool.connect_options().database_url.scheme() == "sqlite";
        let style = if sqlite {
            Params::Anonymous
        } else {
            Params::Numbered
        };
        let statements = batch_statements(&net, style);
        let mut tx = self.pool.begin().await.map_err(err(OP))?;
        if sqlite {
            // SQLite runs several statements in one query (parameters continue across them):
            // one round trip to the connection's worker thread for the whole batch.
            let sql = statements
                .iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>()
                .join(";\n");
            let mut q = sqlx::query(&sql);
            for v in statements.iter().flat_map(|(_, v)| v) {
                q = v.bind_to(q);
            }
            q.execute(&mut *tx).await.map_err(err(OP))?;
        } else {
            for (sql, values) in &statements {
                let mut q = sqlx::query(sql);
                for v in values {
                    q = v.bind_to(q);
                }
                q.execute(&mut *tx).await.map_err(err(OP))?;
            }
        }
        tx.commit().await.map_err(err(OP))
    }
}

impl Store {
    /// The address bound to `mac` (state `bound`, not expired at `now_ms`).
    pub async fn bound_ip(
        &self,
        mac: Mac,
        now_ms: i64,
    ) -> Result<Option<Ipv4Addr>, super::StoreError> {
        let row = sqlx::query(
            "SELECT ip FROM leases WHERE mac = $1 AND state = 'bound' AND expires_at_ms > $2",
        )
        .bind(mac.to_string())
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(|source| super::StoreError::Query {
            op: "bound_ip",
            source,
        })?;
        Ok(row
            .and_then(|r| r.try_get::<String, _>("ip").ok())
            .and_then(|ip| ip.parse().ok()))
    }
}

/// A parameter value of a batch statement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Text(String),
    OptText(Option<String>),
    Int(i64),
}

impl Value {
    fn bind_to<'q>(
        &self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        match self {
            Value::Text(v) => q.bind(v.clone()),
            Value::OptText(v) => q.bind(v.clone()),
            Value::Int(v) => q.bind(*v),
        }
    }
}

/// The statements that apply `net`: deletes of the touched MACs' rows and of every row on an
/// upserted address, then multi-row inserts, each within the parameter bounds.
fn batch_statements(net: &NetWrite, style: Params) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    let chunk_of = |v: &[String], i: usize| -> Vec<String> {
        v.iter()
            .skip(i * DELETE_CHUNK)
            .take(DELETE_CHUNK)
            .cloned()
            .collect()
    };
    let macs: Vec<String> = net.macs.iter().map(Mac::to_string).collect();
    let ips: Vec<String> = net.ips.iter().map(Ipv4Addr::to_string).collect();
    for i in 0..macs.len().max(ips.len()).div_ceil(DELETE_CHUNK) {
        let (m, a) = (chunk_of(&macs, i), chunk_of(&ips, i));
        let mut parts = Vec::new();
        if !m.is_empty() {
            parts.push(format!("mac IN ({})", placeholders(style, 1, m.len())));
        }
        if !a.is_empty() {
            parts.push(format!(
                "ip IN ({})",
                placeholders(style, 1 + m.len(), a.len())
            ));
        }
        let sql = format!("DELETE FROM leases WHERE {}", parts.join(" OR "));
        out.push((sql, m.into_iter().chain(a).map(Value::Text).collect()));
    }
    for chunk in net.rows.chunks(INSERT_CHUNK) {
        let values = (0..chunk.len())
            .map(|i| format!("({})", placeholders(style, 1 + 7 * i, 7)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO leases (mac, ip, state, expires_at_ms, client_id, hostname, \
             updated_at_ms) VALUES {values}"
        );
        let mut binds = Vec::with_capacity(7 * chunk.len());
        for l in chunk {
            binds.extend([
                Value::Text(l.mac.to_string()),
                Value::Text(l.ip.to_string()),
                Value::Text(l.state.as_str().to_owned()),
                Value::Int(l.expires_at_ms),
                Value::OptText(l.client_id.clone()),
                Value::OptText(l.hostname.clone()),
                Value::Int(l.updated_at_ms),
            ]);
        }
        out.push((sql, binds));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[tokio::test]
    async fn sql_store_passes_the_lease_store_conformance_check() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        crate::dhcp::check_lease_store(&s).await.unwrap();
        // A batch with an offer in it is refused as a whole.
        let before = s.load_all().await.unwrap();
        let mut bad = before[0].clone();
        bad.state = LeaseState::Offered;
        let mut fine = before[1].clone();
        fine.hostname = Some("changed".into());
        let r = s
            .write_batch(&[LeaseOp::Upsert(fine), LeaseOp::Upsert(bad)])
            .await;
        assert!(r.is_err());
        assert_eq!(s.load_all().await.unwrap(), before);
    }

    #[tokio::test]
    async fn a_large_batch_spans_several_statements() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        let rows: Vec<Lease> = (0..700u32)
            .map(|i| Lease {
                mac: Mac([2, 0, 0, 0, (i >> 8) as u8, i as u8]),
                ip: Ipv4Addr::from(0x0a63_0000 + i),
                state: LeaseState::Bound,
                expires_at_ms: 10_000 + i64::from(i),
                client_id: None,
                hostname: Some(format!("n{i}")),
                updated_at_ms: 1,
            })
            .collect();
        let ops: Vec<LeaseOp> = rows.iter().cloned().map(LeaseOp::Upsert).collect();
        s.write_batch(&ops).await.unwrap();
        let mut got = s.load_all().await.unwrap();
        got.sort_by_key(|l| l.mac);
        assert_eq!(got, rows);
        // Every address moves one up (the last to a fresh one), all in one batch.
        let moved: Vec<LeaseOp> = rows
            .iter()
            .rev()
            .map(|l| {
                let mut l = l.clone();
                l.ip = Ipv4Addr::from(u32::from(l.ip) + 1);
                LeaseOp::Upsert(l)
            })
            .collect();
        s.write_batch(&moved).await.unwrap();
        let got = s.load_all().await.unwrap();
        assert_eq!(got.len(), 700);
        assert!(got.iter().all(|l| {
            let i = u32::from(l.ip) - 0x0a63_0000 - 1;
            l.mac == Mac([2, 0, 0, 0, (i >> 8) as u8, i as u8])
        }));
    }

    #[test]
    fn batch_statements_number_their_parameters() {
        let ops: Vec<LeaseOp> = (0..600u32)
            .map(|i| {
                LeaseOp::Upsert(Lease {
                    mac: Mac([2, 0, 0, 0, (i >> 8) as u8, i as u8]),
                    ip: Ipv4Addr::from(0x0a63_0000 + i),
                    state: LeaseState::Bound,
                    expires_at_ms: 1,
                    client_id: None,
                    hostname: None,
                    updated_at_ms: 1,
                })
            })
            .collect();
        let net = net_write(&ops).unwrap();
        for style in [Params::Anonymous, Params::Numbered] {
            let st = batch_statements(&net, style);
            // 600 MACs + 600 addresses in chunks of 256; 600 rows in chunks of 128.
            assert_eq!(st.len(), 3 + 5);
            let total: usize = st.iter().map(|(_, v)| v.len()).sum();
            assert_eq!(total, 2 * 600 + 7 * 600);
            for (sql, values) in &st {
                assert!(values.len() <= 7 * INSERT_CHUNK.max(DELETE_CHUNK));
                match style {
                    Params::Anonymous => assert_eq!(sql.matches('?').count(), values.len()),
                    Params::Numbered => {
                        assert!(!sql.contains('?'));
                        let last = format!("${}", values.len());
                        assert!(sql.contains(&last), "{sql}");
                        assert!(!sql.contains(&format!("${}", values.len() + 1)));
                    }
                }
            }
        }
    }

    /// The rows after `ops` applied one by one with `upsert`/`remove` semantics.
    fn sequential(rows: &BTreeMap<Mac, Lease>, ops: &[LeaseOp]) -> BTreeMap<Mac, Lease> {
        let mut rows = rows.clone();
        for op in ops {
            match op {
                LeaseOp::Upsert(l) => {
                    rows.retain(|m, r| !(r.ip == l.ip && *m != l.mac));
                    rows.insert(l.mac, l.clone());
                }
                LeaseOp::Remove(m) => {
                    rows.remove(m);
                }
                LeaseOp::Hold { .. } => {}
            }
        }
        rows
    }

    /// The rows after a [`NetWrite`], applied as the SQL does.
    fn netted(rows: &BTreeMap<Mac, Lease>, net: &NetWrite) -> Result<BTreeMap<Mac, Lease>, String> {
        let mut rows = rows.clone();
        rows.retain(|m, r| !net.macs.contains(m) && !net.ips.contains(&r.ip));
        for l in &net.rows {
            if rows.values().any(|r| r.ip == l.ip) || rows.insert(l.mac, l.clone()).is_some() {
                return Err(format!("insert of {l:?} violates a unique key"));
            }
        }
        Ok(rows)
    }

    fn arb_row() -> impl Strategy<Value = Lease> {
        (0u8..6, 0u8..6, 0i64..5).prop_map(|(m, ip, t)| Lease {
            mac: Mac([2, 0, 0, 0, 0, m]),
            ip: Ipv4Addr::new(10, 99, 0, ip),
            state: if t == 0 {
                LeaseState::Released
            } else {
                LeaseState::Bound
            },
            expires_at_ms: t,
            client_id: None,
            hostname: None,
            updated_at_ms: t,
        })
    }

    proptest! {
        /// The net write leaves exactly the rows the one-by-one writes leave, and never
        /// inserts a duplicate MAC or address.
        #[test]
        fn net_write_equals_one_by_one(
            start in proptest::collection::vec(arb_row(), 0..6),
            ops in proptest::collection::vec(prop_oneof![
                3 => arb_row().prop_map(LeaseOp::Upsert),
                1 => (0u8..6).prop_map(|m| LeaseOp::Remove(Mac([2, 0, 0, 0, 0, m]))),
            ], 0..12),
        ) {
            let start = sequential(&BTreeMap::new(), &start.into_iter().map(LeaseOp::Upsert).collect::<Vec<_>>());
            let net = net_write(&ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let got = netted(&start, &net).map_err(TestCaseError::fail)?;
            prop_assert_eq!(got, sequential(&start, &ops));
        }
    }

    fn lease(mac: &str, ip: &str, state: LeaseState) -> Lease {
        Lease {
            mac: mac.parse().unwrap(),
            ip: ip.parse().unwrap(),
            state,
            expires_at_ms: 10_000,
            client_id: None,
            hostname: Some("node1".into()),
            updated_at_ms: 1,
        }
    }

    #[tokio::test]
    async fn leases_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        s.upsert(&lease(
            "52:54:00:00:00:01",
            "10.99.0.100",
            LeaseState::Bound,
        ))
        .await
        .unwrap();
        s.upsert(&lease(
            "52:54:00:00:00:02",
            "10.99.0.101",
            LeaseState::Bound,
        ))
        .await
        .unwrap();
        // The same IP moving to another MAC replaces the old holder.
        s.upsert(&lease(
            "52:54:00:00:00:03",
            "10.99.0.101",
            LeaseState::Bound,
        ))
        .await
        .unwrap();
        assert!(
            s.upsert(&lease(
                "52:54:00:00:00:04",
                "10.99.0.102",
                LeaseState::Offered
            ))
            .await
            .is_err()
        );
        s.remove("52:54:00:00:00:01".parse().unwrap())
            .await
            .unwrap();
        s.close().await;
        let s = Store::open(dir.path()).await.unwrap();
        let all = s.load_all().await.unwrap();
        assert_eq!(
            all,
            vec![lease("52:54:00:00:00:03", "10.99.0.101", LeaseState::Bound)]
        );
        let mac = "52:54:00:00:00:03".parse().unwrap();
        assert_eq!(
            s.bound_ip(mac, 5).await.unwrap(),
            Some("10.99.0.101".parse().unwrap())
        );
        assert_eq!(s.bound_ip(mac, 20_000).await.unwrap(), None, "expired");
    }
}
