-- Control plane schema v11: the engine hardening level each tenant's rbac was last applied at.
-- Engines declare a level and bump it when their rbac/hardening changes, and the reconciler queues
-- a `harden` request for READY tenants below their engine's level. Rows that exist when this
-- migration runs were hardened by an older cloner: level 0.
ALTER TABLE tenants ADD COLUMN hardening_level INTEGER NOT NULL DEFAULT 0
