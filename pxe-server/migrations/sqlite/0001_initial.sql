-- rackhand store, version 1. Portable types only (TEXT, BIGINT); timestamps are Unix
-- milliseconds; JSON documents are TEXT. The PostgreSQL twin differs only in `events.seq`.

CREATE TABLE machines (
    id               TEXT PRIMARY KEY,
    identity_key     TEXT NOT NULL,
    identity_kind    TEXT NOT NULL,
    -- = identity_key for the machine that owns the identity; NULL for conflict records. Unique,
    -- so two racing registrations of one new serial cannot both create a machine.
    identity_owner   TEXT UNIQUE,
    serial           TEXT,
    system_uuid      TEXT,
    serial_untrusted BIGINT NOT NULL DEFAULT 0,
    state            TEXT NOT NULL,
    version          BIGINT NOT NULL,
    macs             TEXT NOT NULL,
    hostname         TEXT,
    role             TEXT,
    snapshot         TEXT,
    reason           TEXT,
    conflict_with    TEXT,
    hardware         TEXT,
    created_at_ms    BIGINT NOT NULL,
    updated_at_ms    BIGINT NOT NULL
);
CREATE INDEX machines_identity ON machines (identity_key);
CREATE INDEX machines_state ON machines (state);

-- Which machine owns a MAC. A MAC belongs to at most one machine.
CREATE TABLE machine_macs (
    mac        TEXT PRIMARY KEY,
    machine_id TEXT NOT NULL REFERENCES machines (id)
);
CREATE INDEX machine_macs_machine ON machine_macs (machine_id);

-- Per-boot agent tokens, stored as SHA-256 hashes. A token is valid while it is not revoked,
-- not expired, and (once bound to a machine) the machine's version still equals the version at
-- issue: every state change bumps the version, so every state change revokes.
CREATE TABLE agent_tokens (
    token_hash      TEXT PRIMARY KEY,
    mac             TEXT NOT NULL,
    machine_id      TEXT,
    machine_version BIGINT,
    issued_at_ms    BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    revoked         BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX agent_tokens_machine ON agent_tokens (machine_id);
CREATE INDEX agent_tokens_mac ON agent_tokens (mac);

-- Append-only history. machine_id is NULL for boots of unknown MACs.
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    machine_id TEXT,
    mac        TEXT,
    at_ms      BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    kind       TEXT NOT NULL,
    from_state TEXT,
    to_state   TEXT,
    reason     TEXT,
    detail     TEXT
);
CREATE INDEX events_machine ON events (machine_id, seq);

-- DHCP leases (the boot-services issue fills these).
CREATE TABLE leases (
    mac           TEXT PRIMARY KEY,
    ip            TEXT NOT NULL UNIQUE,
    state         TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    client_id     TEXT,
    hostname      TEXT,
    updated_at_ms BIGINT NOT NULL
);
