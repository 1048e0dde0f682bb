-- cloner industry overlay: finance (PostgreSQL 15)
-- Applied after any root template (v1.0 or later) in the same transaction.
-- References only tables that exist since root v1.0.

CREATE TABLE accounts (
    id              uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid          REFERENCES organizations (id) ON DELETE SET NULL,
    account_number  text          NOT NULL UNIQUE CHECK (account_number ~ '^[A-Z0-9-]{6,34}$'),
    holder_name     text          NOT NULL CHECK (length(btrim(holder_name)) > 0),
    account_type    text          NOT NULL
                                  CHECK (account_type IN ('checking', 'savings', 'credit',
                                                          'loan', 'investment')),
    balance         numeric(14,2) NOT NULL DEFAULT 0,
    currency        char(3)       NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    status          text          NOT NULL DEFAULT 'open'
                                  CHECK (status IN ('open', 'frozen', 'closed')),
    opened_at       timestamptz   NOT NULL DEFAULT now(),
    closed_at       timestamptz,
    CHECK (closed_at IS NULL OR closed_at >= opened_at),
    -- Only credit and loan accounts may carry a negative balance.
    CHECK (balance >= 0 OR account_type IN ('credit', 'loan'))
);

COMMENT ON TABLE accounts IS 'Financial accounts; balance is in the account currency.';

CREATE INDEX accounts_organization_id_idx ON accounts (organization_id);
CREATE INDEX accounts_holder_name_idx     ON accounts (holder_name);

CREATE TABLE transactions (
    id          bigserial     PRIMARY KEY,
    account_id  uuid          NOT NULL REFERENCES accounts (id) ON DELETE RESTRICT,
    kind        text          NOT NULL CHECK (kind IN ('debit', 'credit')),
    amount      numeric(14,2) NOT NULL CHECK (amount > 0),
    currency    char(3)       NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    reference   text,
    description text,
    occurred_at timestamptz   NOT NULL DEFAULT now(),
    created_at  timestamptz   NOT NULL DEFAULT now()
);

COMMENT ON TABLE transactions IS 'Account ledger entries; amount is positive and kind gives the direction.';

CREATE INDEX transactions_account_id_idx  ON transactions (account_id, occurred_at);
CREATE INDEX transactions_occurred_at_idx ON transactions (occurred_at);
CREATE INDEX transactions_reference_idx   ON transactions (reference) WHERE reference IS NOT NULL;

INSERT INTO accounts (account_number, holder_name, account_type, balance, currency, opened_at) VALUES
    ('CHK-100200300', 'Alice Martin',         'checking',    5250.75, 'USD', '2024-03-12 09:00:00+00'),
    ('SAV-100200301', 'Alice Martin',         'savings',    18400.00, 'USD', '2024-03-12 09:05:00+00'),
    ('CHK-200300400', 'Northwind Traders',    'checking',   73210.40, 'USD', '2023-11-02 14:30:00+00'),
    ('CRD-300400500', 'Bruno Keller',         'credit',      -842.19, 'EUR', '2025-01-20 10:15:00+00'),
    ('INV-400500600', 'Chen Wei',             'investment', 120000.00, 'USD', '2022-07-08 16:45:00+00');

-- Ledger entries consistent with the balances above (sum of credits minus debits).
INSERT INTO transactions (account_id, kind, amount, currency, reference, description, occurred_at)
SELECT a.id, t.kind, t.amount, a.currency, t.reference, t.description, t.occurred_at::timestamptz
FROM (VALUES
    ('CHK-100200300', 'credit',   6000.00, 'PAY-2026-10', 'Salary October',           '2026-10-31 08:00:00+00'),
    ('CHK-100200300', 'debit',     749.25, 'CARD-88412',  'Grocery and utilities',    '2026-11-03 18:22:00+00'),
    ('SAV-100200301', 'credit',  18400.00, 'TRF-55120',   'Transfer from checking',   '2026-06-01 12:00:00+00'),
    ('CHK-200300400', 'credit',  80000.00, 'INV-2026-311','Customer invoice payment', '2026-10-15 11:10:00+00'),
    ('CHK-200300400', 'debit',    6789.60, 'SUP-7731',    'Supplier payment',         '2026-10-20 09:45:00+00'),
    ('CRD-300400500', 'debit',     842.19, 'CARD-99310',  'Travel booking',           '2026-11-10 20:05:00+00'),
    ('INV-400500600', 'credit', 120000.00, 'DEP-0001',    'Initial deposit',          '2022-07-08 16:45:00+00')
) AS t (account_number, kind, amount, reference, description, occurred_at)
JOIN accounts a ON a.account_number = t.account_number;
