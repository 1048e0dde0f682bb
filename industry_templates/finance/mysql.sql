-- cloner industry overlay: finance (MariaDB 10.11, "mysql" engine)
-- Applied after any root template (v1.0 or later), in the same session.
-- References only tables that exist since root v1.0. Same logical schema as
-- postgres.sql next to it; timestamps are UTC (the engine sets time_zone).
-- TIMESTAMP covers 1970-2038 only: enough for these samples.

CREATE TABLE accounts (
    id              CHAR(36)      NOT NULL DEFAULT (UUID()) PRIMARY KEY,
    organization_id CHAR(36),
    account_number  VARCHAR(34)   NOT NULL UNIQUE CHECK (account_number REGEXP '^[A-Z0-9-]{6,34}$'),
    holder_name     VARCHAR(255)  NOT NULL CHECK (CHAR_LENGTH(TRIM(holder_name)) > 0),
    account_type    VARCHAR(16)   NOT NULL
                                  CHECK (account_type IN ('checking', 'savings', 'credit',
                                                          'loan', 'investment')),
    balance         DECIMAL(14,2) NOT NULL DEFAULT 0,
    currency        CHAR(3)       NOT NULL DEFAULT 'USD' CHECK (currency REGEXP '^[A-Z]{3}$'),
    status          VARCHAR(8)    NOT NULL DEFAULT 'open'
                                  CHECK (status IN ('open', 'frozen', 'closed')),
    opened_at       TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    closed_at       TIMESTAMP(6)  NULL,
    CONSTRAINT accounts_closed_check CHECK (closed_at IS NULL OR closed_at >= opened_at),
    -- Only credit and loan accounts may carry a negative balance.
    CONSTRAINT accounts_balance_check CHECK (balance >= 0 OR account_type IN ('credit', 'loan')),
    KEY accounts_organization_id_idx (organization_id),
    KEY accounts_holder_name_idx (holder_name),
    CONSTRAINT accounts_organization_id_fkey FOREIGN KEY (organization_id)
        REFERENCES organizations (id) ON DELETE SET NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Financial accounts; balance is in the account currency.';

CREATE TABLE transactions (
    id          BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    account_id  CHAR(36)      NOT NULL,
    kind        VARCHAR(8)    NOT NULL CHECK (kind IN ('debit', 'credit')),
    amount      DECIMAL(14,2) NOT NULL CHECK (amount > 0),
    currency    CHAR(3)       NOT NULL DEFAULT 'USD' CHECK (currency REGEXP '^[A-Z]{3}$'),
    reference   VARCHAR(64),
    description TEXT,
    occurred_at TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    created_at  TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY transactions_account_id_idx (account_id, occurred_at),
    KEY transactions_occurred_at_idx (occurred_at),
    KEY transactions_reference_idx (reference),
    CONSTRAINT transactions_account_id_fkey FOREIGN KEY (account_id)
        REFERENCES accounts (id) ON DELETE RESTRICT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Account ledger entries; amount is positive and kind gives the direction.';

INSERT INTO accounts (account_number, holder_name, account_type, balance, currency, opened_at) VALUES
    ('CHK-100200300', 'Alice Martin',         'checking',    5250.75, 'USD', '2024-03-12 09:00:00'),
    ('SAV-100200301', 'Alice Martin',         'savings',    18400.00, 'USD', '2024-03-12 09:05:00'),
    ('CHK-200300400', 'Northwind Traders',    'checking',   73210.40, 'USD', '2023-11-02 14:30:00'),
    ('CRD-300400500', 'Bruno Keller',         'credit',      -842.19, 'EUR', '2025-01-20 10:15:00'),
    ('INV-400500600', 'Chen Wei',             'investment', 120000.00, 'USD', '2022-07-08 16:45:00');

-- Ledger entries consistent with the balances above (sum of credits minus debits).
INSERT INTO transactions (account_id, kind, amount, currency, reference, description, occurred_at)
SELECT a.id, t.kind, t.amount, a.currency, t.reference, t.description, t.occurred_at
FROM (
    SELECT 'CHK-100200300' AS account_number, 'credit' AS kind, 6000.00 AS amount,
           'PAY-2026-10' AS reference, 'Salary October' AS description,
           '2026-10-31 08:00:00' AS occurred_at
    UNION ALL SELECT 'CHK-100200300', 'debit',     749.25, 'CARD-88412',   'Grocery and utilities',    '2026-11-03 18:22:00'
    UNION ALL SELECT 'SAV-100200301', 'credit',  18400.00, 'TRF-55120',    'Transfer from checking',   '2026-06-01 12:00:00'
    UNION ALL SELECT 'CHK-200300400', 'credit',  80000.00, 'INV-2026-311', 'Customer invoice payment', '2026-10-15 11:10:00'
    UNION ALL SELECT 'CHK-200300400', 'debit',    6789.60, 'SUP-7731',     'Supplier payment',         '2026-10-20 09:45:00'
    UNION ALL SELECT 'CRD-300400500', 'debit',     842.19, 'CARD-99310',   'Travel booking',           '2026-11-10 20:05:00'
    UNION ALL SELECT 'INV-400500600', 'credit', 120000.00, 'DEP-0001',     'Initial deposit',          '2022-07-08 16:45:00'
) AS t
JOIN accounts a ON a.account_number = t.account_number;
