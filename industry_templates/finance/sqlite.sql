-- cloner industry overlay: finance (SQLite >= 3.37)
-- The same tables, indexes and sample rows as finance/postgres.sql.
-- Applied after any root template (v1.0 or later) in the same transaction.
-- References only tables that exist since root v1.0. Types are translated as
-- described in the header of templates/sqlite/<version>/schema.sql (uuid and
-- timestamps as checked canonical TEXT, numeric as exact decimal TEXT).

CREATE TABLE accounts (
    -- Financial accounts; balance is in the account currency.
    id              TEXT NOT NULL PRIMARY KEY
                         DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89AB', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))))
                         CHECK (id GLOB '????????-????-????-????-????????????' AND length(replace(id, '-', '')) = 32 AND replace(id, '-', '') NOT GLOB '*[^0-9a-f]*'),
    organization_id TEXT REFERENCES organizations (id) ON DELETE SET NULL,
    -- postgres: account_number ~ '^[A-Z0-9-]{6,34}$'
    account_number  TEXT NOT NULL UNIQUE
                         CHECK (length(account_number) BETWEEN 6 AND 34
                                AND account_number NOT GLOB '*[^A-Z0-9-]*'),
    holder_name     TEXT NOT NULL CHECK (length(trim(holder_name)) > 0),
    account_type    TEXT NOT NULL
                         CHECK (account_type IN ('checking', 'savings', 'credit',
                                                 'loan', 'investment')),
    -- numeric(14,2), signed
    balance         TEXT NOT NULL DEFAULT '0.00'
                         CHECK (balance = printf('%.2f', balance)
                                AND abs(CAST(balance AS REAL)) < 1e12),
    currency        TEXT NOT NULL DEFAULT 'USD'
                         CHECK (length(currency) = 3 AND currency NOT GLOB '*[^A-Z]*'),
    status          TEXT NOT NULL DEFAULT 'open'
                         CHECK (status IN ('open', 'frozen', 'closed')),
    opened_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                         CHECK (opened_at IS strftime('%Y-%m-%dT%H:%M:%fZ', opened_at)),
    closed_at       TEXT CHECK (closed_at IS strftime('%Y-%m-%dT%H:%M:%fZ', closed_at)),
    CHECK (closed_at IS NULL OR closed_at >= opened_at),
    -- Only credit and loan accounts may carry a negative balance.
    CHECK (CAST(balance AS REAL) >= 0 OR account_type IN ('credit', 'loan'))
) STRICT;

CREATE INDEX accounts_organization_id_idx ON accounts (organization_id);
CREATE INDEX accounts_holder_name_idx     ON accounts (holder_name);

CREATE TABLE transactions (
    -- Account ledger entries; amount is positive and kind gives the direction.
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id  TEXT    NOT NULL REFERENCES accounts (id) ON DELETE RESTRICT,
    kind        TEXT    NOT NULL CHECK (kind IN ('debit', 'credit')),
    -- numeric(14,2)
    amount      TEXT    NOT NULL
                        CHECK (amount = printf('%.2f', amount)
                               AND CAST(amount AS REAL) > 0 AND CAST(amount AS REAL) < 1e12),
    currency    TEXT    NOT NULL DEFAULT 'USD'
                        CHECK (length(currency) = 3 AND currency NOT GLOB '*[^A-Z]*'),
    reference   TEXT,
    description TEXT,
    occurred_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                        CHECK (occurred_at IS strftime('%Y-%m-%dT%H:%M:%fZ', occurred_at)),
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                        CHECK (created_at IS strftime('%Y-%m-%dT%H:%M:%fZ', created_at))
) STRICT;

CREATE INDEX transactions_account_id_idx  ON transactions (account_id, occurred_at);
CREATE INDEX transactions_occurred_at_idx ON transactions (occurred_at);
CREATE INDEX transactions_reference_idx   ON transactions (reference) WHERE reference IS NOT NULL;

INSERT INTO accounts (account_number, holder_name, account_type, balance, currency, opened_at) VALUES
    ('CHK-100200300', 'Alice Martin',         'checking',    '5250.75', 'USD', '2024-03-12T09:00:00.000Z'),
    ('SAV-100200301', 'Alice Martin',         'savings',    '18400.00', 'USD', '2024-03-12T09:05:00.000Z'),
    ('CHK-200300400', 'Northwind Traders',    'checking',   '73210.40', 'USD', '2023-11-02T14:30:00.000Z'),
    ('CRD-300400500', 'Bruno Keller',         'credit',      '-842.19', 'EUR', '2025-01-20T10:15:00.000Z'),
    ('INV-400500600', 'Chen Wei',             'investment', '120000.00', 'USD', '2022-07-08T16:45:00.000Z');

-- Ledger entries consistent with the balances above (sum of credits minus debits).
WITH t (account_number, kind, amount, reference, description, occurred_at) AS (VALUES
    ('CHK-100200300', 'credit',   '6000.00', 'PAY-2026-10', 'Salary October',           '2026-10-31T08:00:00.000Z'),
    ('CHK-100200300', 'debit',     '749.25', 'CARD-88412',  'Grocery and utilities',    '2026-11-03T18:22:00.000Z'),
    ('SAV-100200301', 'credit',  '18400.00', 'TRF-55120',   'Transfer from checking',   '2026-06-01T12:00:00.000Z'),
    ('CHK-200300400', 'credit',  '80000.00', 'INV-2026-311','Customer invoice payment', '2026-10-15T11:10:00.000Z'),
    ('CHK-200300400', 'debit',    '6789.60', 'SUP-7731',    'Supplier payment',         '2026-10-20T09:45:00.000Z'),
    ('CRD-300400500', 'debit',     '842.19', 'CARD-99310',  'Travel booking',           '2026-11-10T20:05:00.000Z'),
    ('INV-400500600', 'credit', '120000.00', 'DEP-0001',    'Initial deposit',          '2022-07-08T16:45:00.000Z')
)
INSERT INTO transactions (account_id, kind, amount, currency, reference, description, occurred_at)
SELECT a.id, t.kind, t.amount, a.currency, t.reference, t.description, t.occurred_at
FROM t
JOIN accounts a ON a.account_number = t.account_number;
