-- Retries: a task's next attempt may wait for a backoff; the outbox relay publishes it only when due.
ALTER TABLE tasks ADD COLUMN not_before timestamptz;
