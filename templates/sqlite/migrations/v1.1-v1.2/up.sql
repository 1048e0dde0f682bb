-- cloner migration v1.1 -> v1.2 (SQLite >= 3.37): up.
-- Run by the sqlite engine in one transaction (BEGIN IMMEDIATE) and recorded
-- in schema_info by the engine. Plain SQL only, like the templates.

-- Renamed column, with its CHECK and the column's comment. ALTER TABLE ...
-- RENAME COLUMN would rename the column and rewrite the CHECK, but cannot add
-- the comment that postgres's COMMENT ON COLUMN adds, so customers is rebuilt
-- with its v1.2 definition (templates/sqlite/v1.2/schema.sql), the procedure
-- of https://www.sqlite.org/lang_altertable.html#otheralter: create the new
-- table, copy the rows (rowids too), drop the old table, rename the new one
-- into its place, create its indexes again. The engine runs the step with
-- foreign key enforcement off (so dropping customers neither checks nor
-- cascades into orders) and runs PRAGMA foreign_key_check before it commits.
CREATE TABLE customers_v1_2 (
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

INSERT INTO customers_v1_2 (
    rowid, id, external_ref, name, email, phone, country_code, created_at, updated_at)
SELECT rowid, id, external_ref, name, email, phone, country, created_at, updated_at
  FROM customers;

DROP TABLE customers;
ALTER TABLE customers_v1_2 RENAME TO customers;
CREATE INDEX customers_name_idx ON customers (name);

-- New column with a backfill: the number of lines of each existing order.
-- ADD COLUMN with a constant default does not rewrite the table (the CHECK is
-- tested against the existing rows); the UPDATE touches only orders that have
-- lines. The comment inside the definition is kept by SQLite with the column.
ALTER TABLE orders ADD COLUMN item_count INTEGER NOT NULL DEFAULT 0
    -- item_count: number of order lines (maintained by the application).
    CHECK (item_count >= 0);
UPDATE orders
   SET item_count = (SELECT count(*) FROM order_items WHERE order_items.order_id = orders.id)
 WHERE id IN (SELECT order_id FROM order_items);

-- New index: a customer's orders, newest first.
CREATE INDEX orders_customer_placed_at_idx ON orders (customer_id, placed_at DESC);
