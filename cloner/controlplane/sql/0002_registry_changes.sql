-- Control plane schema v2: a registry change counter that connection pools poll.
-- One row. Every transaction that writes a tenant row bumps it, so a reader that
-- sees the same counter twice knows no tenant changed in between.
CREATE TABLE registry_changes (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    counter INTEGER NOT NULL
);
INSERT INTO registry_changes (id, counter) VALUES (1, 0);
