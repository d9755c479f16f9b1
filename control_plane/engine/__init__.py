"""The durable run engine: submissions written in batches, the orchestrator that folds results into run
state and plans what comes next, step instances as tasks, dispatch through the outbox, admission
(in-flight limits), run events, the working copies of runs the orchestrator plans from, and the cache of
recently planned runs."""
