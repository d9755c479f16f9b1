-- Tenants, tokens and roles: per-tenant limits, the keys that sign access tokens, refresh tokens in
-- families, and the authorization policy (casbin's rule table: ptype, v0..v5).

ALTER TABLE tenants
    ADD COLUMN max_concurrent_runs  int CHECK (max_concurrent_runs >= 0),
    ADD COLUMN requests_per_second  double precision CHECK (requests_per_second > 0);

-- Ed25519 keys of the embedded stack: the newest signs, every unexpired one verifies.
CREATE TABLE signing_keys (
    kid          text PRIMARY KEY,
    private_key  bytea NOT NULL,
    public_key   bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);

CREATE TABLE refresh_families (
    id          uuid PRIMARY KEY,
    tenant      text NOT NULL REFERENCES tenants (name),
    key_prefix  text NOT NULL REFERENCES api_keys (prefix),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Refresh tokens are random, so a plain SHA-256 of one is a safe and fast look-up key.
CREATE TABLE refresh_tokens (
    hash        text PRIMARY KEY,
    family      uuid NOT NULL REFERENCES refresh_families (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    rotated_at  timestamptz
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);

CREATE TABLE casbin_rules (
    id     bigserial PRIMARY KEY,
    ptype  text NOT NULL,
    v0     text NOT NULL DEFAULT '',
    v1     text NOT NULL DEFAULT '',
    v2     text NOT NULL DEFAULT '',
    v3     text NOT NULL DEFAULT '',
    v4     text NOT NULL DEFAULT '',
    v5     text NOT NULL DEFAULT '',
    UNIQUE (ptype, v0, v1, v2, v3, v4, v5)
);

-- What each role may do, in any tenant ("*"): p, role, tenant, object, action.
INSERT INTO casbin_rules (ptype, v0, v1, v2, v3) VALUES
    ('p', 'platform-admin', '*', '*', '*'),
    ('p', 'tenant-admin', '*', 'tools', 'read'),
    ('p', 'tenant-admin', '*', 'tools', 'write'),
    ('p', 'tenant-admin', '*', 'workflows', 'read'),
    ('p', 'tenant-admin', '*', 'workflows', 'write'),
    ('p', 'tenant-admin', '*', 'runs', 'read'),
    ('p', 'tenant-admin', '*', 'runs', 'write'),
    ('p', 'tenant-admin', '*', 'runs', 'cancel'),
    ('p', 'tenant-admin', '*', 'runs', 'signal'),
    ('p', 'tenant-admin', '*', 'workers', 'read'),
    ('p', 'tenant-admin', '*', 'keys', 'write'),
    ('p', 'tenant-admin', '*', 'audit', 'read'),
    ('p', 'developer', '*', 'tools', 'read'),
    ('p', 'developer', '*', 'tools', 'write'),
    ('p', 'developer', '*', 'workflows', 'read'),
    ('p', 'developer', '*', 'workflows', 'write'),
    ('p', 'developer', '*', 'runs', 'read'),
    ('p', 'developer', '*', 'runs', 'write'),
    ('p', 'developer', '*', 'workers', 'read'),
    ('p', 'operator', '*', 'tools', 'read'),
    ('p', 'operator', '*', 'workflows', 'read'),
    ('p', 'operator', '*', 'runs', 'read'),
    ('p', 'operator', '*', 'runs', 'cancel'),
    ('p', 'operator', '*', 'runs', 'signal'),
    ('p', 'operator', '*', 'workers', 'read'),
    ('p', 'viewer', '*', 'tools', 'read'),
    ('p', 'viewer', '*', 'workflows', 'read'),
    ('p', 'viewer', '*', 'runs', 'read'),
    ('p', 'viewer', '*', 'workers', 'read');

-- Keys made before roles existed were all the local admin's: they become platform admins, granted in every
-- tenant ("*"); any other key gets its role in its own tenant.
UPDATE api_keys SET role = 'platform-admin' WHERE role = 'admin';
INSERT INTO casbin_rules (ptype, v0, v1, v2)
SELECT 'g', 'key:' || prefix, role, CASE WHEN role = 'platform-admin' THEN '*' ELSE tenant END FROM api_keys;
