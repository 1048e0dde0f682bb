-- cloner industry overlay: technology (MariaDB 10.11, "mysql" engine)
-- Applied after any root template (v1.0 or later), in the same session.
-- References only tables that exist since root v1.0. Same logical schema as
-- postgres.sql next to it; timestamps are UTC (the engine sets time_zone).

CREATE TABLE software_licenses (
    id               CHAR(36)      NOT NULL DEFAULT (UUID()) PRIMARY KEY,
    organization_id  CHAR(36),
    product_name     VARCHAR(255)  NOT NULL CHECK (CHAR_LENGTH(TRIM(product_name)) > 0),
    vendor           VARCHAR(255)  NOT NULL CHECK (CHAR_LENGTH(TRIM(vendor)) > 0),
    license_type     VARCHAR(16)   NOT NULL DEFAULT 'subscription'
                                   CHECK (license_type IN ('perpetual', 'subscription',
                                                           'usage', 'open_source')),
    license_key_hash CHAR(64)
        COMMENT 'Lowercase hex SHA-256 of the license key; the key itself is never stored.'
                                   CHECK (license_key_hash REGEXP '^[0-9a-f]{64}$'),
    seats            INT           CHECK (seats > 0),
    price            DECIMAL(12,2) NOT NULL CHECK (price >= 0),
    currency         CHAR(3)       NOT NULL DEFAULT 'USD' CHECK (currency REGEXP '^[A-Z]{3}$'),
    billing_period   VARCHAR(16)   CHECK (billing_period IN ('one_time', 'monthly', 'yearly')),
    starts_at        TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    expires_at       TIMESTAMP(6)  NULL,
    created_at       TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    CONSTRAINT software_licenses_period_check CHECK (expires_at IS NULL OR expires_at > starts_at),
    KEY software_licenses_organization_id_idx (organization_id),
    KEY software_licenses_vendor_idx (vendor),
    KEY software_licenses_expires_at_idx (expires_at),
    CONSTRAINT software_licenses_organization_id_fkey FOREIGN KEY (organization_id)
        REFERENCES organizations (id) ON DELETE SET NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Software licenses and subscriptions held or resold by the tenant.';

INSERT INTO software_licenses
    (product_name, vendor, license_type, seats, price, billing_period, starts_at, expires_at)
VALUES
    ('Enterprise Software License', 'Acme Software',  'subscription', 100, 999.99, 'yearly',
     '2026-01-01 00:00:00', '2027-01-01 00:00:00'),
    ('Cloud Server Instance',       'Nimbus Cloud',   'usage',        NULL, 299.99, 'monthly',
     '2026-01-01 00:00:00', NULL),
    ('Developer IDE Seat',          'CodeForge',      'subscription', 25,   149.00, 'yearly',
     '2026-03-01 00:00:00', '2027-03-01 00:00:00'),
    ('Database Support Plan',       'DataVault Inc.', 'subscription', NULL, 4500.00, 'yearly',
     '2026-02-15 00:00:00', '2027-02-15 00:00:00'),
    ('Monitoring Platform',         'Observa',        'subscription', 50,   79.50, 'monthly',
     '2026-04-01 00:00:00', NULL),
    ('Office Suite Perpetual',      'Paperline',      'perpetual',    10,   349.00, 'one_time',
     '2025-06-01 00:00:00', NULL);
