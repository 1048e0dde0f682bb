-- cloner industry overlay: technology (SQLite >= 3.37)
-- The same table, indexes and sample rows as technology/postgres.sql.
-- Applied after any root template (v1.0 or later) in the same transaction.
-- References only tables that exist since root v1.0. Types are translated as
-- described in the header of templates/sqlite/<version>/schema.sql (uuid and
-- timestamps as checked canonical TEXT, numeric as exact decimal TEXT).

CREATE TABLE software_licenses (
    -- Software licenses and subscriptions held or resold by the tenant.
    -- license_key_hash: lowercase hex SHA-256 of the license key; the key itself
    -- is never stored.
    id               TEXT    NOT NULL PRIMARY KEY
                             DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89AB', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))))
                             CHECK (id GLOB '????????-????-????-????-????????????' AND length(replace(id, '-', '')) = 32 AND replace(id, '-', '') NOT GLOB '*[^0-9a-f]*'),
    organization_id  TEXT    REFERENCES organizations (id) ON DELETE SET NULL,
    product_name     TEXT    NOT NULL CHECK (length(trim(product_name)) > 0),
    vendor           TEXT    NOT NULL CHECK (length(trim(vendor)) > 0),
    license_type     TEXT    NOT NULL DEFAULT 'subscription'
                             CHECK (license_type IN ('perpetual', 'subscription',
                                                     'usage', 'open_source')),
    license_key_hash TEXT    CHECK (length(license_key_hash) = 64
                                    AND license_key_hash NOT GLOB '*[^0-9a-f]*'),
    seats            INTEGER CHECK (seats > 0),
    -- numeric(12,2)
    price            TEXT    NOT NULL
                             CHECK (price = printf('%.2f', price)
                                    AND CAST(price AS REAL) BETWEEN 0 AND 9999999999.99),
    currency         TEXT    NOT NULL DEFAULT 'USD'
                             CHECK (length(currency) = 3 AND currency NOT GLOB '*[^A-Z]*'),
    billing_period   TEXT    CHECK (billing_period IN ('one_time', 'monthly', 'yearly')),
    starts_at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                             CHECK (starts_at IS strftime('%Y-%m-%dT%H:%M:%fZ', starts_at)),
    expires_at       TEXT    CHECK (expires_at IS strftime('%Y-%m-%dT%H:%M:%fZ', expires_at)),
    created_at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                             CHECK (created_at IS strftime('%Y-%m-%dT%H:%M:%fZ', created_at)),
    CHECK (expires_at IS NULL OR expires_at > starts_at)
) STRICT;

CREATE INDEX software_licenses_organization_id_idx ON software_licenses (organization_id);
CREATE INDEX software_licenses_vendor_idx          ON software_licenses (vendor);
CREATE INDEX software_licenses_expires_at_idx      ON software_licenses (expires_at);

INSERT INTO software_licenses
    (product_name, vendor, license_type, seats, price, billing_period, starts_at, expires_at)
VALUES
    ('Enterprise Software License', 'Acme Software',  'subscription', 100, '999.99', 'yearly',
     '2026-01-01T00:00:00.000Z', '2027-01-01T00:00:00.000Z'),
    ('Cloud Server Instance',       'Nimbus Cloud',   'usage',        NULL, '299.99', 'monthly',
     '2026-01-01T00:00:00.000Z', NULL),
    ('Developer IDE Seat',          'CodeForge',      'subscription', 25,   '149.00', 'yearly',
     '2026-03-01T00:00:00.000Z', '2027-03-01T00:00:00.000Z'),
    ('Database Support Plan',       'DataVault Inc.', 'subscription', NULL, '4500.00', 'yearly',
     '2026-02-15T00:00:00.000Z', '2027-02-15T00:00:00.000Z'),
    ('Monitoring Platform',         'Observa',        'subscription', 50,   '79.50', 'monthly',
     '2026-04-01T00:00:00.000Z', NULL),
    ('Office Suite Perpetual',      'Paperline',      'perpetual',    10,   '349.00', 'one_time',
     '2025-06-01T00:00:00.000Z', NULL);
