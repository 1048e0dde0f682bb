-- Named queries of the SQLite control plane. "-- name: x" starts a block.

-- name: get_tenant
SELECT * FROM tenants WHERE tenant_id = :tenant_id;

-- name: list_tenants
SELECT * FROM tenants ORDER BY created_at, tenant_id;

-- name: list_tenants_by_status
SELECT * FROM tenants WHERE status = :status ORDER BY created_at, tenant_id;

-- name: insert_tenant
INSERT INTO tenants (tenant_id, status, engine, industry, template_version, request_id,
                     attempts, created_at, updated_at)
VALUES (:tenant_id, :status, :engine, :industry, :template_version, :request_id,
        0, :now, :now)
ON CONFLICT (tenant_id) DO UPDATE SET
    status = excluded.status, engine = excluded.engine, industry = excluded.industry,
    template_version = excluded.template_version, request_id = excluded.request_id,
    endpoint = NULL, container_id = NULL, container_name = NULL, credentials = NULL,
    isolation = NULL, timings = '{}', error = NULL, attempts = 0,
    created_at = excluded.created_at, updated_at = excluded.updated_at;

-- name: restore_tenant
-- A restore provisions the tenant again: what the last incarnation ran with (endpoint,
-- container, credentials, proof) is cleared so nothing stale survives; the spec comes
-- from the backup's manifest; created_at and the last backup record are kept.
UPDATE tenants
   SET status = :status, engine = :engine, industry = :industry,
       template_version = :template_version, request_id = :request_id,
       endpoint = NULL, container_id = NULL, container_name = NULL, credentials = NULL,
       isolation = NULL, timings = '{}', error = NULL, attempts = 0, updated_at = :now
 WHERE tenant_id = :tenant_id;

-- name: insert_request
INSERT INTO requests (id, tenant_id, kind, payload, status, attempts, not_before,
                      created_at, updated_at)
VALUES (:id, :tenant_id, :kind, :payload, 'queued', 0, :not_before, :now, :now);

-- name: active_request
SELECT * FROM requests WHERE tenant_id = :tenant_id AND status IN ('queued', 'running');

-- name: get_request
SELECT * FROM requests WHERE id = :id;

-- name: next_claimable
-- Expired leases are re-taken whatever happened to their owner: expiry never
-- depends on the owner's daemon row existing. Only kinds this daemon knows (:kinds,
-- a JSON list) are claimed: a request written by a newer cloner waits for one.
SELECT id FROM requests
 WHERE ((status = 'queued' AND not_before <= :now)
        OR (status = 'running' AND lease_expires_at < :now))
   AND kind IN (SELECT value FROM json_each(:kinds))
 ORDER BY not_before, created_at
 LIMIT 1;

-- name: claim_request
-- Each claim is a new attempt with a new token: whatever held the request before (an
-- expired lease of this or another daemon) loses every write from here on.
UPDATE requests
   SET status = 'running', lease_owner = :owner, lease_token = :token,
       lease_expires_at = :expires_at, attempts = attempts + 1, updated_at = :now
 WHERE id = :id;

-- name: renew_lease
UPDATE requests SET lease_expires_at = :expires_at, updated_at = :now
 WHERE id = :id AND lease_token = :token AND status = 'running';

-- name: lease_held
-- The fence of an attempt's writes, run inside the same transaction as the write.
SELECT tenant_id FROM requests
 WHERE id = :id AND lease_token = :token AND status = 'running';

-- name: finish_request
UPDATE requests
   SET status = :status, last_error = :last_error, lease_owner = NULL, lease_token = NULL,
       lease_expires_at = NULL, finished_at = :now, updated_at = :now
 WHERE id = :id AND lease_token = :token AND status = 'running';

-- name: retry_request
UPDATE requests
   SET status = 'queued', last_error = :last_error, lease_owner = NULL, lease_token = NULL,
       lease_expires_at = NULL, not_before = :not_before, updated_at = :now
 WHERE id = :id AND lease_token = :token AND status = 'running';

-- name: release_request
-- Shutdown hands the request back without charging it an attempt.
UPDATE requests
   SET status = 'queued', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
       attempts = MAX(attempts - 1, 0), updated_at = :now
 WHERE id = :id AND lease_token = :token AND status = 'running';

-- name: queue_depth
SELECT status, COUNT(*) AS n, MIN(created_at) AS oldest FROM requests
 WHERE status IN ('queued', 'running') GROUP BY status;

-- name: count_tenants_by_state
SELECT status, engine, COUNT(*) AS n FROM tenants GROUP BY status, engine;

-- name: upsert_daemon
INSERT INTO daemons (owner, pid, hostname, started_at, heartbeat_at)
VALUES (:owner, :pid, :hostname, :now_iso, :now)
ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at;

-- name: delete_daemon
DELETE FROM daemons WHERE owner = :owner;

-- name: live_daemons
SELECT * FROM daemons WHERE heartbeat_at >= :since;

-- name: insert_event
INSERT INTO events (tenant_id, at, kind, detail) VALUES (:tenant_id, :now, :kind, :detail);

-- name: list_events
SELECT * FROM events WHERE tenant_id = :tenant_id ORDER BY id;

-- name: bump_registry_changes
-- Run inside every transaction that writes a tenants row (pools refresh on a change).
UPDATE registry_changes SET counter = counter + 1 WHERE id = 1;

-- name: registry_change_counter
SELECT counter FROM registry_changes WHERE id = 1;

-- name: get_user
SELECT * FROM users WHERE email = :email;

-- name: insert_user
-- Re-adding a user to the same tenant changes only the role. Another tenant's user is
-- refused by the caller before this runs (inside the same write transaction).
INSERT INTO users (email, tenant_id, role, created_at)
VALUES (:email, :tenant_id, :role, :now)
ON CONFLICT (email) DO UPDATE SET role = excluded.role
 WHERE users.tenant_id = excluded.tenant_id;

-- name: delete_user
DELETE FROM users WHERE email = :email;

-- name: list_users
SELECT * FROM users ORDER BY tenant_id, email;

-- name: list_users_of_tenant
SELECT * FROM users WHERE tenant_id = :tenant_id ORDER BY email;

-- name: insert_rollout
INSERT INTO rollouts (id, engine, target_version, status, actor, options, plan, heartbeat_at,
                      started_at)
VALUES (:id, :engine, :target_version, 'running', :actor, :options, :plan, :heartbeat_at, :now);

-- name: running_rollouts
SELECT * FROM rollouts WHERE status = 'running' ORDER BY started_at;

-- name: interrupt_rollout
-- A rollout whose process died (stale heartbeat) is closed by the next one.
UPDATE rollouts SET status = 'interrupted', finished_at = :now,
       error = 'heartbeat stopped: the process running it died or was killed'
 WHERE id = :id AND status = 'running';

-- name: heartbeat_rollout
UPDATE rollouts SET heartbeat_at = :heartbeat_at WHERE id = :id AND status = 'running';

-- name: finish_rollout
UPDATE rollouts SET status = :status, summary = :summary, error = :error, finished_at = :now
 WHERE id = :id;

-- name: get_rollout
SELECT * FROM rollouts WHERE id = :id;

-- name: last_rollout
SELECT * FROM rollouts ORDER BY started_at DESC, rowid DESC LIMIT 1;

-- name: rollout_outcomes
SELECT * FROM rollout_tenants WHERE rollout_id = :rollout_id ORDER BY id;

-- name: insert_rollout_outcome
INSERT INTO rollout_tenants (rollout_id, tenant_id, engine, from_version, to_version,
                             reached_version, outcome, error, backup, duration_s, finished_at,
                             recovery)
VALUES (:rollout_id, :tenant_id, :engine, :from_version, :to_version, :reached_version,
        :outcome, :error, :backup, :duration_s, :now, :recovery)
ON CONFLICT (rollout_id, tenant_id) DO NOTHING;

-- name: outcomes_since
SELECT * FROM rollout_tenants WHERE id > :after ORDER BY id;

-- name: last_outcome_of_tenant
SELECT * FROM rollout_tenants WHERE tenant_id = :tenant_id ORDER BY id DESC LIMIT 1;

-- name: insert_migration_step
INSERT INTO migration_steps (tenant_id, rollout_id, engine, step, direction, from_version,
                             to_version, checksum, duration_ms, at, detail)
VALUES (:tenant_id, :rollout_id, :engine, :step, :direction, :from_version, :to_version,
        :checksum, :duration_ms, :now, :detail);

-- name: migration_steps_of_tenant
SELECT * FROM migration_steps WHERE tenant_id = :tenant_id ORDER BY id;

-- name: migration_steps_since
SELECT * FROM migration_steps WHERE id > :after ORDER BY id;

-- name: set_tenant_migration_state
-- Status, error and owning rollout of a tenant being migrated (transition checked by caller).
UPDATE tenants SET status = :status, error = :error, rollout_id = :rollout_id, updated_at = :now
 WHERE tenant_id = :tenant_id;

-- name: set_tenant_migration_progress
-- The migration in flight on a tenant (JSON, NULL when none): survives the rollout's process.
UPDATE tenants SET migration = :migration, updated_at = :now WHERE tenant_id = :tenant_id;

-- name: set_tenant_writes_fenced
-- When the tenant's application logins were last fenced for a migration (JSON).
UPDATE tenants SET writes_fenced = :writes_fenced, updated_at = :now WHERE tenant_id = :tenant_id;

-- name: set_tenant_version
UPDATE tenants SET template_version = :version, previous_versions = :previous_versions,
       updated_at = :now
 WHERE tenant_id = :tenant_id;

-- name: count_tenants_by_version
-- Tenants that have a database, by engine and the template version it is at.
SELECT engine, template_version, COUNT(*) AS n FROM tenants
 WHERE status IN ('ready', 'degraded', 'migrating')
 GROUP BY engine, template_version;

-- name: get_install_identity
SELECT install_id, origin, created_at FROM install_identity WHERE id = 1;

-- name: claim_install_identity
-- First writer wins: a second daemon binding the same empty control plane gets the first id.
INSERT INTO install_identity (id, install_id, origin, created_at)
VALUES (1, :install_id, :origin, :now)
ON CONFLICT (id) DO NOTHING;

-- name: count_tenants
SELECT COUNT(*) AS n FROM tenants;

-- name: insert_orphan_decision
INSERT INTO orphan_decisions (name, kind, tenant_id, decision, actor, reason, backup, at)
VALUES (:name, :kind, :tenant_id, :decision, :actor, :reason, :backup, :now);

-- name: list_orphan_decisions
SELECT * FROM orphan_decisions ORDER BY id;

-- name: adopt_tenant
-- A tenant re-registered from a quarantined volume (cloner orphans adopt): deprovisioned, its
-- request the one that created the volume, the backup just taken from it as its final one.
INSERT INTO tenants (tenant_id, status, engine, industry, template_version, request_id,
                     backup, attempts, created_at, updated_at)
VALUES (:tenant_id, :status, :engine, :industry, :template_version, :request_id,
        :backup, 0, :now, :now)
ON CONFLICT (tenant_id) DO UPDATE SET
    status = excluded.status, engine = excluded.engine, industry = excluded.industry,
    template_version = excluded.template_version, request_id = excluded.request_id,
    backup = excluded.backup, endpoint = NULL, container_id = NULL, container_name = NULL,
    credentials = NULL, isolation = NULL, timings = '{}', error = NULL, attempts = 0,
    previous_versions = '{}', rollout_id = NULL, updated_at = excluded.updated_at;

-- name: delete_users_of_tenant
-- Purge and re-creation: a tenant id's next incarnation starts with no users.
DELETE FROM users WHERE tenant_id = :tenant_id;

-- name: list_credentials
SELECT tenant_id, credentials FROM tenants WHERE credentials IS NOT NULL ORDER BY tenant_id;

-- name: replace_credentials
-- Compare-and-set: a concurrent writer (a worker storing new credentials) always wins.
UPDATE tenants SET credentials = :new
 WHERE tenant_id = :tenant_id AND credentials = :old;
