-- cloner root template v1.2 (MariaDB 10.11, "mysql" engine)
-- Full schema for a fresh database: the v1.0 core tables of the multi-tenant
-- NLP-to-SQL platform (unchanged) and the v1.1 commerce tables, with the v1.2
-- changes: customers.country renamed to country_code, orders.item_count (the
-- number of order lines, backfilled by the v1.1 -> v1.2 migration) and an index
-- for a customer's orders by date.
-- The same logical schema as templates/postgres/v1.2, translated type by type.
--
-- Columns added by a migration come last in their table here, where
-- ALTER TABLE ... ADD COLUMN puts them, so a migrated database and a fresh one
-- have the same column order (the migration tests compare the catalogues).
--
-- Applied by the provisioning engine as the tenant's owner account, in the
-- tenant database, statement by statement (MariaDB commits DDL implicitly, so
-- there is no enclosing transaction: the engine starts over on an empty
-- database if an apply is interrupted). Session: sql_mode strict, time_zone
-- '+00:00', utf8mb4. Plain SQL only: no transaction control, no
-- users/grants, no DELIMITER or compound statements. Rows in schema_info are
-- written by the engine, never by this file.
--
-- Translation rules (PostgreSQL -> MariaDB):
--   uuid DEFAULT gen_random_uuid()  -> CHAR(36) DEFAULT (UUID())
--   text                            -> TEXT; VARCHAR(n) where it is a key or indexed
--   jsonb + jsonb_typeof() check    -> JSON + JSON_TYPE() check
--   text[]                          -> JSON array
--   timestamptz DEFAULT now()       -> TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6)
--                                      (stored in UTC like timestamptz; range ends in 2038)
--   bigserial                       -> BIGINT AUTO_INCREMENT
--   numeric(p,s)                    -> DECIMAL(p,s)
--   inet                            -> VARCHAR(45) checked with IS_IPV4/IS_IPV6
--   ~ 'regex'                       -> REGEXP (case-sensitive under utf8mb4_bin)
--   partial unique index            -> unique key over an invisible generated column,
--                                      or a plain unique key where NULLs already
--                                      keep rows apart
--   partial index                   -> plain index
--   COMMENT ON                      -> COMMENT clauses
-- Every table is InnoDB, utf8mb4 with the binary collation: text compares
-- and sorts by code point and case-sensitively, as under PostgreSQL's C.UTF-8.

-- ---------------------------------------------------------------------------
-- Template bookkeeping
-- ---------------------------------------------------------------------------
CREATE TABLE schema_info (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    kind        VARCHAR(16)  NOT NULL CHECK (kind IN ('root', 'overlay', 'migration')),
    name        VARCHAR(64)  NOT NULL,
    version     VARCHAR(16)  NOT NULL,
    checksum    CHAR(64)     NOT NULL,
    applied_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    duration_ms INT          CHECK (duration_ms >= 0),
    UNIQUE KEY schema_info_kind_name_version_key (kind, name, version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Templates and migrations applied to this database (maintained by the provisioning engine).';

-- ---------------------------------------------------------------------------
-- Organizations and users
-- ---------------------------------------------------------------------------
CREATE TABLE organizations (
    id          CHAR(36)     NOT NULL DEFAULT (UUID()) PRIMARY KEY,
    slug        VARCHAR(63)  NOT NULL UNIQUE
                             CHECK (slug REGEXP '^[a-z0-9][a-z0-9-]{0,62}$'),
    name        TEXT         NOT NULL CHECK (CHAR_LENGTH(TRIM(name)) > 0),
    status      VARCHAR(16)  NOT NULL DEFAULT 'active'
                             CHECK (status IN ('active', 'suspended', 'archived')),
    settings    JSON         NOT NULL DEFAULT ('{}')
                             CHECK (JSON_TYPE(settings) = 'OBJECT'),
    created_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Organizations (business units) inside the tenant.';

CREATE TABLE users (
    id              CHAR(36)     NOT NULL DEFAULT (UUID()) PRIMARY KEY,
    organization_id CHAR(36)     NOT NULL,
    email           VARCHAR(254) NOT NULL UNIQUE
                                 CHECK (email = LOWER(email) AND email LIKE '%_@_%'),
    display_name    TEXT         NOT NULL CHECK (CHAR_LENGTH(TRIM(display_name)) > 0),
    password_hash   TEXT
        COMMENT 'Password hash (e.g. argon2id/bcrypt encoded string); never a plaintext password. NULL for SSO-only users.',
    role            VARCHAR(16)  NOT NULL DEFAULT 'member'
                                 CHECK (role IN ('owner', 'admin', 'analyst', 'member', 'viewer')),
    status          VARCHAR(16)  NOT NULL DEFAULT 'active'
                                 CHECK (status IN ('invited', 'active', 'disabled')),
    last_login_at   TIMESTAMP(6) NULL,
    created_at      TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at      TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY users_organization_id_idx (organization_id),
    KEY users_status_idx (status),
    CONSTRAINT users_organization_id_fkey FOREIGN KEY (organization_id)
        REFERENCES organizations (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Users of the tenant; emails are stored lowercased.';

-- ---------------------------------------------------------------------------
-- Human digital twins
-- ---------------------------------------------------------------------------
CREATE TABLE hdt_profiles (
    id          CHAR(36)     NOT NULL DEFAULT (UUID()) PRIMARY KEY,
    user_id     CHAR(36)     NOT NULL,
    name        VARCHAR(255) NOT NULL CHECK (CHAR_LENGTH(TRIM(name)) > 0),
    persona     JSON         NOT NULL DEFAULT ('{}')
                             CHECK (JSON_TYPE(persona) = 'OBJECT'),
    expertise   JSON         NOT NULL DEFAULT ('[]')
                             CHECK (JSON_TYPE(expertise) IN ('ARRAY', 'OBJECT')),
    preferences JSON         NOT NULL DEFAULT ('{}')
                             CHECK (JSON_TYPE(preferences) = 'OBJECT'),
    is_default  BOOLEAN      NOT NULL DEFAULT FALSE,
    -- 1 for the default profile, NULL otherwise: with the unique key below,
    -- at most one default profile per user (PostgreSQL: a partial unique index).
    default_marker TINYINT AS (IF(is_default, 1, NULL)) STORED INVISIBLE,
    created_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY hdt_profiles_user_id_name_key (user_id, name),
    UNIQUE KEY hdt_profiles_one_default_per_user_idx (user_id, default_marker),
    KEY hdt_profiles_user_id_idx (user_id),
    CONSTRAINT hdt_profiles_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Human digital twin profiles: persona, expertise and preferences of a user.';

CREATE TABLE hdt_agents (
    id          CHAR(36)     NOT NULL DEFAULT (UUID()) PRIMARY KEY,
    profile_id  CHAR(36)     NOT NULL,
    name        VARCHAR(255) NOT NULL CHECK (CHAR_LENGTH(TRIM(name)) > 0),
    model       TEXT         NOT NULL CHECK (CHAR_LENGTH(TRIM(model)) > 0),
    config      JSON         NOT NULL DEFAULT ('{}')
                             CHECK (JSON_TYPE(config) = 'OBJECT'),
    status      VARCHAR(16)  NOT NULL DEFAULT 'active'
                             CHECK (status IN ('draft', 'active', 'paused', 'retired')),
    created_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY hdt_agents_profile_id_name_key (profile_id, name),
    KEY hdt_agents_profile_id_idx (profile_id),
    KEY hdt_agents_status_idx (status),
    CONSTRAINT hdt_agents_profile_id_fkey FOREIGN KEY (profile_id)
        REFERENCES hdt_profiles (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Agents acting on behalf of a digital twin profile.';

-- ---------------------------------------------------------------------------
-- NLP-to-SQL query log
-- ---------------------------------------------------------------------------
CREATE TABLE query_logs (
    id                BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id           CHAR(36),
    agent_id          CHAR(36),
    natural_language  TEXT         NOT NULL CHECK (CHAR_LENGTH(TRIM(natural_language)) > 0),
    generated_sql     TEXT,
    status            VARCHAR(16)  NOT NULL DEFAULT 'pending'
                                   CHECK (status IN ('pending', 'running', 'succeeded',
                                                     'failed', 'rejected', 'cancelled')),
    error_message     TEXT,
    duration_ms       INT          CHECK (duration_ms >= 0),
    rows_returned     INT          CHECK (rows_returned >= 0),
    created_at        TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    completed_at      TIMESTAMP(6) NULL,
    CONSTRAINT query_logs_completed_check
        CHECK (completed_at IS NULL OR completed_at >= created_at),
    KEY query_logs_user_id_idx (user_id),
    KEY query_logs_agent_id_idx (agent_id),
    KEY query_logs_created_at_idx (created_at),
    KEY query_logs_status_idx (status, created_at),
    CONSTRAINT query_logs_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE SET NULL,
    CONSTRAINT query_logs_agent_id_fkey FOREIGN KEY (agent_id)
        REFERENCES hdt_agents (id) ON DELETE SET NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Natural-language questions, the SQL generated for them and the execution outcome.';

-- ---------------------------------------------------------------------------
-- Authorization
-- ---------------------------------------------------------------------------
CREATE TABLE permissions (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id     CHAR(36),
    role        VARCHAR(16)  CHECK (role IN ('owner', 'admin', 'analyst', 'member', 'viewer')),
    resource    VARCHAR(255) NOT NULL CHECK (CHAR_LENGTH(TRIM(resource)) > 0),
    action      VARCHAR(16)  NOT NULL
                             CHECK (action IN ('read', 'write', 'delete', 'execute', 'admin')),
    effect      VARCHAR(8)   NOT NULL DEFAULT 'allow' CHECK (effect IN ('allow', 'deny')),
    created_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    -- A grant targets exactly one subject: a user or a role.
    CONSTRAINT permissions_subject_check CHECK ((user_id IS NULL) <> (role IS NULL)),
    KEY permissions_user_id_idx (user_id),
    -- Unique keys treat NULLs as distinct, so these behave like PostgreSQL's
    -- partial unique indexes (... WHERE user_id / role IS NOT NULL).
    UNIQUE KEY permissions_user_grant_uidx (user_id, resource, action),
    UNIQUE KEY permissions_role_grant_uidx (role, resource, action),
    CONSTRAINT permissions_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Grants of an action on a resource to either a user or a role.';

-- ---------------------------------------------------------------------------
-- Security audit trail
-- ---------------------------------------------------------------------------
CREATE TABLE security_logs (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id     CHAR(36),
    event_type  VARCHAR(64)  NOT NULL CHECK (CHAR_LENGTH(TRIM(event_type)) > 0),
    severity    VARCHAR(16)  NOT NULL DEFAULT 'info'
                             CHECK (severity IN ('debug', 'info', 'warning', 'error', 'critical')),
    ip_address  VARCHAR(45)  CHECK (IS_IPV4(ip_address) OR IS_IPV6(ip_address)),
    details     JSON         NOT NULL DEFAULT ('{}')
                             CHECK (JSON_TYPE(details) = 'OBJECT'),
    created_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY security_logs_user_id_idx (user_id),
    KEY security_logs_created_at_idx (created_at),
    KEY security_logs_type_idx (event_type, created_at),
    KEY security_logs_severity_idx (severity),
    CONSTRAINT security_logs_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE SET NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Security-relevant events (logins, token use, permission changes, ...).';

-- ---------------------------------------------------------------------------
-- API tokens
-- ---------------------------------------------------------------------------
CREATE TABLE api_tokens (
    id           CHAR(36)     NOT NULL DEFAULT (UUID()) PRIMARY KEY,
    user_id      CHAR(36)     NOT NULL,
    name         VARCHAR(255) NOT NULL CHECK (CHAR_LENGTH(TRIM(name)) > 0),
    token_hash   CHAR(64)     NOT NULL UNIQUE
        COMMENT 'Lowercase hex SHA-256 of the token; the token itself is shown once and never stored.'
                              CHECK (token_hash REGEXP '^[0-9a-f]{64}$'),
    scopes       JSON         NOT NULL DEFAULT ('[]') CHECK (JSON_TYPE(scopes) = 'ARRAY'),
    created_at   TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    last_used_at TIMESTAMP(6) NULL,
    expires_at   TIMESTAMP(6) NULL,
    revoked_at   TIMESTAMP(6) NULL,
    CONSTRAINT api_tokens_expiry_check CHECK (expires_at IS NULL OR expires_at > created_at),
    KEY api_tokens_user_id_idx (user_id),
    -- Leading revoked_at: "active tokens by expiry" reads one range of it.
    KEY api_tokens_active_idx (revoked_at, expires_at),
    CONSTRAINT api_tokens_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='API tokens; only a hash of each token is stored.';

-- ---------------------------------------------------------------------------
-- Tenant-level settings
-- ---------------------------------------------------------------------------
CREATE TABLE system_settings (
    `key`       VARCHAR(255) NOT NULL PRIMARY KEY CHECK (`key` REGEXP '^[a-z][a-z0-9_.]*$'),
    value       JSON         NOT NULL,
    description TEXT,
    updated_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Tenant-wide configuration values (JSON).';

INSERT INTO system_settings (`key`, value, description) VALUES
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
    id           CHAR(36)     NOT NULL DEFAULT (UUID()) PRIMARY KEY,
    external_ref VARCHAR(255) UNIQUE,
    name         VARCHAR(255) NOT NULL CHECK (CHAR_LENGTH(TRIM(name)) > 0),
    email        VARCHAR(254) UNIQUE
                              CHECK (email = LOWER(email) AND email LIKE '%_@_%'),
    phone        VARCHAR(32),
    country_code CHAR(2)      COMMENT 'ISO 3166-1 alpha-2 country code.'
                              CHECK (country_code REGEXP '^[A-Z]{2}$'),
    created_at   TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at   TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY customers_name_idx (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Customers of the tenant (buyers); emails are stored lowercased.';

CREATE TABLE products (
    id          CHAR(36)      NOT NULL DEFAULT (UUID()) PRIMARY KEY,
    sku         VARCHAR(64)   NOT NULL UNIQUE CHECK (CHAR_LENGTH(TRIM(sku)) > 0),
    name        VARCHAR(255)  NOT NULL CHECK (CHAR_LENGTH(TRIM(name)) > 0),
    description TEXT,
    price       DECIMAL(12,2) NOT NULL CHECK (price >= 0),
    currency    CHAR(3)       NOT NULL DEFAULT 'USD' CHECK (currency REGEXP '^[A-Z]{3}$'),
    active      BOOLEAN       NOT NULL DEFAULT TRUE,
    created_at  TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at  TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY products_name_idx (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Product catalogue; price is in the product currency.';

CREATE TABLE orders (
    id           CHAR(36)      NOT NULL DEFAULT (UUID()) PRIMARY KEY,
    order_number VARCHAR(64)   NOT NULL UNIQUE CHECK (CHAR_LENGTH(TRIM(order_number)) > 0),
    customer_id  CHAR(36)      NOT NULL,
    status       VARCHAR(16)   NOT NULL DEFAULT 'pending'
                               CHECK (status IN ('pending', 'paid', 'shipped', 'delivered',
                                                 'cancelled', 'refunded')),
    total        DECIMAL(12,2) NOT NULL DEFAULT 0 CHECK (total >= 0),
    currency     CHAR(3)       NOT NULL DEFAULT 'USD' CHECK (currency REGEXP '^[A-Z]{3}$'),
    placed_at    TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at   TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    item_count   INT           NOT NULL DEFAULT 0
        COMMENT 'Number of order lines (maintained by the application).'
                               CHECK (item_count >= 0),
    KEY orders_customer_id_idx (customer_id),
    KEY orders_status_idx (status, placed_at),
    KEY orders_placed_at_idx (placed_at),
    -- A customer's orders, newest first (descending index keys: MariaDB 10.8+).
    KEY orders_customer_placed_at_idx (customer_id, placed_at DESC),
    CONSTRAINT orders_customer_id_fkey FOREIGN KEY (customer_id)
        REFERENCES customers (id) ON DELETE RESTRICT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Customer orders; total is the sum of the order lines.';

CREATE TABLE order_items (
    id          BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    order_id    CHAR(36)      NOT NULL,
    product_id  CHAR(36)      NOT NULL,
    quantity    INT           NOT NULL CHECK (quantity > 0),
    unit_price  DECIMAL(12,2) NOT NULL CHECK (unit_price >= 0),
    line_total  DECIMAL(14,2) GENERATED ALWAYS AS (quantity * unit_price) STORED,
    UNIQUE KEY order_items_order_id_product_id_key (order_id, product_id),
    KEY order_items_order_id_idx (order_id),
    KEY order_items_product_id_idx (product_id),
    CONSTRAINT order_items_order_id_fkey FOREIGN KEY (order_id)
        REFERENCES orders (id) ON DELETE CASCADE,
    CONSTRAINT order_items_product_id_fkey FOREIGN KEY (product_id)
        REFERENCES products (id) ON DELETE RESTRICT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Order lines; unit_price is captured at order time.';
