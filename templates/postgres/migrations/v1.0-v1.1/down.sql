-- cloner migration v1.1 -> v1.0 (PostgreSQL 15): down.
-- Drops the commerce tables, and with them every row they hold: the manifest
-- marks this step destructive, so a planned downgrade through it needs
-- --allow-destructive (the pre-migration backup keeps the data either way).
-- Same rules as the up step: one transaction, owner role, plain SQL.

DROP TABLE order_items;
DROP TABLE orders;
DROP TABLE products;
DROP TABLE customers;
