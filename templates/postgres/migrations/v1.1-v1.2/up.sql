-- cloner migration v1.1 -> v1.2 (PostgreSQL 15): up.
-- Run by the engine in one transaction as the tenant's owner role
-- (search_path = public) and recorded in schema_info by the engine. Plain SQL
-- only, like the templates.

-- Renamed column. Its CHECK constraint was named after the old column; it is
-- renamed too, so the catalogue equals that of a fresh v1.2 database.
ALTER TABLE customers RENAME COLUMN country TO country_code;
ALTER TABLE customers RENAME CONSTRAINT customers_country_check TO customers_country_code_check;
COMMENT ON COLUMN customers.country_code IS 'ISO 3166-1 alpha-2 country code.';

-- New column with a backfill: the number of lines of each existing order.
-- ADD COLUMN with a constant default does not rewrite the table; the UPDATE
-- touches only orders that have lines.
ALTER TABLE orders ADD COLUMN item_count integer NOT NULL DEFAULT 0 CHECK (item_count >= 0);
COMMENT ON COLUMN orders.item_count IS 'Number of order lines (maintained by the application).';
UPDATE orders AS o
   SET item_count = lines.n
  FROM (SELECT order_id, count(*)::integer AS n FROM order_items GROUP BY order_id) AS lines
 WHERE lines.order_id = o.id;

-- New index: a customer's orders, newest first.
CREATE INDEX orders_customer_placed_at_idx ON orders (customer_id, placed_at DESC);
