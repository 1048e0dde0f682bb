-- cloner root template v1.2 (SQLite >= 3.37)
-- Full schema for a fresh database: the v1.0 core tables of the multi-tenant
-- NLP-to-SQL platform (unchanged) and the v1.1 commerce tables, with the v1.2
-- changes: customers.country renamed to country_code, orders.item_count (the
-- number of order lines, backfilled by the v1.1 -> v1.2 migration) and an index
-- for a customer's orders by date.
--
-- Columns added by a migration come last in their table here, where
-- ALTER TABLE ... ADD COLUMN puts them, and a column comment that migration
-- adds sits inside the column definition (between its tokens), the only place
-- ADD COLUMN keeps it: a migrated database and a fresh one then have the same
-- column order and comments (the migration tests compare the catalogues).
--
-- The logical schema of templates/postgres/v1.2/schema.sql (same tables,
-- columns, keys, ON DELETE actions, indexes, CHECKs and seed rows), translated
-- to SQLite.
--
-- Applied by the sqlite engine once, inside one transaction, to an empty
-- database file opened with PRAGMA foreign_keys = ON. Journal mode, file
-- modes and pragmas are the engine's job. Plain SQL only: no transaction
-- control, no PRAGMA, no ATTACH. Rows in schema_info are written by the
-- engine, never by this file.
--
-- Type translation. Every table is STRICT, so a column holds only the type it
-- declares (INTEGER or TEXT) and SQLite's type affinity cannot silently turn
-- '007' into 7. SQLite has no uuid, jsonb, numeric, timestamptz, inet, array
-- or regular-expression support, so:
--
--   uuid          TEXT in lowercase canonical 8-4-4-4-12 form, CHECKed on the
--                 primary key (foreign keys inherit it through the reference).
--                 Lowercase only, because text equality is case-sensitive and
--                 joins must not depend on how a client spelled the id. The
--                 default is a random version-4 UUID, like gen_random_uuid().
--   bigserial     INTEGER PRIMARY KEY AUTOINCREMENT: the rowid, and never
--                 reused after a delete, as with a sequence.
--   numeric(p,2)  TEXT holding the canonical decimal string ('999.99': two
--                 fraction digits, no exponent, no leading zeros), CHECKed with
--                 printf('%.2f', x) = x and a range for the precision. Not
--                 REAL, and not NUMERIC affinity: both store binary floating
--                 point, which cannot hold 0.10 exactly, and money must round-
--                 trip exactly (read it back as Decimal(value)). Compare and
--                 add with CAST(x AS REAL) or, exactly, in the application.
--   timestamptz   TEXT in UTC, 'YYYY-MM-DDTHH:MM:SS.SSSZ' (millisecond
--                 precision, all SQLite's strftime offers), CHECKed to be
--                 exactly that form, so text order is time order and CHECKs
--                 such as completed_at >= created_at mean what they say.
--                 Defaults to now.
--   jsonb         TEXT CHECKed with json_valid(), plus json_type() where
--                 postgres checks jsonb_typeof(). text[] is a JSON array.
--   inet          TEXT limited to the characters of an IPv4/IPv6 address with
--                 an optional prefix length (a character check, not a parse).
--   boolean       INTEGER CHECKed to 0 or 1.
--   char(n), ~    TEXT with length() bounds and GLOB character classes in
--                 place of postgres regular expressions.
--   COMMENT ON    a comment inside CREATE TABLE, which SQLite keeps with the
--                 table's definition in sqlite_schema.

-- ---------------------------------------------------------------------------
-- Template bookkeeping
-- ---------------------------------------------------------------------------
CREATE TABLE schema_info (
    -- Templates and migrations applied to this database (maintained by the provisioning engine).
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT    NOT NULL CHECK (kind IN ('root', 'overlay', 'migration')),
    name        TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    checksum    TEXT    NOT NULL
                        CHECK (length(checksum) = 64 AND checksum NOT GLOB '*[^0-9a-f]*'),
    applied_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                        CHECK (applied_at IS strftime('%Y-%m-%dT%H:%M:%fZ', applied_at)),
    duration_ms INTEGER CHECK (duration_ms >= 0),
    UNIQUE (kind, name, version)
) STRICT;

-- ---------------------------------------------------------------------------
-- Organizations and users
-- ---------------------------------------------------------------------------
CREATE TABLE organizations (
    -- Organizations (business units) inside the tenant.
    id          TEXT    NOT NULL PRIMARY KEY
                        DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89AB', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))))
                        CHECK (id GLOB '????????-????-????-????-????????????' AND length(replace(id, '-', '')) = 32 AND replace(id, '-', '') NOT GLOB '*[^0-9a-f]*'),
    slug        TEXT    NOT NULL UNIQUE
                        CHECK (length(slug) BETWEEN 1 AND 63 AND slug GLOB '[a-z0-9]*'
                               AND slug NOT GLOB '*[^a-z0-9-]*'),
    name        TEXT    NOT NULL CHECK (length(trim(name)) > 0),
    status      TEXT    NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'suspended', 'archived')),
    settings    TEXT    NOT NULL DEFAULT '{}'
                        CHECK (json_valid(settings) AND json_type(settings) = 'object'),
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                        CHECK (created_at IS strftime('%Y-%m-%dT%H:%M:%fZ', created_at)),
    updated_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                        CHECK (updated_at IS strftime('%Y-%m-%dT%H:%M:%fZ', updated_at))
) STRICT;

CREATE TABLE users (
    -- Users of the tenant; emails are stored lowercased.
    -- password_hash: password hash (e.g. argon2id/bcrypt encoded string); never a
    -- plaintext password. NULL for SSO-only users.
    id              TEXT NOT NULL PRIMARY KEY
                         DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89AB', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))))
                         CHECK (id GLOB '????????-????-????-????-????????????' AND length(replace(id, '-', '')) = 32 AND replace(id, '-', '') NOT GLOB '*[^0-9a-f]*'),
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email           TEXT NOT NULL UNIQUE
                         CHECK (email = lower(email) AND email LIKE '%_@_%'),
    display_name    TEXT NOT NULL CHECK (length(trim(display_name)) > 0),
    password_hash   TEXT,
    role            TEXT NOT NULL DEFAULT 'member'
                         CHECK (role IN ('owner', 'admin', 'analyst', 'member', 'viewer')),
    status          TEXT NOT NULL DEFAULT 'active'
                         CHECK (status IN ('invited', 'active', 'disabled')),
    last_login_at   TEXT CHECK (last_login_at IS strftime('%Y-%m-%dT%H:%M:%fZ', last_login_at)),
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                         CHECK (created_at IS strftime('%Y-%m-%dT%H:%M:%fZ', created_at)),
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                         CHECK (updated_at IS strftime('%Y-%m-%dT%H:%M:%fZ', updated_at))
) STRICT;

CREATE INDEX users_organization_id_idx ON users (organization_id);
CREATE INDEX users_status_idx          ON users (status);

-- ---------------------------------------------------------------------------
-- Human digital twins
-- ---------------------------------------------------------------------------
CREATE TABLE hdt_profiles (
    -- Human digital twin profiles: persona, expertise and preferences of a user.
    id          TEXT    NOT NULL PRIMARY KEY
                        DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89AB', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))))
                        CHECK (id GLOB '????????-????-????-????-????????????' AND length(replace(id, '-', '')) = 32 AND replace(id, '-', '') NOT GLOB '*[^0-9a-f]*'),
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL CHECK (length(trim(name)) > 0),
    persona     TEXT    NOT NULL DEFAULT '{}'
                        CHECK (json_valid(persona) AND json_type(persona) = 'object'),
    expertise   TEXT    NOT NULL DEFAULT '[]'
                        CHECK (json_valid(expertise) AND json_type(expertise) IN ('array', 'object')),
    preferences TEXT    NOT NULL DEFAULT '{}'
                        CHECK (json_valid(preferences) AND json_type(preferences) = 'object'),
    is_default  INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                        CHECK (created_at IS strftime('%Y-%m-%dT%H:%M:%fZ', created_at)),
    updated_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                        CHECK (updated_at IS strftime('%Y-%m-%dT%H:%M:%fZ', updated_at)),
    UNIQUE (user_id, name)
) STRICT;

CREATE INDEX hdt_profiles_user_id_idx ON hdt_profiles (user_id);
-- At most one default profile per user.
CREATE UNIQUE INDEX hdt_profiles_one_default_per_user_idx
    ON hdt_profiles (user_id) WHERE is_default;

CREATE TABLE hdt_agents (
    -- Agents acting on behalf of a digital twin profile.
    id          TEXT    NOT NULL PRIMARY KEY
                        DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89AB', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))))
                        CHECK (id GLOB '????????-????-????-????-????????????' AND length(replace(id, '-', '')) = 32 AND replace(id, '-', '') NOT GLOB '*[^0-9a-f]*'),
    profile_id  TEXT    NOT NULL REFERENCES hdt_profiles (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL CHECK (length(trim(name)) > 0),
    model       TEXT    NOT NULL CHECK (length(trim(model)) > 0),
    config      TEXT    NOT NULL DEFAULT '{}'
                        CHECK (json_valid(config) AND json_type(config) = 'object'),
    status      TEXT    NOT NULL DEFAULT 'active'
                        CHECK (status IN ('draft', 'active', 'paused', 'retired')),
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                        CHECK (created_at IS strftime('%Y-%m-%dT%H:%M:%fZ', created_at)),
    updated_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                        CHECK (updated_at IS strftime('%Y-%m-%dT%H:%M:%fZ', updated_at)),
    UNIQUE (profile_id, name)
) STRICT;

CREATE INDEX hdt_agents_profile_id_idx ON hdt_agents (profile_id);
CREATE INDEX hdt_agents_status_idx     ON hdt_agents (status);

-- ---------------------------------------------------------------------------
-- NLP-to-SQL query log
-- ---------------------------------------------------------------------------
CREATE TABLE query_logs (
    -- Natural-language questions, the SQL generated for them and the execution outcome.
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id           TEXT    REFERENCES users (id) ON DELETE SET NULL,
    agent_id          TEXT    REFERENCES hdt_agents (id) ON DELETE SET NULL,
    natural_language  TEXT    NOT NULL CHECK (length(trim(natural_language)) > 0),
    generated_sql     TEXT,
    status            TEXT    NOT NULL DEFAULT 'pending'
                              CHECK (status IN ('pending', 'running', 'succeeded',
                                                'failed', 'rejected', 'cancelled')),
    error_message     TEXT,
    duration_ms       INTEGER CHECK (duration_ms >= 0),
    rows_returned     INTEGER CHECK (rows_returned >= 0),
    created_at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                              CHECK (created_at IS strftime('%Y-%m-%dT%H:%M:%fZ', created_at)),
    completed_at      TEXT    CHECK (completed_at IS strftime('%Y-%m-%dT%H:%M:%fZ', completed_at)),
    CHECK (completed_at IS NULL OR completed_at >= created_at)
) STRICT;

CREATE INDEX query_logs_user_id_idx    ON query_logs (user_id);
CREATE INDEX query_logs_agent_id_idx   ON query_logs (agent_id);
CREATE INDEX query_logs_created_at_idx ON query_logs (created_at);
CREATE INDEX query_logs_status_idx     ON query_logs (status, created_at);

-- ---------------------------------------------------------------------------
-- Authorization
-- ---------------------------------------------------------------------------
CREATE TABLE permissions (
    -- Grants of an action on a resource to either a user or a role.
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     TEXT    REFERENCES users (id) ON DELETE CASCADE,
    role        TEXT    CHECK (role IN ('owner', 'admin', 'analyst', 'member', 'viewer')),
    resource    TEXT    NOT NULL CHECK (length(trim(resource)) > 0),
    action      TEXT    NOT NULL
                        CHECK (action IN ('read', 'write', 'delete', 'execute', 'admin')),
    effect      TEXT    NOT NULL DEFAULT 'allow' CHECK (effect IN ('allow', 'deny')),
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                        CHECK (created_at IS strftime('%Y-%m-%dT%H:%M:%fZ', created_at)),
    -- A grant targets exactly one subject: a user or a role.
    CHECK ((user_id IS NULL) <> (role IS NULL))
) STRICT;

CREATE INDEX permissions_user_id_idx ON permissions (user_id);
CREATE UNIQUE INDEX permissions_user_grant_uidx
    ON permissions (user_id, resource, action) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX permissions_role_grant_uidx
    ON permissions (role, resource, action) WHERE role IS NOT NULL;

-- ---------------------------------------------------------------------------
-- Security audit trail
-- ---------------------------------------------------------------------------
CREATE TABLE security_logs (
    -- Security-relevant events (logins, token use, permission changes, ...).
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     TEXT    REFERENCES users (id) ON DELETE SET NULL,
    event_type  TEXT    NOT NULL CHECK (length(trim(event_type)) > 0),
    severity    TEXT    NOT NULL DEFAULT 'info'
                        CHECK (severity IN ('debug', 'info', 'warning', 'error', 'critical')),
    ip_address  TEXT    CHECK (length(ip_address) BETWEEN 2 AND 49
                               AND ip_address NOT GLOB '*[^0-9A-Fa-f:./]*'
                               AND (instr(ip_address, '.') > 0 OR instr(ip_address, ':') > 0)),
    details     TEXT    NOT NULL DEFAULT '{}'
                        CHECK (json_valid(details) AND json_type(details) = 'object'),
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                        CHECK (created_at IS strftime('%Y-%m-%dT%H:%M:%fZ', created_at))
) STRICT;

CREATE INDEX security_logs_user_id_idx    ON security_logs (user_id);
CREATE INDEX security_logs_created_at_idx ON security_logs (created_at);
CREATE INDEX security_logs_type_idx       ON security_logs (event_type, created_at);
CREATE INDEX security_logs_severity_idx   ON security_logs (severity)
    WHERE severity IN ('error', 'critical');

-- ---------------------------------------------------------------------------
-- API tokens
-- ---------------------------------------------------------------------------
CREATE TABLE api_tokens (
    -- API tokens; only a hash of each token is stored.
    -- token_hash: lowercase hex SHA-256 of the token; the token itself is shown
    -- once and never stored. scopes: a JSON array of scope names.
    id           TEXT NOT NULL PRIMARY KEY
                      DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89AB', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))))
                      CHECK (id GLOB '????????-????-????-????-????????????' AND length(replace(id, '-', '')) = 32 AND replace(id, '-', '') NOT GLOB '*[^0-9a-f]*'),
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (length(trim(name)) > 0),
    token_hash   TEXT NOT NULL UNIQUE
                      CHECK (length(token_hash) = 64 AND token_hash NOT GLOB '*[^0-9a-f]*'),
    scopes       TEXT NOT NULL DEFAULT '[]'
                      CHECK (json_valid(scopes) AND json_type(scopes) = 'array'),
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                      CHECK (created_at IS strftime('%Y-%m-%dT%H:%M:%fZ', created_at)),
    last_used_at TEXT CHECK (last_used_at IS strftime('%Y-%m-%dT%H:%M:%fZ', last_used_at)),
    expires_at   TEXT CHECK (expires_at IS strftime('%Y-%m-%dT%H:%M:%fZ', expires_at)),
    revoked_at   TEXT CHECK (revoked_at IS strftime('%Y-%m-%dT%H:%M:%fZ', revoked_at)),
    CHECK (expires_at IS NULL OR expires_at > created_at)
) STRICT;

CREATE INDEX api_tokens_user_id_idx ON api_tokens (user_id);
CREATE INDEX api_tokens_active_idx  ON api_tokens (expires_at) WHERE revoked_at IS NULL;

-- ---------------------------------------------------------------------------
-- Tenant-level settings
-- ---------------------------------------------------------------------------
CREATE TABLE system_settings (
    -- Tenant-wide configuration values (JSON).
    key         TEXT NOT NULL PRIMARY KEY
                     CHECK (key GLOB '[a-z]*' AND key NOT GLOB '*[^a-z0-9_.]*'),
    value       TEXT NOT NULL CHECK (json_valid(value)),
    description TEXT,
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                     CHECK (updated_at IS strftime('%Y-%m-%dT%H:%M:%fZ', updated_at))
) STRICT;

INSERT INTO system_settings (key, value, description) VALUES
    ('default_locale',           '"en-US"', 'Default locale for users of this tenant'),
    ('default_timezone',         '"UTC"',   'Default time zone for reports and timestamps'),
    ('query_timeout_ms',         '30000',   'Statement timeout applied to generated SQL, in milliseconds'),
    ('max_rows',                 '10000',   'Maximum number of rows returned by a generated query'),
    ('query_log_retention_days', '90',      'Days to keep query_logs rows'),
    ('allow_write_queries',      'false',   'Whether generated SQL may modify data');

-- ===========================================================================
-- v1.1 additions: commerce
-- ===========================================================================

CREATE TABLE customers (
    -- Customers of the tenant (buyers); emails are stored lowercased.
    -- country_code: ISO 3166-1 alpha-2 country code.
    id           TEXT NOT NULL PRIMARY KEY
                      DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89AB', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))))
                      CHECK (id GLOB '????????-????-????-????-????????????' AND length(replace(id, '-', '')) = 32 AND replace(id, '-', '') NOT GLOB '*[^0-9a-f]*'),
    external_ref TEXT UNIQUE,
    name         TEXT NOT NULL CHECK (length(trim(name)) > 0),
    email        TEXT UNIQUE
                      CHECK (email = lower(email) AND email LIKE '%_@_%'),
    phone        TEXT,
    country_code TEXT CHECK (length(country_code) = 2 AND country_code NOT GLOB '*[^A-Z]*'),
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                      CHECK (created_at IS strftime('%Y-%m-%dT%H:%M:%fZ', created_at)),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                      CHECK (updated_at IS strftime('%Y-%m-%dT%H:%M:%fZ', updated_at))
) STRICT;

CREATE INDEX customers_name_idx ON customers (name);

CREATE TABLE products (
    -- Product catalogue; price is in the product currency.
    id          TEXT    NOT NULL PRIMARY KEY
                        DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89AB', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))))
                        CHECK (id GLOB '????????-????-????-????-????????????' AND length(replace(id, '-', '')) = 32 AND replace(id, '-', '') NOT GLOB '*[^0-9a-f]*'),
    sku         TEXT    NOT NULL UNIQUE CHECK (length(trim(sku)) > 0),
    name        TEXT    NOT NULL CHECK (length(trim(name)) > 0),
    description TEXT,
    -- numeric(12,2)
    price       TEXT    NOT NULL
                        CHECK (price = printf('%.2f', price)
                               AND CAST(price AS REAL) BETWEEN 0 AND 9999999999.99),
    currency    TEXT    NOT NULL DEFAULT 'USD'
                        CHECK (length(currency) = 3 AND currency NOT GLOB '*[^A-Z]*'),
    active      INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                        CHECK (created_at IS strftime('%Y-%m-%dT%H:%M:%fZ', created_at)),
    updated_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                        CHECK (updated_at IS strftime('%Y-%m-%dT%H:%M:%fZ', updated_at))
) STRICT;

CREATE INDEX products_name_idx ON products (name);

CREATE TABLE orders (
    -- Customer orders; total is the sum of the order lines.
    id           TEXT NOT NULL PRIMARY KEY
                      DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89AB', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))))
                      CHECK (id GLOB '????????-????-????-????-????????????' AND length(replace(id, '-', '')) = 32 AND replace(id, '-', '') NOT GLOB '*[^0-9a-f]*'),
    order_number TEXT NOT NULL UNIQUE CHECK (length(trim(order_number)) > 0),
    customer_id  TEXT NOT NULL REFERENCES customers (id) ON DELETE RESTRICT,
    status       TEXT NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'paid', 'shipped', 'delivered',
                                        'cancelled', 'refunded')),
    -- numeric(12,2)
    total        TEXT NOT NULL DEFAULT '0.00'
                      CHECK (total = printf('%.2f', total)
                             AND CAST(total AS REAL) BETWEEN 0 AND 9999999999.99),
    currency     TEXT NOT NULL DEFAULT 'USD'
                      CHECK (length(currency) = 3 AND currency NOT GLOB '*[^A-Z]*'),
    placed_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                      CHECK (placed_at IS strftime('%Y-%m-%dT%H:%M:%fZ', placed_at)),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                      CHECK (updated_at IS strftime('%Y-%m-%dT%H:%M:%fZ', updated_at)),
    item_count   INTEGER NOT NULL DEFAULT 0
                      -- item_count: number of order lines (maintained by the application).
                      CHECK (item_count >= 0)
) STRICT;

CREATE INDEX orders_customer_id_idx ON orders (customer_id);
CREATE INDEX orders_status_idx      ON orders (status, placed_at);
CREATE INDEX orders_placed_at_idx   ON orders (placed_at);
-- A customer's orders, newest first.
CREATE INDEX orders_customer_placed_at_idx ON orders (customer_id, placed_at DESC);

CREATE TABLE order_items (
    -- Order lines; unit_price is captured at order time.
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id    TEXT    NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id  TEXT    NOT NULL REFERENCES products (id) ON DELETE RESTRICT,
    quantity    INTEGER NOT NULL CHECK (quantity > 0),
    -- numeric(12,2)
    unit_price  TEXT    NOT NULL
                        CHECK (unit_price = printf('%.2f', unit_price)
                               AND CAST(unit_price AS REAL) BETWEEN 0 AND 9999999999.99),
    -- numeric(14,2), quantity * unit_price computed exactly in integer cents
    -- (unit_price is canonical and non-negative, so dropping its '.' gives cents).
    line_total  TEXT    GENERATED ALWAYS AS (
                    printf('%d.%02d',
                           quantity * CAST(replace(unit_price, '.', '') AS INTEGER) / 100,
                           quantity * CAST(replace(unit_price, '.', '') AS INTEGER) % 100)
                ) STORED,
    -- line_total must fit numeric(14,2), which postgres enforces on the stored
    -- value; SQLite would silently overflow the integer product into REAL.
    CHECK (quantity * CAST(unit_price AS REAL) < 1e12),
    UNIQUE (order_id, product_id)
) STRICT;

CREATE INDEX order_items_order_id_idx   ON order_items (order_id);
CREATE INDEX order_items_product_id_idx ON order_items (product_id);
