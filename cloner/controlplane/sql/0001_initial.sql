-- Control plane schema v1: the tenant registry, the request queue, daemon heartbeats and history.
CREATE TABLE tenants (
    tenant_id        TEXT PRIMARY KEY,
    status           TEXT NOT NULL,
    engine           TEXT NOT NULL,
    industry         TEXT NOT NULL,
    template_version TEXT NOT NULL,
    endpoint         TEXT,                       -- JSON
    container_id     TEXT,
    container_name   TEXT,
    credentials      TEXT,                       -- one Fernet token, never plaintext
    isolation        TEXT,                       -- JSON report
    timings          TEXT NOT NULL DEFAULT '{}', -- JSON
    error            TEXT,                       -- JSON {step, reason, class}
    backup           TEXT,                       -- JSON of the last backup
    request_id       TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX tenants_status ON tenants (status);

CREATE TABLE requests (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    lease_owner      TEXT,
    lease_expires_at REAL,
    not_before       REAL NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    finished_at      TEXT
);
-- One active request per tenant: the database, not the code, refuses a second.
CREATE UNIQUE INDEX requests_one_active_per_tenant
    ON requests (tenant_id) WHERE status IN ('queued', 'running');
CREATE INDEX requests_claimable ON requests (status, not_before);

CREATE TABLE daemons (
    owner        TEXT PRIMARY KEY,
    pid          INTEGER NOT NULL,
    hostname     TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at REAL NOT NULL
);

CREATE TABLE events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    at        TEXT NOT NULL,
    kind      TEXT NOT NULL,
    detail    TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_tenant ON events (tenant_id, id);
