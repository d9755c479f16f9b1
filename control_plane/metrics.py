"""Prometheus metrics of the control plane (no unbounded labels: never a run id)."""

from prometheus_client import Counter, Histogram

RUNS_SUBMITTED = Counter("agentflow_runs_submitted_total", "Runs accepted", ["tenant", "kind"])
RESULTS_APPLIED = Counter("agentflow_results_applied_total", "Task results applied", ["state"])
RESULTS_DUPLICATE = Counter("agentflow_results_duplicate_total", "Task results ignored as already applied")
APPLY_BATCH = Histogram(
    "agentflow_apply_batch_size", "Results applied per batch", buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500)
)
SUBMIT_BATCH = Histogram(
    "agentflow_submit_batch_size",
    "Runs written per batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
