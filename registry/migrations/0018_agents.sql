-- Agents: versioned, immutable documents like tools and workflows (a model, instructions, tools, limits).

CREATE TABLE agents (
    tenant      text NOT NULL REFERENCES tenants (name),
    name        text NOT NULL,
    version     text NOT NULL,
    version_key int[] NOT NULL,
    spec        jsonb NOT NULL,
    digest      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name, version)
);
CREATE INDEX agents_latest ON agents (tenant, name, version_key DESC);

INSERT INTO casbin_rules (ptype, v0, v1, v2, v3) VALUES
    ('p', 'tenant-admin', '*', 'agents', 'read'),
    ('p', 'tenant-admin', '*', 'agents', 'write'),
    ('p', 'developer', '*', 'agents', 'read'),
    ('p', 'developer', '*', 'agents', 'write'),
    ('p', 'operator', '*', 'agents', 'read'),
    ('p', 'viewer', '*', 'agents', 'read');

-- A run may be of an agent on its own (`af run NAME --agent`).
ALTER TABLE runs DROP CONSTRAINT runs_target_kind_check;
ALTER TABLE runs ADD CONSTRAINT runs_target_kind_check CHECK (target_kind IN ('workflow', 'tool', 'agent'));
