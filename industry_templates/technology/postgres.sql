-- cloner industry overlay: technology (PostgreSQL 15)
-- Applied after any root template (v1.0 or later) in the same transaction.
-- References only tables that exist since root v1.0.

CREATE TABLE software_licenses (
    id               uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid          REFERENCES organizations (id) ON DELETE SET NULL,
    product_name     text          NOT NULL CHECK (length(btrim(product_name)) > 0),
    vendor           text          NOT NULL CHECK (length(btrim(vendor)) > 0),
    license_type     text          NOT NULL DEFAULT 'subscription'
                                   CHECK (license_type IN ('perpetual', 'subscription',
                                                           'usage', 'open_source')),
    license_key_hash char(64)      CHECK (license_key_hash ~ '^[0-9a-f]{64}$'),
    seats            integer       CHECK (seats > 0),
    price            numeric(12,2) NOT NULL CHECK (price >= 0),
    currency         char(3)       NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    billing_period   text          CHECK (billing_period IN ('one_time', 'monthly', 'yearly')),
    starts_at        timestamptz   NOT NULL DEFAULT now(),
    expires_at       timestamptz,
    created_at       timestamptz   NOT NULL DEFAULT now(),
    CHECK (expires_at IS NULL OR expires_at > starts_at)
);

COMMENT ON TABLE software_licenses IS 'Software licenses and subscriptions held or resold by the tenant.';
COMMENT ON COLUMN software_licenses.license_key_hash IS 'Lowercase hex SHA-256 of the license key; the key itself is never stored.';

CREATE INDEX software_licenses_organization_id_idx ON software_licenses (organization_id);
CREATE INDEX software_licenses_vendor_idx          ON software_licenses (vendor);
CREATE INDEX software_licenses_expires_at_idx      ON software_licenses (expires_at);

INSERT INTO software_licenses
    (product_name, vendor, license_type, seats, price, billing_period, starts_at, expires_at)
VALUES
    ('Enterprise Software License', 'Acme Software',  'subscription', 100, 999.99, 'yearly',
     '2026-01-01 00:00:00+00', '2027-01-01 00:00:00+00'),
    ('Cloud Server Instance',       'Nimbus Cloud',   'usage',        NULL, 299.99, 'monthly',
     '2026-01-01 00:00:00+00', NULL),
    ('Developer IDE Seat',          'CodeForge',      'subscription', 25,   149.00, 'yearly',
     '2026-03-01 00:00:00+00', '2027-03-01 00:00:00+00'),
    ('Database Support Plan',       'DataVault Inc.', 'subscription', NULL, 4500.00, 'yearly',
     '2026-02-15 00:00:00+00', '2027-02-15 00:00:00+00'),
    ('Monitoring Platform',         'Observa',        'subscription', 50,   79.50, 'monthly',
     '2026-04-01 00:00:00+00', NULL),
    ('Office Suite Perpetual',      'Paperline',      'perpetual',    10,   349.00, 'one_time',
     '2025-06-01 00:00:00+00', NULL);
