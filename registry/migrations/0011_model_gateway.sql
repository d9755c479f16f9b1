-- The model gateway: model deployments (per tenant, or platform-wide under scope '*'), each tenant's
-- recording policy, and one row per model call with every attempt it made.

CREATE TABLE model_deployments (
    scope       text NOT NULL,
    name        text NOT NULL,
    spec        jsonb NOT NULL,
    digest      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, name)
);

-- 'full': prompts and responses recorded as sent; 'metadata': their shape only (roles, sizes, tool names).
CREATE TABLE llm_settings (
    tenant  text PRIMARY KEY REFERENCES tenants (name),
    record  text NOT NULL CHECK (record IN ('full', 'metadata'))
);

CREATE TABLE llm_calls (
    id               uuid PRIMARY KEY,
    tenant           text NOT NULL,
    run_id           text,
    task_id          text,
    attempt          int NOT NULL,
    turn             int,
    caller           text NOT NULL,
    idempotency_key  text,
    requested        text NOT NULL,
    tier             text,
    deployment       text,
    outcome          text NOT NULL,
    error            text,
    attempts         jsonb NOT NULL,
    stream           boolean NOT NULL,
    latency_ms       float8 NOT NULL,
    ttft_ms          float8,
    input_tokens     int NOT NULL,
    output_tokens    int NOT NULL,
    tokens_estimated boolean NOT NULL,
    record           text NOT NULL,
    prompt           jsonb,
    response         jsonb,
    at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX llm_calls_by_key ON llm_calls (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX llm_calls_by_run ON llm_calls (tenant, run_id, at) WHERE run_id IS NOT NULL;
CREATE INDEX llm_calls_by_tenant ON llm_calls (tenant, at DESC);

-- Who may read and apply deployments and call models.
INSERT INTO casbin_rules (ptype, v0, v1, v2, v3) VALUES
    ('p', 'tenant-admin', '*', 'models', 'read'),
    ('p', 'tenant-admin', '*', 'models', 'write'),
    ('p', 'tenant-admin', '*', 'llm', 'call'),
    ('p', 'tenant-admin', '*', 'llm', 'configure'),
    ('p', 'developer', '*', 'models', 'read'),
    ('p', 'developer', '*', 'models', 'write'),
    ('p', 'developer', '*', 'llm', 'call'),
    ('p', 'operator', '*', 'models', 'read'),
    ('p', 'viewer', '*', 'models', 'read');
