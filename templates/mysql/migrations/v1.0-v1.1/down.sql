-- cloner migration v1.1 -> v1.0 (MariaDB 10.11, "mysql" engine): down.
-- Drops the commerce tables, and with them every row they hold: the manifest
-- marks this step destructive, so a planned downgrade through it needs
-- --allow-destructive (the pre-migration backup keeps the data either way).
-- Children first, so no foreign key stands in the way.

DROP TABLE order_items;
DROP TABLE orders;
DROP TABLE products;
DROP TABLE customers;
