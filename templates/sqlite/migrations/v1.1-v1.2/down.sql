-- cloner migration v1.2 -> v1.1 (SQLite >= 3.37): down.
-- The exact inverse of the up step. orders.item_count is derived data (the up
-- step computes it again), so dropping it loses nothing that v1.1 held.
-- ALTER TABLE ... DROP COLUMN rewrites orders without the column and removes
-- its text (comment included) from the table's definition.

DROP INDEX orders_customer_placed_at_idx;
ALTER TABLE orders DROP COLUMN item_count;

-- customers back to its v1.1 definition (country, no column comment), rebuilt
-- the same way as in the up step.
CREATE TABLE customers_v1_1 (
    -- Customers of the tenant (buyers); emails are stored lowercased.
    id           TEXT NOT NULL PRIMARY KEY
                      DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89AB', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))))
                      CHECK (id GLOB '????????-????-????-????-????????????' AND length(replace(id, '-', '')) = 32 AND replace(id, '-', '') NOT GLOB '*[^0-9a-f]*'),
    external_ref TEXT UNIQUE,
    name         TEXT NOT NULL CHECK (length(trim(name)) > 0),
    email        TEXT UNIQUE
                      CHECK (email = lower(email) AND email LIKE '%_@_%'),
    phone        TEXT,
    country      TEXT CHECK (length(country) = 2 AND country NOT GLOB '*[^A-Z]*'),
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                      CHECK (created_at IS strftime('%Y-%m-%dT%H:%M:%fZ', created_at)),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                      CHECK (updated_at IS strftime('%Y-%m-%dT%H:%M:%fZ', updated_at))
) STRICT;

INSERT INTO customers_v1_1 (
    rowid, id, external_ref, name, email, phone, country, created_at, updated_at)
SELECT rowid, id, external_ref, name, email, phone, country_code, created_at, updated_at
  FROM customers;

DROP TABLE customers;
ALTER TABLE customers_v1_1 RENAME TO customers;
CREATE INDEX customers_name_idx ON customers (name);
