-- Planners other than the DAG start one workflow element several times (FSM states revisited, loops,
-- retried behavior-tree leaves): `step` holds the instance's key, unique in its run, and `element` the
-- workflow element it is an instance of (NULL: the same as `step`).
ALTER TABLE tasks ADD COLUMN element text;
