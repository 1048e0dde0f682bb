-- cloner industry overlay: healthcare (SQLite >= 3.37)
-- The same table, indexes and sample rows as healthcare/postgres.sql.
-- Applied after any root template (v1.0 or later) in the same transaction.
-- References only tables that exist since root v1.0. Types are translated as
-- described in the header of templates/sqlite/<version>/schema.sql (uuid and
-- timestamps as checked canonical TEXT, numeric as exact decimal TEXT).

CREATE TABLE medical_procedures (
    -- Catalogue of medical procedures offered, with list price and typical duration.
    id               TEXT    NOT NULL PRIMARY KEY
                             DEFAULT (lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' || substr('89AB', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))))
                             CHECK (id GLOB '????????-????-????-????-????????????' AND length(replace(id, '-', '')) = 32 AND replace(id, '-', '') NOT GLOB '*[^0-9a-f]*'),
    -- postgres: code ~ '^[A-Z0-9][A-Z0-9.-]{1,19}$'
    code             TEXT    NOT NULL UNIQUE
                             CHECK (length(code) BETWEEN 2 AND 20 AND code GLOB '[A-Z0-9]*'
                                    AND code NOT GLOB '*[^A-Z0-9.-]*'),
    name             TEXT    NOT NULL CHECK (length(trim(name)) > 0),
    category         TEXT    NOT NULL
                             CHECK (category IN ('consultation', 'diagnostic', 'imaging',
                                                 'laboratory', 'surgical', 'therapy',
                                                 'preventive')),
    description      TEXT,
    -- numeric(12,2)
    price            TEXT    NOT NULL
                             CHECK (price = printf('%.2f', price)
                                    AND CAST(price AS REAL) BETWEEN 0 AND 9999999999.99),
    currency         TEXT    NOT NULL DEFAULT 'USD'
                             CHECK (length(currency) = 3 AND currency NOT GLOB '*[^A-Z]*'),
    duration_minutes INTEGER NOT NULL CHECK (duration_minutes > 0),
    active           INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                             CHECK (created_at IS strftime('%Y-%m-%dT%H:%M:%fZ', created_at))
) STRICT;

CREATE INDEX medical_procedures_category_idx ON medical_procedures (category);
CREATE INDEX medical_procedures_name_idx     ON medical_procedures (name);

INSERT INTO medical_procedures (code, name, category, price, duration_minutes) VALUES
    ('CONS-001', 'General Consultation',         'consultation', '150.00', 30),
    ('CONS-002', 'Specialist Consultation',      'consultation', '250.00', 45),
    ('IMG-001',  'X-Ray Examination',            'imaging',      '200.00', 20),
    ('IMG-002',  'MRI Scan',                     'imaging',     '1200.00', 60),
    ('IMG-003',  'Ultrasound Scan',              'imaging',      '320.00', 30),
    ('LAB-001',  'Complete Blood Count',         'laboratory',    '45.00', 10),
    ('DIAG-001', 'Electrocardiogram (ECG)',      'diagnostic',    '95.00', 15),
    ('PREV-001', 'Annual Health Check-up',       'preventive',   '180.00', 60),
    ('THER-001', 'Physiotherapy Session',        'therapy',      '110.00', 50),
    ('SURG-001', 'Minor Outpatient Surgery',     'surgical',     '950.00', 90);
