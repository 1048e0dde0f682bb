-- Control plane schema v4: fleet schema migrations of tenant databases (cloner migrate).
-- previous_versions: template versions a tenant was migrated away from, oldest first, as
-- JSON {"request": request_id, "versions": [...]}: they belong to the incarnation made by
-- that request, so a re-created or restored tenant starts without any.
-- rollout_id: the rollout migrating the tenant now (NULL when none is).
ALTER TABLE tenants ADD COLUMN previous_versions TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tenants ADD COLUMN rollout_id TEXT;

-- One row per `cloner migrate` run. A running rollout renews heartbeat_at, and one whose
-- heartbeat went stale died with its process and no longer blocks a new rollout.
CREATE TABLE rollouts (
    id             TEXT PRIMARY KEY,
    engine         TEXT NOT NULL,
    target_version TEXT NOT NULL,
    status         TEXT NOT NULL,               -- running, succeeded, failed, halted, interrupted
    actor          TEXT,
    options        TEXT NOT NULL DEFAULT '{}',  -- JSON: concurrency, canary, max_failures, ...
    plan           TEXT NOT NULL DEFAULT '[]',  -- JSON: tenants, their steps, canary or not
    summary        TEXT NOT NULL DEFAULT '{}',  -- JSON: tenants per outcome
    error          TEXT,
    heartbeat_at   REAL NOT NULL,
    started_at     TEXT NOT NULL,
    finished_at    TEXT
);
CREATE INDEX rollouts_started ON rollouts (started_at);

-- How each tenant of a rollout ended (append-only, the metrics read it by id).
CREATE TABLE rollout_tenants (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id      TEXT NOT NULL REFERENCES rollouts (id),
    tenant_id       TEXT NOT NULL,
    engine          TEXT NOT NULL,
    from_version    TEXT NOT NULL,
    to_version      TEXT NOT NULL,
    reached_version TEXT NOT NULL,
    outcome         TEXT NOT NULL,  -- migrated, up_to_date, rolled_back, restored, refused, stuck, skipped, not_started
    error           TEXT,           -- JSON {step, reason, class}
    backup          TEXT,           -- the pre-migration backup
    duration_s      REAL,
    finished_at     TEXT NOT NULL,
    UNIQUE (rollout_id, tenant_id)
);
CREATE INDEX rollout_tenants_tenant ON rollout_tenants (tenant_id, id);

-- Every step applied to, reverted on or repaired in a tenant database (append-only). The
-- tenant database's schema_info keeps the latest application of each step, this is all of them.
CREATE TABLE migration_steps (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT NOT NULL,
    rollout_id   TEXT,
    engine       TEXT NOT NULL,
    step         TEXT NOT NULL,
    direction    TEXT NOT NULL,     -- up, down, restore (from the pre-migration backup), repair
    from_version TEXT NOT NULL,
    to_version   TEXT NOT NULL,
    checksum     TEXT NOT NULL,
    duration_ms  INTEGER,
    at           TEXT NOT NULL,
    detail       TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX migration_steps_tenant ON migration_steps (tenant_id, id)
