-- API keys can be revoked: a revoked key stays (its prefix is never reused, the audit trail still names it)
-- but no longer authenticates, and its logins are revoked with it. Tenant admins list their tenant's keys.

ALTER TABLE api_keys ADD COLUMN revoked_at timestamptz;

INSERT INTO casbin_rules (ptype, v0, v1, v2, v3) VALUES
    ('p', 'tenant-admin', '*', 'keys', 'read');
