-- cloner migration v1.2 -> v1.1 (MariaDB 10.11, "mysql" engine): down.
-- The exact inverse of the up step. orders.item_count is derived data (the up
-- step computes it again), so dropping it loses nothing that v1.1 held.
-- customers.country_code is redefined back, CHECK and all, as up.sql explains.

DROP INDEX orders_customer_placed_at_idx ON orders;
ALTER TABLE orders DROP COLUMN item_count;
ALTER TABLE customers
    CHANGE COLUMN country_code country CHAR(2)
        CHECK (country REGEXP '^[A-Z]{2}$');
