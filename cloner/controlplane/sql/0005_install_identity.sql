-- Control plane schema v5: the control plane's own identity, and the orphan decisions.
-- install_identity: one row, the install id this control plane owns. Every container and
-- volume cloner creates carries it as the cloner.install label, so a control plane only
-- ever judges resources of its own install (a new or foreign one owns none of them).
-- origin says where the id came from: new, install.id file (an upgraded control plane
-- whose id lived in the data dir), adopted (an operator told a new control plane to take
-- over an install, CLONER_ADOPT_INSTALL).
CREATE TABLE install_identity (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    install_id TEXT NOT NULL,
    origin     TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Every admin decision about a quarantined orphan (cloner orphans remove / adopt), with the
-- backup taken first. Append-only: it is the record that data was removed on purpose.
CREATE TABLE orphan_decisions (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    name      TEXT NOT NULL,
    kind      TEXT NOT NULL,
    tenant_id TEXT,
    decision  TEXT NOT NULL,
    actor     TEXT,
    reason    TEXT,
    backup    TEXT,
    at        TEXT NOT NULL
);
CREATE INDEX orphan_decisions_name ON orphan_decisions (name, id)
