-- Admission reads a tenant's open tasks (queued or running) under its lock on every decision, on every
-- control plane (registry.limits.admitting): only open tasks are indexed, so the read costs what is open.
CREATE INDEX tasks_open ON tasks (tenant) WHERE state IN ('queued', 'running');
