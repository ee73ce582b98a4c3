-- rackhand store, version 2: retries of failed orders, and the scope of a recycle order.
-- Portable DDL (the PostgreSQL twin is identical).

-- Failed attempts of the machine's current install/recycle order; every state change resets
-- it (a new order starts over), except the failure-driven move to `broken`, which keeps the
-- final count.
ALTER TABLE machines ADD COLUMN order_attempts BIGINT NOT NULL DEFAULT 0;
-- After a failed attempt: the order is handed out again no earlier than this (Unix ms).
ALTER TABLE machines ADD COLUMN order_not_before_ms BIGINT;
-- The recycle order's kept disks: a JSON array of serials/WWNs, NULL when none.
ALTER TABLE machines ADD COLUMN keep_disks TEXT;
