-- Control plane schema v3: application users, each mapped to exactly one tenant and role.
-- The mapping is what routing trusts: a token's tenant claim must agree with this row.
CREATE TABLE users (
    email      TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (tenant_id),
    role       TEXT NOT NULL CHECK (role IN ('admin', 'member', 'analyst')),
    created_at TEXT NOT NULL
);
CREATE INDEX users_tenant ON users (tenant_id);
