//! The appliance's store: machines, MACs, per-boot agent tokens, DHCP leases, and the
//! append-only history.
//!
//! One implementation over `sqlx::Any`: SQLite (one file in the data directory, WAL,
//! `synchronous=FULL`, migrations compiled into the binary) today; the same queries are written
//! to run on PostgreSQL (`$N` placeholders, `ON CONFLICT`, no engine-specific functions), so a
//! fleet that outgrows one appliance changes a connection string, not this code.
//!
//! Every state change is one transaction with its history row and its token revocation; a
//! function returns only after the commit (and so, with `synchronous=FULL`, after the fsync).
//! Concurrency is optimistic: state-changing updates carry `WHERE version = $expected`, and a
//! caller that loses the race sees `Ok(false)` and re-reads.

mod leases;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use pxe_api::machine::EventView;
use pxe_api::{HardwareReport, IdentityKind, Mac, MachineState, MachineView};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

/// Store failures. Callers map these to HTTP 500/503 ("internal"), never to client errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be prepared.
    #[error("preparing the data directory {path}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error("opening the store {url}")]
    Open {
        /// Connection URL (no secrets for SQLite).
        url: String,
        /// Cause.
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("migrating the store schema")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("store operation {op} failed")]
    Query {
        /// Which operation.
        op: &'static str,
        /// Cause.
        #[source]
        source: sqlx::Error,
    },
    /// Another machine already owns this identity (a racing registration won).
    #[error("another machine already owns this identity")]
    Duplicate,
    /// A stored row does not decode.
    #[error("corrupt row in {table}: {what}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// What is wrong.
        what: String,
    },
}

type Result<T> = std::result::Result<T, StoreError>;

fn q(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { op, source }
}

/// A history entry to append.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    /// Machine, when known.
    pub machine_id: Option<String>,
    /// MAC involved (boots).
    pub mac: Option<Mac>,
    /// Unix ms.
    pub at_ms: i64,
    /// `operator`, `agent`, `appliance`.
    pub actor: &'static str,
    /// `transition`, `boot`, `register`, `progress`, `result`.
    pub kind: &'static str,
    /// State before.
    pub from_state: Option<MachineState>,
    /// State after.
    pub to_state: Option<MachineState>,
    /// Why.
    pub reason: Option<String>,
    /// Structured detail.
    pub detail: Option<serde_json::Value>,
}

/// A stored agent token (by hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// The boot MAC the script was served for.
    pub mac: Mac,
    /// The machine it is bound to (None until an unknown machine registers).
    pub machine_id: Option<String>,
    /// The machine's version at binding.
    pub machine_version: Option<i64>,
    /// Unix ms.
    pub expires_at_ms: i64,
    /// Explicitly revoked.
    pub revoked: bool,
}

/// A token to store.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// Boot MAC.
    pub mac: Mac,
    /// Bound machine and its version, for known machines.
    pub machine: Option<(String, i64)>,
    /// Unix ms.
    pub issued_at_ms: i64,
    /// Unix ms.
    pub expires_at_ms: i64,
}

/// Field changes that ride along with a state transition.
///
/// The retry bookkeeping and the recycle scope belong to the order the new state carries out,
/// so every transition sets them: by default the attempt count restarts at 0, the next-attempt
/// time is cleared, and no disk is kept.
#[derive(Debug, Clone, Default)]
pub struct TransitionChanges {
    /// New snapshot (`Some(None)` clears it).
    pub snapshot: Option<Option<String>>,
    /// New reason (`None` clears it: a state's reason belongs to that state).
    pub reason: Option<String>,
    /// Failed attempts to record (0 for a new order; the final count when failures break the
    /// machine).
    pub attempts: u32,
    /// Disks the new recycle order keeps (serials/WWNs); empty for every other transition.
    pub keep_disks: Vec<String>,
}

/// A failed attempt to record without a state change (the order will be retried).
#[derive(Debug, Clone)]
pub struct FailedAttempt {
    /// The attempt count the decision was made from (optimistic check).
    pub previous_attempts: u32,
    /// The new count.
    pub attempts: u32,
    /// Earliest next attempt, Unix ms.
    pub not_before_ms: i64,
    /// The machine's reason while it waits.
    pub reason: String,
}

/// Handle to the store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
}

/// File name of the SQLite database inside the data directory.
pub const DB_FILE: &str = "rackhand.db";

static MIGRATOR_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl Store {
    /// Opens (creating if needed) the SQLite store in `data_dir` and migrates it.
    pub async fn open(data_dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Self::open_url(&url).await
    }

    /// Opens a store by URL (`sqlite://…`).
    pub async fn open_url(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            // SQLite serialises writers; a few connections let readers proceed beside them.
            .max_connections(8)
            // SQLite connections live in-process: a liveness ping before every query only costs
            // a thread round trip.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    // Durability: FULL syncs the WAL on every commit, so a 2xx survives power
                    // loss, not just a process crash.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 30000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(|source| StoreError::Open {
                url: url.to_owned(),
                source,
            })?;
        MIGRATOR_SQLITE
            .run(&pool)
            .await
            .map_err(StoreError::Migrate)?;
        Ok(Store { pool })
    }

    /// Closes the pool (waits for connections to finish).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---------------------------------------------------------------- machines

    /// All machines, optionally only those in `state`, oldest first, without their hardware
    /// reports (a summary: the list of a large fleet stays small; `machine` has the details).
    pub async fn list_machines(&self, state: Option<MachineState>) -> Result<Vec<MachineView>> {
        let rows = match state {
            Some(s) => {
                sqlx::query(&format!(
                    "{SELECT_SUMMARY} WHERE state = $1 ORDER BY created_at_ms, id"
                ))
                .bind(s.as_str())
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!("{SELECT_SUMMARY} ORDER BY created_at_ms, id"))
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(q("list_machines"))?;
        rows.iter().map(machine_from_row).collect()
    }

    /// Number of machines.
    pub async fn count_machines(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM machines")
            .fetch_one(&self.pool)
            .await
            .map_err(q("count_machines"))?;
        row.try_get::<i64, _>("n").map_err(q("count_machines"))
    }

    /// One machine by id.
    pub async fn machine(&self, id: &str) -> Result<Option<MachineView>> {
        let row = sqlx::query(&format!("{SELECT_MACHINE} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("machine"))?;
        row.as_ref().map(machine_from_row).transpose()
    }

    /// A machine by any reference an operator might type: id, MAC, serial, or identity key.
    pub async fn find_machine(&self, reference: &str) -> Result<Option<MachineView>> {
        if let Some(m) = self.machine(reference).await? {
            return Ok(Some(m));
        }
        if let Ok(mac) = reference.parse::<Mac>() {
            return self.machine_by_mac(mac).await;
        }
        let row = sqlx::query(&format!(
            "{SELECT_MACHINE} WHERE identity_key = $1 OR serial = $2 \
             ORDER BY CASE WHEN state = 'conflict' THEN 1 ELSE 0 END, created_at_ms LIMIT 1"
        ))
        .bind(reference)
        .bind(reference)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("find_machine"))?;
        row.as_ref().map(machine_from_row).transpose()
    }

    /// The machine owning `mac`.
    pub async fn machine_by_mac(&self, mac: Mac) -> Result<Option<MachineView>> {
        let row = sqlx::query(&format!(
            "{SELECT_MACHINE} WHERE id = (SELECT machine_id FROM machine_macs WHERE mac = $1)"
        ))
        .bind(mac.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(q("machine_by_mac"))?;
        row.as_ref().map(machine_from_row).transpose()
    }

    /// The (non-conflict) machine registered under `identity_key`.
    pub async fn machine_by_identity(&self, identity_key: &str) -> Result<Option<MachineView>> {
        let row = sqlx::query(&format!(
            "{SELECT_MACHINE} WHERE identity_key = $1 AND state <> 'conflict' \
             ORDER BY created_at_ms LIMIT 1"
        ))
        .bind(identity_key)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("machine_by_identity"))?;
        row.as_ref().map(machine_from_row).transpose()
    }

    /// Every MAC of every machine.
    pub async fn all_macs(&self) -> Result<Vec<Mac>> {
        let rows = sqlx::query("SELECT mac FROM machine_macs")
            .fetch_all(&self.pool)
            .await
            .map_err(q("all_macs"))?;
        Ok(rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>("mac").ok())
            .filter_map(|m| m.parse().ok())
            .collect())
    }

    /// Ids of the machines owning any of `macs` (deduplicated, sorted).
    pub async fn mac_owners(&self, macs: &[Mac]) -> Result<Vec<String>> {
        let mut owners = Vec::new();
        for mac in macs {
            let row = sqlx::query("SELECT machine_id FROM machine_macs WHERE mac = $1")
                .bind(mac.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(q("mac_owners"))?;
            if let Some(row) = row {
                owners.push(
                    row.try_get::<String, _>("machine_id")
                        .map_err(q("mac_owners"))?,
                );
            }
        }
        owners.sort();
        owners.dedup();
        Ok(owners)
    }

    /// Inserts a new machine with its MACs (MACs another machine owns are not claimed), binds
    /// `token_hash` to it, and appends `event`, in one transaction. A non-conflict machine owns
    /// its identity key: inserting a second owner fails with [`StoreError::Duplicate`].
    pub async fn insert_machine(
        &self,
        m: &MachineView,
        token_hash: Option<&str>,
        event: &NewEvent,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(q("insert_machine"))?;
        sqlx::query(
            "INSERT INTO machines (id, identity_key, identity_kind, identity_owner, serial, \
             system_uuid, serial_untrusted, state, version, macs, hostname, role, snapshot, \
             reason, conflict_with, hardware, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $18)",
        )
        .bind(m.id.as_str())
        .bind(m.identity_key.as_str())
        .bind(m.identity_kind.as_str())
        .bind((m.state != MachineState::Conflict).then(|| m.identity_key.clone()))
        .bind(m.serial.clone())
        .bind(m.system_uuid.clone())
        .bind(i64::from(m.serial_untrusted))
        .bind(m.state.as_str())
        .bind(m.version)
        .bind(macs_json(&m.macs))
        .bind(m.hostname.clone())
        .bind(m.role.clone())
        .bind(m.snapshot.clone())
        .bind(m.reason.clone())
        .bind(m.conflict_with.clone())
        .bind(hardware_json(m.hardware.as_ref()))
        .bind(m.created_at_ms)
        .bind(m.updated_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Duplicate,
            _ => StoreError::Query {
                op: "insert_machine",
                source: e,
            },
        })?;
        for mac in &m.macs {
            sqlx::query(
                "INSERT INTO machine_macs (mac, machine_id) VALUES ($1, $2) \
                 ON CONFLICT (mac) DO NOTHING",
            )
            .bind(mac.to_string())
            .bind(m.id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(q("insert_machine"))?;
        }
        if let Some(h) = token_hash {
            bind_token(&mut tx, h, &m.id, m.version).await?;
        }
        // The discovery boots of this machine's MACs happened before it had an id: attribute
        // them, so its history starts at its first netboot.
        for mac in &m.macs {
            sqlx::query(
                "UPDATE events SET machine_id = $1 WHERE mac = $2 AND machine_id IS NULL \
                 AND kind = 'boot'",
            )
            .bind(m.id.as_str())
            .bind(mac.to_string())
            .execute(&mut *tx)
            .await
            .map_err(q("insert_machine"))?;
        }
        insert_event(&mut tx, event).await?;
        tx.commit().await.map_err(q("insert_machine"))
    }

    /// Refreshes a registered machine's facts (not its state or version), re-points its MACs,
    /// binds `token_hash`, and appends `event`. Returns false if the version moved meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub async fn update_registration(
        &self,
        id: &str,
        expected_version: i64,
        serial: Option<&str>,
        system_uuid: Option<&str>,
        macs: &[Mac],
        hardware: &HardwareReport,
        token_hash: Option<&str>,
        event: &NewEvent,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(q("update_registration"))?;
        let done = sqlx::query(
            "UPDATE machines SET serial = $1, system_uuid = $2, macs = $3, hardware = $4, \
             updated_at_ms = $5 WHERE id = $6 AND version = $7",
        )
        .bind(serial)
        .bind(system_uuid)
        .bind(macs_json(macs))
        .bind(hardware_json(Some(hardware)))
        .bind(event.at_ms)
        .bind(id)
        .bind(expected_version)
        .execute(&mut *tx)
        .await
        .map_err(q("update_registration"))?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM machine_macs WHERE machine_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(q("update_registration"))?;
        for mac in macs {
            sqlx::query(
                "INSERT INTO machine_macs (mac, machine_id) VALUES ($1, $2) \
                 ON CONFLICT (mac) DO NOTHING",
            )
            .bind(mac.to_string())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(q("update_registration"))?;
        }
        if let Some(h) = token_hash {
            bind_token(&mut tx, h, id, expected_version).await?;
        }
        insert_event(&mut tx, event).await?;
        tx.commit().await.map_err(q("update_registration"))?;
        Ok(true)
    }

    /// Moves a machine to `to` if its version is still `expected_version`: bumps the version,
    /// applies `changes`, revokes every agent token of the machine, and appends `event`, in one
    /// transaction. Returns false (and changes nothing) if the version moved.
    pub async fn apply_transition(
        &self,
        id: &str,
        expected_version: i64,
        to: MachineState,
        changes: &TransitionChanges,
        event: &NewEvent,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(q("apply_transition"))?;
        let keep = (!changes.keep_disks.is_empty())
            .then(|| serde_json::to_string(&changes.keep_disks).unwrap_or_else(|_| "[]".into()));
        let (snapshot_set, id_n) = match changes.snapshot {
            Some(_) => (", snapshot = $6", 7),
            None => ("", 6),
        };
        let sql = format!(
            "UPDATE machines SET state = $1, version = version + 1, reason = $2, \
             order_attempts = $3, order_not_before_ms = NULL, keep_disks = $4, \
             updated_at_ms = $5{snapshot_set} WHERE id = ${id_n} AND version = ${}",
            id_n + 1
        );
        let mut query = sqlx::query(&sql)
            .bind(to.as_str())
            .bind(changes.reason.clone())
            .bind(i64::from(changes.attempts))
            .bind(keep)
            .bind(event.at_ms);
        if let Some(snapshot) = &changes.snapshot {
            query = query.bind(snapshot.clone());
        }
        let done = query
            .bind(id)
            .bind(expected_version)
            .execute(&mut *tx)
            .await
            .map_err(q("apply_transition"))?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("UPDATE agent_tokens SET revoked = 1 WHERE machine_id = $1 AND revoked = 0")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(q("apply_transition"))?;
        insert_event(&mut tx, event).await?;
        tx.commit().await.map_err(q("apply_transition"))?;
        Ok(true)
    }

    /// Records a failed attempt of the machine's current order (count, next-attempt time,
    /// reason) with its event, without changing state or version (the agent's token stays
    /// valid: it keeps polling and is told to wait). Returns false, changing nothing, if the
    /// version or the attempt count moved meanwhile.
    pub async fn record_failed_attempt(
        &self,
        id: &str,
        expected_version: i64,
        failed: &FailedAttempt,
        event: &NewEvent,
    ) -> Result<bool> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(q("record_failed_attempt"))?;
        let done = sqlx::query(
            "UPDATE machines SET order_attempts = $1, order_not_before_ms = $2, reason = $3, \
             updated_at_ms = $4 WHERE id = $5 AND version = $6 AND order_attempts = $7",
        )
        .bind(i64::from(failed.attempts))
        .bind(failed.not_before_ms)
        .bind(failed.reason.as_str())
        .bind(event.at_ms)
        .bind(id)
        .bind(expected_version)
        .bind(i64::from(failed.previous_attempts))
        .execute(&mut *tx)
        .await
        .map_err(q("record_failed_attempt"))?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        insert_event(&mut tx, event).await?;
        tx.commit().await.map_err(q("record_failed_attempt"))?;
        Ok(true)
    }

    // ---------------------------------------------------------------- events

    /// Appends one history entry.
    pub async fn append_event(&self, event: &NewEvent) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(q("append_event"))?;
        insert_event(&mut tx, event).await?;
        tx.commit().await.map_err(q("append_event"))
    }

    /// A machine's history, oldest first.
    pub async fn history(&self, machine_id: &str) -> Result<Vec<EventView>> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, actor, kind, from_state, to_state, reason, detail FROM events \
             WHERE machine_id = $1 ORDER BY seq",
        )
        .bind(machine_id)
        .fetch_all(&self.pool)
        .await
        .map_err(q("history"))?;
        events_of(&rows)
    }

    /// The machine's latest `progress` and `transition` events, newest first, at most
    /// `limit` (what [`crate::progress::summarize`] needs).
    pub async fn recent_progress(&self, machine_id: &str, limit: i64) -> Result<Vec<EventView>> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, actor, kind, from_state, to_state, reason, detail FROM events \
             WHERE machine_id = $1 AND kind IN ('progress', 'transition') \
             ORDER BY seq DESC LIMIT $2",
        )
        .bind(machine_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("recent_progress"))?;
        events_of(&rows)
    }
}

fn events_of(rows: &[AnyRow]) -> Result<Vec<EventView>> {
    rows.iter()
        .map(|r| {
            let detail: Option<String> = r.try_get("detail").map_err(q("history"))?;
            Ok(EventView {
                seq: r.try_get("seq").map_err(q("history"))?,
                at_ms: r.try_get("at_ms").map_err(q("history"))?,
                actor: r.try_get("actor").map_err(q("history"))?,
                kind: r.try_get("kind").map_err(q("history"))?,
                from_state: r.try_get("from_state").map_err(q("history"))?,
                to_state: r.try_get("to_state").map_err(q("history"))?,
                reason: r.try_get("reason").map_err(q("history"))?,
                detail: detail.and_then(|d| serde_json::from_str(&d).ok()),
            })
        })
        .collect()
}

impl Store {
    // ---------------------------------------------------------------- tokens

    /// Stores a new per-boot token and the boot event. For an unknown MAC, earlier unbound
    /// tokens of that MAC are dropped (one live discovery token per MAC); expired tokens are
    /// swept.
    pub async fn issue_token(&self, t: &NewToken, event: &NewEvent) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(q("issue_token"))?;
        sqlx::query("DELETE FROM agent_tokens WHERE expires_at_ms < $1")
            .bind(t.issued_at_ms)
            .execute(&mut *tx)
            .await
            .map_err(q("issue_token"))?;
        if t.machine.is_none() {
            sqlx::query("DELETE FROM agent_tokens WHERE mac = $1 AND machine_id IS NULL")
                .bind(t.mac.to_string())
                .execute(&mut *tx)
                .await
                .map_err(q("issue_token"))?;
        }
        sqlx::query(
            "INSERT INTO agent_tokens (token_hash, mac, machine_id, machine_version, \
             issued_at_ms, expires_at_ms, revoked) VALUES ($1, $2, $3, $4, $5, $6, 0)",
        )
        .bind(t.token_hash.as_str())
        .bind(t.mac.to_string())
        .bind(t.machine.as_ref().map(|(id, _)| id.clone()))
        .bind(t.machine.as_ref().map(|(_, v)| *v))
        .bind(t.issued_at_ms)
        .bind(t.expires_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(q("issue_token"))?;
        insert_event(&mut tx, event).await?;
        tx.commit().await.map_err(q("issue_token"))
    }

    /// Looks a token up by its hash.
    pub async fn token(&self, token_hash: &str) -> Result<Option<TokenRow>> {
        let row = sqlx::query(
            "SELECT token_hash, mac, machine_id, machine_version, expires_at_ms, revoked \
             FROM agent_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("token"))?;
        let Some(r) = row else { return Ok(None) };
        let mac: String = r.try_get("mac").map_err(q("token"))?;
        Ok(Some(TokenRow {
            token_hash: r.try_get("token_hash").map_err(q("token"))?,
            mac: mac.parse().map_err(|_| StoreError::Corrupt {
                table: "agent_tokens",
                what: format!("bad mac {mac:?}"),
            })?,
            machine_id: r.try_get("machine_id").map_err(q("token"))?,
            machine_version: r.try_get("machine_version").map_err(q("token"))?,
            expires_at_ms: r.try_get("expires_at_ms").map_err(q("token"))?,
            revoked: r.try_get::<i64, _>("revoked").map_err(q("token"))? != 0,
        }))
    }

    /// A digest of every row of every table, for tests that prove a refusal changed nothing.
    pub async fn content_digest(&self) -> Result<String> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (table, order) in [
            ("machines", "id"),
            ("machine_macs", "mac"),
            ("agent_tokens", "token_hash"),
            ("events", "seq"),
            ("leases", "mac"),
        ] {
            let rows = sqlx::query(&format!("SELECT * FROM {table} ORDER BY {order}"))
                .fetch_all(&self.pool)
                .await
                .map_err(q("content_digest"))?;
            h.update(table.as_bytes());
            for r in rows {
                for i in 0..r.len() {
                    let v: Option<String> = r
                        .try_get::<Option<String>, _>(i)
                        .or_else(|_| {
                            r.try_get::<Option<i64>, _>(i)
                                .map(|o| o.map(|n| n.to_string()))
                        })
                        .map_err(q("content_digest"))?;
                    h.update(format!("{v:?}|").as_bytes());
                }
                h.update(b"\n");
            }
        }
        Ok(hex::encode(h.finalize()))
    }
}

const SELECT_MACHINE: &str = "SELECT id, identity_key, identity_kind, serial, system_uuid, \
    serial_untrusted, state, version, macs, hostname, role, snapshot, reason, conflict_with, \
    hardware, order_attempts, order_not_before_ms, keep_disks, created_at_ms, updated_at_ms \
    FROM machines";

/// Like [`SELECT_MACHINE`] without the hardware report.
const SELECT_SUMMARY: &str = "SELECT id, identity_key, identity_kind, serial, system_uuid, \
    serial_untrusted, state, version, macs, hostname, role, snapshot, reason, conflict_with, \
    NULL AS hardware, order_attempts, order_not_before_ms, keep_disks, created_at_ms, \
    updated_at_ms FROM machines";

fn macs_json(macs: &[Mac]) -> String {
    serde_json::to_string(macs).unwrap_or_else(|_| "[]".into())
}

fn hardware_json(h: Option<&HardwareReport>) -> Option<String> {
    h.and_then(|h| serde_json::to_string(h).ok())
}

async fn bind_token(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    token_hash: &str,
    machine_id: &str,
    version: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE agent_tokens SET machine_id = $1, machine_version = $2 WHERE token_hash = $3",
    )
    .bind(machine_id)
    .bind(version)
    .bind(token_hash)
    .execute(&mut **tx)
    .await
    .map_err(q("bind_token"))?;
    Ok(())
}

async fn insert_event(tx: &mut sqlx::Transaction<'_, sqlx::Any>, e: &NewEvent) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (machine_id, mac, at_ms, actor, kind, from_state, to_state, reason, \
         detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(e.machine_id.clone())
    .bind(e.mac.map(|m| m.to_string()))
    .bind(e.at_ms)
    .bind(e.actor)
    .bind(e.kind)
    .bind(e.from_state.map(|s| s.as_str()))
    .bind(e.to_state.map(|s| s.as_str()))
    .bind(e.reason.clone())
    .bind(e.detail.as_ref().map(|d| d.to_string()))
    .execute(&mut **tx)
    .await
    .map_err(q("insert_event"))?;
    Ok(())
}

fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt {
        table: "machines",
        what,
    }
}

fn machine_from_row(r: &AnyRow) -> Result<MachineView> {
    let g = q("decode machine");
    let state: String = r.try_get("state").map_err(q("decode machine"))?;
    let kind: String = r.try_get("identity_kind").map_err(q("decode machine"))?;
    let macs: String = r.try_get("macs").map_err(q("decode machine"))?;
    let hardware: Option<String> = r.try_get("hardware").map_err(q("decode machine"))?;
    let id: String = r.try_get("id").map_err(g)?;
    let attempts: i64 = r.try_get("order_attempts").map_err(q("decode machine"))?;
    let keep_disks: Option<String> = r.try_get("keep_disks").map_err(q("decode machine"))?;
    let keep_disks = match keep_disks {
        None => Vec::new(),
        Some(k) => serde_json::from_str(&k)
            .map_err(|e| corrupt(format!("machine {id}: keep_disks: {e}")))?,
    };
    Ok(MachineView {
        attempts: u32::try_from(attempts.max(0)).unwrap_or(u32::MAX),
        next_attempt_at_ms: r
            .try_get("order_not_before_ms")
            .map_err(q("decode machine"))?,
        keep_disks,
        progress: None,
        state: MachineState::from_str(&state)
            .map_err(|_| corrupt(format!("machine {id}: unknown state {state:?}")))?,
        identity_kind: match kind.as_str() {
            "serial" => IdentityKind::Serial,
            "uuid" => IdentityKind::Uuid,
            "mac" => IdentityKind::Mac,
            _ => {
                return Err(corrupt(format!(
                    "machine {id}: unknown identity kind {kind:?}"
                )));
            }
        },
        macs: serde_json::from_str(&macs)
            .map_err(|e| corrupt(format!("machine {id}: macs: {e}")))?,
        hardware: hardware.and_then(|h| serde_json::from_str(&h).ok()),
        identity_key: r.try_get("identity_key").map_err(q("decode machine"))?,
        serial: r.try_get("serial").map_err(q("decode machine"))?,
        system_uuid: r.try_get("system_uuid").map_err(q("decode machine"))?,
        serial_untrusted: r
            .try_get::<i64, _>("serial_untrusted")
            .map_err(q("decode machine"))?
            != 0,
        version: r.try_get("version").map_err(q("decode machine"))?,
        hostname: r.try_get("hostname").map_err(q("decode machine"))?,
        role: r.try_get("role").map_err(q("decode machine"))?,
        snapshot: r.try_get("snapshot").map_err(q("decode machine"))?,
        reason: r.try_get("reason").map_err(q("decode machine"))?,
        conflict_with: r.try_get("conflict_with").map_err(q("decode machine"))?,
        created_at_ms: r.try_get("created_at_ms").map_err(q("decode machine"))?,
        updated_at_ms: r.try_get("updated_at_ms").map_err(q("decode machine"))?,
        id,
    })
}
