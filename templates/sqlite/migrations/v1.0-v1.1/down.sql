-- cloner migration v1.1 -> v1.0 (SQLite >= 3.37): down.
-- Drops the commerce tables, and with them every row they hold: the manifest
-- marks this step destructive, so a planned downgrade through it needs
-- --allow-destructive (the pre-migration backup keeps the data either way).
-- Their indexes go with them. Same rules as the up step: one transaction,
-- plain SQL. Children first, though the engine runs a step with foreign key
-- actions off and checks every key before it commits.

DROP TABLE order_items;
DROP TABLE orders;
DROP TABLE products;
DROP TABLE customers;
