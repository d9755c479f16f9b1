-- What running an attempt cost, as its worker measured it: the sandbox that ran it (runsc-cold, runsc-warm,
-- docker, process, builtin), the tool's CPU time and peak memory, and where the time went: waiting in the
-- queue (publication to start), starting (files, bundle, sandbox creation) and running the tool.
ALTER TABLE tasks
    ADD COLUMN sandbox text,
    ADD COLUMN cpu_seconds float8,
    ADD COLUMN max_rss_kb bigint,
    ADD COLUMN queue_seconds float8,
    ADD COLUMN start_seconds float8,
    ADD COLUMN run_seconds float8;
