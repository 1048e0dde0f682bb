-- Control plane schema v6: every claim of a request is an attempt with its own lease token
-- (the daemon's owner id plus a nonce). Renewal, completion, retry, release and every
-- registry write of the attempt match this token, not the owner: all workers of one daemon
-- share the owner, so matching on it let two attempts of one request both act.
ALTER TABLE requests ADD COLUMN lease_token TEXT
