-- Which message of the tasks stream carries a running attempt (its worker says so when it starts it), so that
-- when the worker dies the control plane can withdraw that message; and the running attempts of one worker,
-- found by its id when its heartbeat expires.
ALTER TABLE tasks ADD COLUMN message_seq bigint;
CREATE INDEX tasks_running_by_worker ON tasks (tenant, worker_id) WHERE state = 'running';
