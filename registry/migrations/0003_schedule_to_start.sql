-- Schedule-to-start: a queued attempt that no worker has started by `start_by` fails as timed out.
ALTER TABLE tasks ADD COLUMN start_by timestamptz;
CREATE INDEX tasks_start_by ON tasks (start_by) WHERE start_by IS NOT NULL;
