"""Prometheus metrics of the control plane (no unbounded labels: never a run id or a task id).

Counted per batch where the work comes in batches (results applied, runs written); durations observed
with bus.metrics' lock-free families.
"""

from prometheus_client import Counter, Histogram

from bus.metrics import Levels, Tally, Timings

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

RUNS = Tally("agentflow_runs", "Runs that ended, by final state", ["tenant", "kind", "state"])
TASKS = Tally(
    "agentflow_tasks",
    "Task attempts that ended, by state (succeeded, failed, dead, cancelled, or retrying: failed with another "
    "attempt to come)",
    ["tenant", "queue", "tool", "state"],
)
ROUND_TRIP = Timings(
    "agentflow_task_round_trip_seconds",
    "From a task's arrival on its stream to its result being applied",
    ["tenant", "queue"],
)
PLAN_STEP = Timings(
    "agentflow_plan_step_seconds", "One planning step of one run (results in, next tasks out)", ["kind"]
)
HTTP_REQUESTS = Tally(
    "agentflow_http_requests", "HTTP requests answered, by route template", ["method", "route", "status"]
)
HTTP_DURATION = Timings(
    "agentflow_http_request_duration_seconds", "HTTP request handling time, by route template", ["method", "route"]
)

CONSUMER_PENDING = Levels(
    "agentflow_consumer_pending_messages", "Messages not yet delivered to the consumer", ["stream", "consumer"]
)
CONSUMER_ACK_PENDING = Levels(
    "agentflow_consumer_ack_pending_messages", "Messages delivered and not yet acknowledged", ["stream", "consumer"]
)
CONSUMER_REDELIVERED = Levels(
    "agentflow_consumer_redelivered_messages",
    "Messages delivered more than once and not yet acknowledged",
    ["stream", "consumer"],
)
QUEUE_DEPTH = Levels(
    "agentflow_queue_depth_tasks",
    "Tasks on the bus that no worker has taken yet (what a worker autoscaler scales on)",
    ["tenant", "queue"],
)
QUEUE_OLDEST_AGE = Levels(
    "agentflow_queue_oldest_task_age_seconds",
    "How long the oldest task no worker has taken yet has waited since it was published",
    ["tenant", "queue"],
)
LEADER = Levels(
    "agentflow_control_plane_leader", "1 while this control plane holds the lease on the singleton duties", []
)
WORKERS = Levels("agentflow_workers", "Workers with a live heartbeat", ["tenant", "queue"])
WORKER_CAPACITY = Levels(
    "agentflow_workers_capacity_tasks", "Tasks the live workers run at once at most", ["tenant", "queue"]
)
WORKER_IN_FLIGHT = Levels(
    "agentflow_workers_in_flight_tasks", "Tasks the live workers hold, as of their last heartbeat", ["tenant", "queue"]
)

# The model gateway's, by the deployment that answered (``model``; the tier or deployment named when none
# did) and the call's outcome (``ok`` or its problem type).
LLM_CALLS = Tally("agentflow_llm_calls", "Model calls through the gateway, by outcome", ["tenant", "model", "outcome"])
LLM_ATTEMPTS = Tally(
    "agentflow_llm_attempts",
    "Attempts at one deployment within model calls (failover makes several per call), by outcome",
    ["tenant", "model", "outcome"],
)
LLM_DURATION = Timings(
    "agentflow_llm_call_duration_seconds",
    "A model call from its request to its whole answer, failover included",
    ["tenant", "model", "outcome"],
)
LLM_TTFT = Timings(
    "agentflow_llm_time_to_first_token_seconds", "A streamed model call until its first piece", ["tenant", "model"]
)
LLM_TOKENS = Tally(
    "agentflow_llm_tokens", "Tokens of model calls, by direction (input, output)", ["tenant", "model", "direction"]
)
LLM_COST = Tally("agentflow_llm_cost_usd", "What model calls cost, at their deployments' prices", ["tenant", "model"])
LLM_BUDGET_REFUSALS = Tally(
    "agentflow_llm_budget_refusals",
    "Model calls refused over a budget (monthly_tokens, monthly_cost_usd, run_tokens, run_cost_usd)",
    ["tenant", "budget"],
)
