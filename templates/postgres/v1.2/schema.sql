-- cloner root template v1.2 (PostgreSQL 15)
-- Full schema for a fresh database: the v1.0 core tables of the multi-tenant
-- NLP-to-SQL platform (unchanged) and the v1.1 commerce tables, with the v1.2
-- changes: customers.country renamed to country_code, orders.item_count (the
-- number of order lines, backfilled by the v1.1 -> v1.2 migration) and an index
-- for a customer's orders by date.
--
-- Columns added by a migration come last in their table here, where
-- ALTER TABLE ... ADD COLUMN puts them, so a migrated database and a fresh one
-- have the same column order (the migration tests compare the catalogues).
--
-- Applied by the provisioning engine inside a single transaction, as the
-- non-superuser role that owns the tenant database and schema "public"
-- (search_path = public). Plain SQL only: no transaction control, no
-- roles/grants/extensions, no psql meta-commands. Runs once on an empty schema.
-- Rows in schema_info are written by the engine, never by this file.

-- ---------------------------------------------------------------------------
-- Template bookkeeping
-- ---------------------------------------------------------------------------
CREATE TABLE schema_info (
    id          bigserial PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('root', 'overlay', 'migration')),
    name        text        NOT NULL,
    version     text        NOT NULL,
    checksum    char(64)    NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer     CHECK (duration_ms >= 0),
    UNIQUE (kind, name, version)
);

COMMENT ON TABLE schema_info IS 'Templates and migrations applied to this database (maintained by the provisioning engine).';

-- ---------------------------------------------------------------------------
-- Organizations and users
-- ---------------------------------------------------------------------------
CREATE TABLE organizations (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    slug        text        NOT NULL UNIQUE
                            CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name        text        NOT NULL CHECK (length(btrim(name)) > 0),
    status      text        NOT NULL DEFAULT 'active'
                            CHECK (status IN ('active', 'suspended', 'archived')),
    settings    jsonb       NOT NULL DEFAULT '{}'::jsonb
                            CHECK (jsonb_typeof(settings) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE organizations IS 'Organizations (business units) inside the tenant.';

CREATE TABLE users (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid        NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email           text        NOT NULL UNIQUE
                                CHECK (email = lower(email) AND email LIKE '%_@_%'),
    display_name    text        NOT NULL CHECK (length(btrim(display_name)) > 0),
    password_hash   text,
    role            text        NOT NULL DEFAULT 'member'
                                CHECK (role IN ('owner', 'admin', 'analyst', 'member', 'viewer')),
    status          text        NOT NULL DEFAULT 'active'
                                CHECK (status IN ('invited', 'active', 'disabled')),
    last_login_at   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE users IS 'Users of the tenant; emails are stored lowercased.';
COMMENT ON COLUMN users.password_hash IS 'Password hash (e.g. argon2id/bcrypt encoded string); never a plaintext password. NULL for SSO-only users.';

CREATE INDEX users_organization_id_idx ON users (organization_id);
CREATE INDEX users_status_idx          ON users (status);

-- ---------------------------------------------------------------------------
-- Human digital twins
-- ---------------------------------------------------------------------------
CREATE TABLE hdt_profiles (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text        NOT NULL CHECK (length(btrim(name)) > 0),
    persona     jsonb       NOT NULL DEFAULT '{}'::jsonb
                            CHECK (jsonb_typeof(persona) = 'object'),
    expertise   jsonb       NOT NULL DEFAULT '[]'::jsonb
                            CHECK (jsonb_typeof(expertise) IN ('array', 'object')),
    preferences jsonb       NOT NULL DEFAULT '{}'::jsonb
                            CHECK (jsonb_typeof(preferences) = 'object'),
    is_default  boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);

COMMENT ON TABLE hdt_profiles IS 'Human digital twin profiles: persona, expertise and preferences of a user.';

CREATE INDEX hdt_profiles_user_id_idx ON hdt_profiles (user_id);
-- At most one default profile per user.
CREATE UNIQUE INDEX hdt_profiles_one_default_per_user_idx
    ON hdt_profiles (user_id) WHERE is_default;

CREATE TABLE hdt_agents (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    profile_id  uuid        NOT NULL REFERENCES hdt_profiles (id) ON DELETE CASCADE,
    name        text        NOT NULL CHECK (length(btrim(name)) > 0),
    model       text        NOT NULL CHECK (length(btrim(model)) > 0),
    config      jsonb       NOT NULL DEFAULT '{}'::jsonb
                            CHECK (jsonb_typeof(config) = 'object'),
    status      text        NOT NULL DEFAULT 'active'
                            CHECK (status IN ('draft', 'active', 'paused', 'retired')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (profile_id, name)
);

COMMENT ON TABLE hdt_agents IS 'Agents acting on behalf of a digital twin profile.';

CREATE INDEX hdt_agents_profile_id_idx ON hdt_agents (profile_id);
CREATE INDEX hdt_agents_status_idx     ON hdt_agents (status);

-- ---------------------------------------------------------------------------
-- NLP-to-SQL query log
-- ---------------------------------------------------------------------------
CREATE TABLE query_logs (
    id                bigserial   PRIMARY KEY,
    user_id           uuid        REFERENCES users (id) ON DELETE SET NULL,
    agent_id          uuid        REFERENCES hdt_agents (id) ON DELETE SET NULL,
    natural_language  text        NOT NULL CHECK (length(btrim(natural_language)) > 0),
    generated_sql     text,
    status            text        NOT NULL DEFAULT 'pending'
                                  CHECK (status IN ('pending', 'running', 'succeeded',
                                                    'failed', 'rejected', 'cancelled')),
    error_message     text,
    duration_ms       integer     CHECK (duration_ms >= 0),
    rows_returned     integer     CHECK (rows_returned >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz,
    CHECK (completed_at IS NULL OR completed_at >= created_at)
);

COMMENT ON TABLE query_logs IS 'Natural-language questions, the SQL generated for them and the execution outcome.';

CREATE INDEX query_logs_user_id_idx    ON query_logs (user_id);
CREATE INDEX query_logs_agent_id_idx   ON query_logs (agent_id);
CREATE INDEX query_logs_created_at_idx ON query_logs (created_at);
CREATE INDEX query_logs_status_idx     ON query_logs (status, created_at);

-- ---------------------------------------------------------------------------
-- Authorization
-- ---------------------------------------------------------------------------
CREATE TABLE permissions (
    id          bigserial   PRIMARY KEY,
    user_id     uuid        REFERENCES users (id) ON DELETE CASCADE,
    role        text        CHECK (role IN ('owner', 'admin', 'analyst', 'member', 'viewer')),
    resource    text        NOT NULL CHECK (length(btrim(resource)) > 0),
    action      text        NOT NULL
                            CHECK (action IN ('read', 'write', 'delete', 'execute', 'admin')),
    effect      text        NOT NULL DEFAULT 'allow' CHECK (effect IN ('allow', 'deny')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- A grant targets exactly one subject: a user or a role.
    CHECK ((user_id IS NULL) <> (role IS NULL))
);

COMMENT ON TABLE permissions IS 'Grants of an action on a resource to either a user or a role.';

CREATE INDEX permissions_user_id_idx ON permissions (user_id);
CREATE UNIQUE INDEX permissions_user_grant_uidx
    ON permissions (user_id, resource, action) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX permissions_role_grant_uidx
    ON permissions (role, resource, action) WHERE role IS NOT NULL;

-- ---------------------------------------------------------------------------
-- Security audit trail
-- ---------------------------------------------------------------------------
CREATE TABLE security_logs (
    id          bigserial   PRIMARY KEY,
    user_id     uuid        REFERENCES users (id) ON DELETE SET NULL,
    event_type  text        NOT NULL CHECK (length(btrim(event_type)) > 0),
    severity    text        NOT NULL DEFAULT 'info'
                            CHECK (severity IN ('debug', 'info', 'warning', 'error', 'critical')),
    ip_address  inet,
    details     jsonb       NOT NULL DEFAULT '{}'::jsonb
                            CHECK (jsonb_typeof(details) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE security_logs IS 'Security-relevant events (logins, token use, permission changes, ...).';

CREATE INDEX security_logs_user_id_idx    ON security_logs (user_id);
CREATE INDEX security_logs_created_at_idx ON security_logs (created_at);
CREATE INDEX security_logs_type_idx       ON security_logs (event_type, created_at);
CREATE INDEX security_logs_severity_idx   ON security_logs (severity)
    WHERE severity IN ('error', 'critical');

-- ---------------------------------------------------------------------------
-- API tokens
-- ---------------------------------------------------------------------------
CREATE TABLE api_tokens (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text        NOT NULL CHECK (length(btrim(name)) > 0),
    token_hash   char(64)    NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    scopes       text[]      NOT NULL DEFAULT '{}'::text[],
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    CHECK (expires_at IS NULL OR expires_at > created_at)
);

COMMENT ON TABLE api_tokens IS 'API tokens; only a hash of each token is stored.';
COMMENT ON COLUMN api_tokens.token_hash IS 'Lowercase hex SHA-256 of the token; the token itself is shown once and never stored.';

CREATE INDEX api_tokens_user_id_idx ON api_tokens (user_id);
CREATE INDEX api_tokens_active_idx  ON api_tokens (expires_at) WHERE revoked_at IS NULL;

-- ---------------------------------------------------------------------------
-- Tenant-level settings
-- ---------------------------------------------------------------------------
CREATE TABLE system_settings (
    key         text        PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_.]*$'),
    value       jsonb       NOT NULL,
    description text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE system_settings IS 'Tenant-wide configuration values (JSON).';

INSERT INTO system_settings (key, value, description) VALUES
    ('default_locale',           '"en-US"'::jsonb, 'Default locale for users of this tenant'),
    ('default_timezone',         '"UTC"'::jsonb,   'Default time zone for reports and timestamps'),
    ('query_timeout_ms',         '30000'::jsonb,   'Statement timeout applied to generated SQL, in milliseconds'),
    ('max_rows',                 '10000'::jsonb,   'Maximum number of rows returned by a generated query'),
    ('query_log_retention_days', '90'::jsonb,      'Days to keep query_logs rows'),
    ('allow_write_queries',      'false'::jsonb,   'Whether generated SQL may modify data');

-- ===========================================================================
-- v1.1 additions: commerce
-- ===========================================================================

CREATE TABLE customers (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    external_ref text        UNIQUE,
    name        text        NOT NULL CHECK (length(btrim(name)) > 0),
    email       text        UNIQUE
                            CHECK (email = lower(email) AND email LIKE '%_@_%'),
    phone       text,
    country_code char(2)    CHECK (country_code ~ '^[A-Z]{2}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE customers IS 'Customers of the tenant (buyers); emails are stored lowercased.';
COMMENT ON COLUMN customers.country_code IS 'ISO 3166-1 alpha-2 country code.';

CREATE INDEX customers_name_idx ON customers (name);

CREATE TABLE products (
    id          uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    sku         text          NOT NULL UNIQUE CHECK (length(btrim(sku)) > 0),
    name        text          NOT NULL CHECK (length(btrim(name)) > 0),
    description text,
    price       numeric(12,2) NOT NULL CHECK (price >= 0),
    currency    char(3)       NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    active      boolean       NOT NULL DEFAULT true,
    created_at  timestamptz   NOT NULL DEFAULT now(),
    updated_at  timestamptz   NOT NULL DEFAULT now()
);

COMMENT ON TABLE products IS 'Product catalogue; price is in the product currency.';

CREATE INDEX products_name_idx ON products (name);

CREATE TABLE orders (
    id          uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    order_number text          NOT NULL UNIQUE CHECK (length(btrim(order_number)) > 0),
    customer_id uuid          NOT NULL REFERENCES customers (id) ON DELETE RESTRICT,
    status      text          NOT NULL DEFAULT 'pending'
                              CHECK (status IN ('pending', 'paid', 'shipped', 'delivered',
                                                'cancelled', 'refunded')),
    total       numeric(12,2) NOT NULL DEFAULT 0 CHECK (total >= 0),
    currency    char(3)       NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    placed_at   timestamptz   NOT NULL DEFAULT now(),
    updated_at  timestamptz   NOT NULL DEFAULT now(),
    item_count  integer       NOT NULL DEFAULT 0 CHECK (item_count >= 0)
);

COMMENT ON TABLE orders IS 'Customer orders; total is the sum of the order lines.';
COMMENT ON COLUMN orders.item_count IS 'Number of order lines (maintained by the application).';

CREATE INDEX orders_customer_id_idx ON orders (customer_id);
CREATE INDEX orders_status_idx      ON orders (status, placed_at);
CREATE INDEX orders_placed_at_idx   ON orders (placed_at);
CREATE INDEX orders_customer_placed_at_idx ON orders (customer_id, placed_at DESC);

CREATE TABLE order_items (
    id          bigserial     PRIMARY KEY,
    order_id    uuid          NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id  uuid          NOT NULL REFERENCES products (id) ON DELETE RESTRICT,
    quantity    integer       NOT NULL CHECK (quantity > 0),
    unit_price  numeric(12,2) NOT NULL CHECK (unit_price >= 0),
    line_total  numeric(14,2) GENERATED ALWAYS AS (quantity * unit_price) STORED,
    UNIQUE (order_id, product_id)
);

COMMENT ON TABLE order_items IS 'Order lines; unit_price is captured at order time.';

CREATE INDEX order_items_order_id_idx   ON order_items (order_id);
CREATE INDEX order_items_product_id_idx ON order_items (product_id);
