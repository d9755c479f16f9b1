-- Back-pressure: tasks over a tenant's or a queue's in-flight limit wait here (held) instead of on the bus.
ALTER TABLE tasks ADD COLUMN held boolean NOT NULL DEFAULT false;
-- Only held tasks are indexed, in the order they are released (per queue, oldest first).
CREATE INDEX tasks_held ON tasks (tenant, queue, created_at, id) WHERE held;

-- In-flight limits and priorities: one row per (tenant, queue); queue '' holds the tenant-wide limit.
CREATE TABLE queue_limits (
    tenant         text NOT NULL,
    queue          text NOT NULL,
    max_in_flight  int CHECK (max_in_flight > 0),
    priority       smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, queue)
);

-- Who may read and set them: everyone reads; tenant admins and operators set.
INSERT INTO casbin_rules (ptype, v0, v1, v2, v3) VALUES
    ('p', 'tenant-admin', '*', 'queues', 'read'),
    ('p', 'tenant-admin', '*', 'queues', 'write'),
    ('p', 'operator', '*', 'queues', 'read'),
    ('p', 'operator', '*', 'queues', 'write'),
    ('p', 'developer', '*', 'queues', 'read'),
    ('p', 'viewer', '*', 'queues', 'read');
