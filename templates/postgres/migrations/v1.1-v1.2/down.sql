-- cloner migration v1.2 -> v1.1 (PostgreSQL 15): down.
-- The exact inverse of the up step. orders.item_count is derived data (the up
-- step computes it again), so dropping it loses nothing that v1.1 held.

DROP INDEX orders_customer_placed_at_idx;
ALTER TABLE orders DROP COLUMN item_count;
COMMENT ON COLUMN customers.country_code IS NULL;
ALTER TABLE customers RENAME CONSTRAINT customers_country_code_check TO customers_country_check;
ALTER TABLE customers RENAME COLUMN country_code TO country;
