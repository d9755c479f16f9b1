-- AgentFlow's initial schema. Every table carries the tenant; tools and workflows are versioned
-- and immutable (a version, once stored, is never updated).

CREATE TABLE tenants (
    name        text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    prefix      text PRIMARY KEY,
    tenant      text NOT NULL REFERENCES tenants (name),
    hash        text NOT NULL,
    role        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tools (
    tenant      text NOT NULL REFERENCES tenants (name),
    name        text NOT NULL,
    version     text NOT NULL,
    version_key int[] NOT NULL,
    spec        jsonb NOT NULL,
    digest      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name, version)
);
CREATE INDEX tools_latest ON tools (tenant, name, version_key DESC);

CREATE TABLE workflows (
    tenant      text NOT NULL REFERENCES tenants (name),
    name        text NOT NULL,
    version     text NOT NULL,
    version_key int[] NOT NULL,
    kind        text NOT NULL,
    spec        jsonb NOT NULL,
    digest      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name, version)
);
CREATE INDEX workflows_latest ON workflows (tenant, name, version_key DESC);

CREATE TABLE runs (
    id               uuid PRIMARY KEY,
    tenant           text NOT NULL REFERENCES tenants (name),
    target_kind      text NOT NULL CHECK (target_kind IN ('workflow', 'tool')),
    target_name      text NOT NULL,
    target_version   text NOT NULL,
    state            text NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    input            jsonb NOT NULL,
    output           jsonb,
    error            text,
    idempotency_key  text,
    request_digest   text NOT NULL,
    last_seq         int NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
) WITH (fillfactor = 80);
-- No index covers a column that changes while a run moves (state, last_seq, output), so those updates
-- stay HOT (heap-only): the hot path writes no index entries after the insert.
CREATE UNIQUE INDEX runs_idempotency ON runs (tenant, idempotency_key);
CREATE INDEX runs_by_tenant ON runs (tenant, id DESC);

CREATE TABLE tasks (
    id            uuid PRIMARY KEY,
    tenant        text NOT NULL,
    run_id        uuid NOT NULL REFERENCES runs (id),
    step          text NOT NULL,
    tool_name     text NOT NULL,
    tool_version  text NOT NULL,
    queue         text NOT NULL,
    attempt       int NOT NULL DEFAULT 1,
    state         text NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'dead')),
    input         jsonb NOT NULL,
    output        jsonb,
    error         text,
    detail        jsonb,
    worker_id     text,
    published     boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    UNIQUE (run_id, step)
) WITH (fillfactor = 80);
-- The outbox: tasks recorded but not yet known to be on the bus.
CREATE INDEX tasks_unpublished ON tasks (created_at) WHERE NOT published;

CREATE TABLE events (
    run_id   uuid NOT NULL REFERENCES runs (id),
    seq      int NOT NULL,
    tenant   text NOT NULL,
    type     text NOT NULL,
    data     jsonb NOT NULL,
    at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE audit (
    id       bigserial PRIMARY KEY,
    tenant   text NOT NULL,
    actor    text NOT NULL,
    action   text NOT NULL,
    target   text NOT NULL,
    outcome  text NOT NULL,
    source   text,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_by_tenant ON audit (tenant, id DESC);
