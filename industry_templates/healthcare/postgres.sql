-- cloner industry overlay: healthcare (PostgreSQL 15)
-- Applied after any root template (v1.0 or later) in the same transaction.
-- References only tables that exist since root v1.0.

CREATE TABLE medical_procedures (
    id               uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    code             text          NOT NULL UNIQUE CHECK (code ~ '^[A-Z0-9][A-Z0-9.-]{1,19}$'),
    name             text          NOT NULL CHECK (length(btrim(name)) > 0),
    category         text          NOT NULL
                                   CHECK (category IN ('consultation', 'diagnostic', 'imaging',
                                                       'laboratory', 'surgical', 'therapy',
                                                       'preventive')),
    description      text,
    price            numeric(12,2) NOT NULL CHECK (price >= 0),
    currency         char(3)       NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    duration_minutes integer       NOT NULL CHECK (duration_minutes > 0),
    active           boolean       NOT NULL DEFAULT true,
    created_at       timestamptz   NOT NULL DEFAULT now()
);

COMMENT ON TABLE medical_procedures IS 'Catalogue of medical procedures offered, with list price and typical duration.';

CREATE INDEX medical_procedures_category_idx ON medical_procedures (category);
CREATE INDEX medical_procedures_name_idx     ON medical_procedures (name);

INSERT INTO medical_procedures (code, name, category, price, duration_minutes) VALUES
    ('CONS-001', 'General Consultation',         'consultation', 150.00, 30),
    ('CONS-002', 'Specialist Consultation',      'consultation', 250.00, 45),
    ('IMG-001',  'X-Ray Examination',            'imaging',      200.00, 20),
    ('IMG-002',  'MRI Scan',                     'imaging',     1200.00, 60),
    ('IMG-003',  'Ultrasound Scan',              'imaging',      320.00, 30),
    ('LAB-001',  'Complete Blood Count',         'laboratory',    45.00, 10),
    ('DIAG-001', 'Electrocardiogram (ECG)',      'diagnostic',    95.00, 15),
    ('PREV-001', 'Annual Health Check-up',       'preventive',   180.00, 60),
    ('THER-001', 'Physiotherapy Session',        'therapy',      110.00, 50),
    ('SURG-001', 'Minor Outpatient Surgery',     'surgical',     950.00, 90);
