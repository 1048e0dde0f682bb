-- cloner industry overlay: healthcare (MariaDB 10.11, "mysql" engine)
-- Applied after any root template (v1.0 or later), in the same session.
-- References only tables that exist since root v1.0. Same logical schema as
-- postgres.sql next to it.

CREATE TABLE medical_procedures (
    id               CHAR(36)      NOT NULL DEFAULT (UUID()) PRIMARY KEY,
    code             VARCHAR(20)   NOT NULL UNIQUE CHECK (code REGEXP '^[A-Z0-9][A-Z0-9.-]{1,19}$'),
    name             VARCHAR(255)  NOT NULL CHECK (CHAR_LENGTH(TRIM(name)) > 0),
    category         VARCHAR(16)   NOT NULL
                                   CHECK (category IN ('consultation', 'diagnostic', 'imaging',
                                                       'laboratory', 'surgical', 'therapy',
                                                       'preventive')),
    description      TEXT,
    price            DECIMAL(12,2) NOT NULL CHECK (price >= 0),
    currency         CHAR(3)       NOT NULL DEFAULT 'USD' CHECK (currency REGEXP '^[A-Z]{3}$'),
    duration_minutes INT           NOT NULL CHECK (duration_minutes > 0),
    active           BOOLEAN       NOT NULL DEFAULT TRUE,
    created_at       TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY medical_procedures_category_idx (category),
    KEY medical_procedures_name_idx (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Catalogue of medical procedures offered, with list price and typical duration.';

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
