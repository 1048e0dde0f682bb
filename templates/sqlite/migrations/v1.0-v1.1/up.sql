-- cloner migration v1.0 -> v1.1 (SQLite >= 3.37): up.
-- Adds the commerce tables exactly as templates/sqlite/v1.1/schema.sql defines
-- them (the same text, comments included: SQLite keeps a table's definition as
-- written, and the migration tests compare it with a fresh v1.1 database).
--
-- Run by the sqlite engine in one transaction (BEGIN IMMEDIATE) and recorded
-- in schema_info by the engine. Plain SQL only, like the templates: no
-- transaction control, no PRAGMA, no ATTACH (the engine refuses them).

CREATE TABLE customers (
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
                      CHECK (updated_at IS strftime('%Y-%m-%dT%H:%M:%fZ', updated_at))
) STRICT;

CREATE INDEX orders_customer_id_idx ON orders (customer_id);
CREATE INDEX orders_status_idx      ON orders (status, placed_at);
CREATE INDEX orders_placed_at_idx   ON orders (placed_at);

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
