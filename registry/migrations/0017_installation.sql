-- What this database is: one row, made with it, whose random id names the AgentFlow installation (the stack)
-- that issues tokens from it. Clients tie a stored login to it, so that a login of another stack is told
-- apart from one that has merely expired.
CREATE TABLE installation (
    id          text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO installation (id) VALUES (replace(gen_random_uuid()::text, '-', ''));
