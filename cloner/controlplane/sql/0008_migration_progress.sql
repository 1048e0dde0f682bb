-- Control plane schema v8: migrations never hide lost writes (audit M7, M8).
-- migration: JSON of the migration in flight on the tenant, NULL when none: its rollout, the
-- version it started from, its pre-migration backup {path, sha256}, the step running now and
-- the phase (backup, step, restore). A rollout that dies leaves it behind, so the next run
-- knows which step was cut short and which clean backup to restore from.
ALTER TABLE tenants ADD COLUMN migration TEXT;
-- writes_fenced: JSON {since, until, seconds, rollout} of the latest time the application
-- logins were fenced for a migration (until is NULL while they still are).
ALTER TABLE tenants ADD COLUMN writes_fenced TEXT;
-- recovery: what a run did about a migration a dead rollout left behind (restored/resumed).
ALTER TABLE rollout_tenants ADD COLUMN recovery TEXT;
