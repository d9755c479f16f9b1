-- Metering of model calls: one usage row per call attempt of a run's model turn, kept once whatever the
-- number of times the turn is delivered (its key is run:task:attempt:turn; a call with no run is keyed by its
-- own id), the cost each call came to, and each tenant's budgets.

ALTER TABLE llm_calls ADD COLUMN cost_usd float8 NOT NULL DEFAULT 0;

CREATE TABLE llm_usage (
    tenant         text NOT NULL,
    usage_key      text NOT NULL,
    call_id        uuid NOT NULL,
    run_id         text,
    task_id        text,
    caller         text NOT NULL,
    requested      text NOT NULL,
    tier           text,
    deployment     text NOT NULL,
    input_tokens   int NOT NULL,
    output_tokens  int NOT NULL,
    cost_usd       float8 NOT NULL,
    at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, usage_key)
);
CREATE INDEX llm_usage_by_tenant ON llm_usage (tenant, at);
CREATE INDEX llm_usage_by_run ON llm_usage (tenant, run_id) WHERE run_id IS NOT NULL;

-- NULL: no limit. Months are calendar months in UTC.
CREATE TABLE llm_budgets (
    tenant            text PRIMARY KEY REFERENCES tenants (name),
    monthly_tokens    int8 CHECK (monthly_tokens >= 0),
    monthly_cost_usd  float8 CHECK (monthly_cost_usd >= 0),
    run_tokens        int8 CHECK (run_tokens >= 0),
    run_cost_usd      float8 CHECK (run_cost_usd >= 0),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Who may read the usage and the budgets, and set the budgets.
INSERT INTO casbin_rules (ptype, v0, v1, v2, v3) VALUES
    ('p', 'tenant-admin', '*', 'usage', 'read'),
    ('p', 'tenant-admin', '*', 'budgets', 'write'),
    ('p', 'developer', '*', 'usage', 'read'),
    ('p', 'operator', '*', 'usage', 'read');
