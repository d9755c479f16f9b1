-- Secrets, sealed: each value under its own random data key (AES-256-GCM), the data key wrapped by the
-- master key, both bound to (scope, name) as associated data. The database never holds a value, a data key
-- or the master key in clear; `master_id` is a keyed hash naming the master key that wraps the row.
-- A scope is a tenant, or '*' for the platform's secrets (the credentials of platform-wide deployments).

CREATE TABLE secrets (
    scope        text NOT NULL,
    name         text NOT NULL,
    version      int NOT NULL DEFAULT 1,
    ciphertext   bytea NOT NULL,
    wrapped_key  bytea NOT NULL,
    master_id    text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    updated_by   text NOT NULL,
    PRIMARY KEY (scope, name)
);

-- One row: the id of the master key every secret is wrapped by now. A control plane starting with another
-- key refuses to start; rotation changes it in the transaction that re-wraps every row.
CREATE TABLE secret_master (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    master_id   text NOT NULL,
    rotated_at  timestamptz NOT NULL DEFAULT now()
);

-- What an audit row says beyond its outcome (a secret's reveal: what it was revealed for).
ALTER TABLE audit ADD COLUMN detail text;

-- Who may list, set and delete the tenant's secrets (values are never read back through the API).
-- Rotating the master key is the platform admins' (their role holds every permission).
INSERT INTO casbin_rules (ptype, v0, v1, v2, v3) VALUES
    ('p', 'tenant-admin', '*', 'secrets', 'read'),
    ('p', 'tenant-admin', '*', 'secrets', 'write'),
    ('p', 'developer', '*', 'secrets', 'read'),
    ('p', 'developer', '*', 'secrets', 'write'),
    ('p', 'operator', '*', 'secrets', 'read'),
    ('p', 'viewer', '*', 'secrets', 'read');
