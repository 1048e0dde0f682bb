-- cloner migration v1.0 -> v1.1 (MariaDB 10.11, "mysql" engine): up.
-- Adds the commerce tables exactly as templates/mysql/v1.1/schema.sql defines them.
--
-- Run by the engine as the tenant's owner account, in the tenant database,
-- statement by statement (MariaDB commits every DDL statement on its own: a
-- step that fails part-way is undone by restoring the pre-migration backup,
-- never by the down step), with the templates' session (strict sql_mode,
-- time_zone '+00:00'), and recorded in schema_info by the engine once every
-- statement ran. Plain SQL only, like the templates: no transaction control,
-- users, grants, DELIMITER or compound statements. The app and readonly
-- accounts reach the new tables through their database-level grants.

CREATE TABLE customers (
    id           CHAR(36)     NOT NULL DEFAULT (UUID()) PRIMARY KEY,
    external_ref VARCHAR(255) UNIQUE,
    name         VARCHAR(255) NOT NULL CHECK (CHAR_LENGTH(TRIM(name)) > 0),
    email        VARCHAR(254) UNIQUE
                              CHECK (email = LOWER(email) AND email LIKE '%_@_%'),
    phone        VARCHAR(32),
    country      CHAR(2)      CHECK (country REGEXP '^[A-Z]{2}$'),
    created_at   TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at   TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY customers_name_idx (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Customers of the tenant (buyers); emails are stored lowercased.';

CREATE TABLE products (
    id          CHAR(36)      NOT NULL DEFAULT (UUID()) PRIMARY KEY,
    sku         VARCHAR(64)   NOT NULL UNIQUE CHECK (CHAR_LENGTH(TRIM(sku)) > 0),
    name        VARCHAR(255)  NOT NULL CHECK (CHAR_LENGTH(TRIM(name)) > 0),
    description TEXT,
    price       DECIMAL(12,2) NOT NULL CHECK (price >= 0),
    currency    CHAR(3)       NOT NULL DEFAULT 'USD' CHECK (currency REGEXP '^[A-Z]{3}$'),
    active      BOOLEAN       NOT NULL DEFAULT TRUE,
    created_at  TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at  TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY products_name_idx (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Product catalogue; price is in the product currency.';

CREATE TABLE orders (
    id           CHAR(36)      NOT NULL DEFAULT (UUID()) PRIMARY KEY,
    order_number VARCHAR(64)   NOT NULL UNIQUE CHECK (CHAR_LENGTH(TRIM(order_number)) > 0),
    customer_id  CHAR(36)      NOT NULL,
    status       VARCHAR(16)   NOT NULL DEFAULT 'pending'
                               CHECK (status IN ('pending', 'paid', 'shipped', 'delivered',
                                                 'cancelled', 'refunded')),
    total        DECIMAL(12,2) NOT NULL DEFAULT 0 CHECK (total >= 0),
    currency     CHAR(3)       NOT NULL DEFAULT 'USD' CHECK (currency REGEXP '^[A-Z]{3}$'),
    placed_at    TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at   TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY orders_customer_id_idx (customer_id),
    KEY orders_status_idx (status, placed_at),
    KEY orders_placed_at_idx (placed_at),
    CONSTRAINT orders_customer_id_fkey FOREIGN KEY (customer_id)
        REFERENCES customers (id) ON DELETE RESTRICT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Customer orders; total is the sum of the order lines.';

CREATE TABLE order_items (
    id          BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    order_id    CHAR(36)      NOT NULL,
    product_id  CHAR(36)      NOT NULL,
    quantity    INT           NOT NULL CHECK (quantity > 0),
    unit_price  DECIMAL(12,2) NOT NULL CHECK (unit_price >= 0),
    line_total  DECIMAL(14,2) GENERATED ALWAYS AS (quantity * unit_price) STORED,
    UNIQUE KEY order_items_order_id_product_id_key (order_id, product_id),
    KEY order_items_order_id_idx (order_id),
    KEY order_items_product_id_idx (product_id),
    CONSTRAINT order_items_order_id_fkey FOREIGN KEY (order_id)
        REFERENCES orders (id) ON DELETE CASCADE,
    CONSTRAINT order_items_product_id_fkey FOREIGN KEY (product_id)
        REFERENCES products (id) ON DELETE RESTRICT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Order lines; unit_price is captured at order time.';
