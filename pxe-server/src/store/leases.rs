//! DHCP lease persistence on the store: the `LeaseStore` the DHCP service writes through before
//! every DHCPACK. Each upsert is one committed (fsynced) transaction.

use std::net::Ipv4Addr;

use pxe_api::Mac;
use sqlx::Row;

use super::Store;
use crate::dhcp::{Lease, LeaseState, LeaseStore, LeaseStoreError};

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

#[cfg(test)]
mod tests {
    use super::*;

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
