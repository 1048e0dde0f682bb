-- cloner migration v1.1 -> v1.2 (MariaDB 10.11, "mysql" engine): up.
-- Run by the engine as the tenant's owner account, statement by statement, and
-- recorded in schema_info once every statement ran (see v1.0-v1.1/up.sql).
-- Each statement commits on its own: should one fail, the rollout restores the
-- tenant from its pre-migration backup.

-- Renamed column. MariaDB names a column-level CHECK after its column when the
-- column is created, and RENAME COLUMN keeps that name (the CHECK would still
-- be called `country`), so the column is redefined whole: CHANGE COLUMN keeps
-- its data and recreates the CHECK under the new name, as a fresh v1.2 has it.
ALTER TABLE customers
    CHANGE COLUMN country country_code CHAR(2)
        COMMENT 'ISO 3166-1 alpha-2 country code.'
        CHECK (country_code REGEXP '^[A-Z]{2}$');

-- New column with a backfill: the number of lines of each existing order.
-- Added last (where the fresh template has it); the UPDATE touches only orders
-- that have lines, and runs as one statement, so it is all or nothing.
ALTER TABLE orders
    ADD COLUMN item_count INT NOT NULL DEFAULT 0
        COMMENT 'Number of order lines (maintained by the application).'
        CHECK (item_count >= 0);
UPDATE orders AS o
  JOIN (SELECT order_id, COUNT(*) AS n FROM order_items GROUP BY order_id) AS counted
    ON counted.order_id = o.id
   SET o.item_count = counted.n;

-- New index: a customer's orders, newest first.
CREATE INDEX orders_customer_placed_at_idx ON orders (customer_id, placed_at DESC);
