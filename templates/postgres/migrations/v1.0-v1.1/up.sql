-- cloner migration v1.0 -> v1.1 (PostgreSQL 15): up.
-- Adds the commerce tables exactly as templates/postgres/v1.1/schema.sql defines them.
--
-- Run by the engine in one transaction as the tenant's owner role
-- (search_path = public) and recorded in schema_info by the engine. Plain SQL
-- only, like the templates: no transaction control, roles, grants or
-- extensions. Tables created by the owner get the app/readonly grants from the
-- default privileges set at provisioning.

CREATE TABLE customers (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    external_ref text        UNIQUE,
    name        text        NOT NULL CHECK (length(btrim(name)) > 0),
    email       text        UNIQUE
                            CHECK (email = lower(email) AND email LIKE '%_@_%'),
    phone       text,
    country     char(2)     CHECK (country ~ '^[A-Z]{2}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE customers IS 'Customers of the tenant (buyers); emails are stored lowercased.';

CREATE INDEX customers_name_idx ON customers (name);

CREATE TABLE products (
    id          uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    sku         text          NOT NULL UNIQUE CHECK (length(btrim(sku)) > 0),
    name        text          NOT NULL CHECK (length(btrim(name)) > 0),
    description text,
    price       numeric(12,2) NOT NULL CHECK (price >= 0),
    currency    char(3)       NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    active      boolean       NOT NULL DEFAULT true,
    created_at  timestamptz   NOT NULL DEFAULT now(),
    updated_at  timestamptz   NOT NULL DEFAULT now()
);

COMMENT ON TABLE products IS 'Product catalogue; price is in the product currency.';

CREATE INDEX products_name_idx ON products (name);

CREATE TABLE orders (
    id          uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    order_number text          NOT NULL UNIQUE CHECK (length(btrim(order_number)) > 0),
    customer_id uuid          NOT NULL REFERENCES customers (id) ON DELETE RESTRICT,
    status      text          NOT NULL DEFAULT 'pending'
                              CHECK (status IN ('pending', 'paid', 'shipped', 'delivered',
                                                'cancelled', 'refunded')),
    total       numeric(12,2) NOT NULL DEFAULT 0 CHECK (total >= 0),
    currency    char(3)       NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    placed_at   timestamptz   NOT NULL DEFAULT now(),
    updated_at  timestamptz   NOT NULL DEFAULT now()
);

COMMENT ON TABLE orders IS 'Customer orders; total is the sum of the order lines.';

CREATE INDEX orders_customer_id_idx ON orders (customer_id);
CREATE INDEX orders_status_idx      ON orders (status, placed_at);
CREATE INDEX orders_placed_at_idx   ON orders (placed_at);

CREATE TABLE order_items (
    id          bigserial     PRIMARY KEY,
    order_id    uuid          NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id  uuid          NOT NULL REFERENCES products (id) ON DELETE RESTRICT,
    quantity    integer       NOT NULL CHECK (quantity > 0),
    unit_price  numeric(12,2) NOT NULL CHECK (unit_price >= 0),
    line_total  numeric(14,2) GENERATED ALWAYS AS (quantity * unit_price) STORED,
    UNIQUE (order_id, product_id)
);

COMMENT ON TABLE order_items IS 'Order lines; unit_price is captured at order time.';

CREATE INDEX order_items_order_id_idx   ON order_items (order_id);
CREATE INDEX order_items_product_id_idx ON order_items (product_id);
