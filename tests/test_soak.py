"""The soak: runs are submitted without pause while a driver kills (SIGKILL) and restarts, at random
moments, a worker, the control plane, nats-server and PostgreSQL. At the end every accepted run has
succeeded, no result was applied twice, and every task ran at least once (the tool's effect log).

``make test`` runs a short version (AF_SOAK_RUNS, default 150); ``make soak`` runs 1,000 runs.
"""

import json
import math
import os
import random
import statistics
import time
from collections import Counter
from pathlib import Path

from agentflow import AgentFlowError

from tests.conftest import Stack

SOAK_RUNS = int(os.environ.get("AF_SOAK_RUNS", "150"))
KILL_EVERY_SECONDS = (2.0, 4.0)

# Appends "<task>:<attempt>" to the effect log named in its input, then echoes the input.
EFFECT = """import json, os, random, sys, time
document = json.load(sys.stdin)
with open(document["log"], "a") as log:
    log.write(os.environ["AF_TASK_ID"] + ":" + os.environ["AF_ATTEMPT"] + "\\n")
time.sleep(random.uniform(0.01, 0.15))
print(json.dumps(document))
"""
WORKFLOW = {
    "name": "soak",
    "version": "1.0.0",
    "kind": "dag",
    "steps": [
        {"name": "a", "tool": "effect"},
        {"name": "b", "tool": "effect", "needs": ["a"]},
        {"name": "c", "tool": "effect", "needs": ["a"]},
    ],
}


def _submit(stack: Stack, key: str, document: dict[str, object]) -> str:
    """Submit until accepted: a refused or unanswered request is retried with the same idempotency key."""
    deadline = time.monotonic() + 120
    while True:
        try:
            with stack.client() as af:
                return str(af.start_run(workflow="soak", input=document, idempotency_key=key)["id"])
        except AgentFlowError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _recovery_seconds(stack: Stack, started: float) -> float:
    """Time from a restart until a fresh run completes end to end."""
    probe = _submit(stack, f"probe-{time.monotonic_ns()}", {"log": "/dev/null"})
    with stack.client() as af:
        af.wait_run(probe, timeout=120)
    return time.monotonic() - started


def _p99(samples: list[float]) -> float:
    """Nearest-rank 99th percentile (the maximum for fewer than 100 samples)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def _kill_one(stack: Stack, rng: random.Random) -> tuple[str, float]:
    kind = rng.choice(["worker", "control-plane", "nats-server", "postgres"])
    if kind == "worker":
        worker = next(p for p in stack.processes if p is not stack.control_plane and p.poll() is None)
        os.kill(worker.pid, 9)
        worker.wait()
        stack.start_worker(concurrency=4, AF_SANDBOX="process")
    elif kind == "control-plane":
        stack.kill_control_plane()
        stack.start_control_plane()
    elif kind == "nats-server":
        stack.kill_nats()
        time.sleep(0.3)
        stack.restart_nats()
    else:
        stack.kill_postgres()
        stack.restart_postgres()
    return kind, _recovery_seconds(stack, time.monotonic())


def test_a_soak_with_random_kills_loses_no_run_and_applies_no_result_twice(own_stack: Stack, tmp_path: Path) -> None:
    effect_log = tmp_path / "effects.log"
    with own_stack.client() as af:
        af.register_tool(
            {
                "name": "effect",
                "version": "1.0.0",
                "runtime": {"command": ["python3", "main.py"], "files": {"main.py": EFFECT}},
            }
        )
        af.apply_workflow(WORKFLOW)
    rng = random.Random(int(os.environ.get("AF_SOAK_SEED", "7")))
    accepted: list[str] = []
    kills: list[tuple[str, float]] = []
    next_kill = time.monotonic() + rng.uniform(*KILL_EVERY_SECONDS)
    for index in range(SOAK_RUNS):
        accepted.append(_submit(own_stack, f"soak-{index}", {"log": str(effect_log), "n": index}))
        if time.monotonic() >= next_kill:
            kills.append(_kill_one(own_stack, rng))
            next_kill = time.monotonic() + rng.uniform(*KILL_EVERY_SECONDS)

    with own_stack.client() as af:
        finals = [af.wait_run(run_id, timeout=180) for run_id in accepted]
        applied = Counter(
            e["data"]["task_id"] for run_id in accepted for e in af.events(run_id) if e["type"] == "task.succeeded"
        )
    executed = Counter(line.split(":")[0] for line in effect_log.read_text().splitlines())
    tasks = [task for final in finals for task in final["tasks"]]

    not_succeeded = [f["id"] for f in finals if f["state"] != "succeeded"]
    assert not not_succeeded, f"runs not succeeded: {not_succeeded[:5]}"
    assert len(tasks) == 3 * len(accepted)
    assert all(applied[t["id"]] == 1 for t in tasks), "a result was applied twice"
    assert all(executed[t["id"]] >= 1 for t in tasks), "a task never ran"

    by_kind: dict[str, list[float]] = {}
    for kind, seconds in kills:
        by_kind.setdefault(kind, []).append(seconds)
    summary = {
        "runs_accepted": len(accepted),
        "runs_lost": len(not_succeeded),
        "results_applied_twice": sum(1 for t in tasks if applied[t["id"]] > 1),
        "tasks_executed_more_than_once": sum(1 for t in tasks if executed[t["id"]] > 1),
        "kills": {kind: len(v) for kind, v in by_kind.items()},
        "recovery_seconds_p99": {kind: round(_p99(v), 2) for kind, v in by_kind.items()},
        "recovery_seconds_max": {kind: round(max(v), 2) for kind, v in by_kind.items()},
        "recovery_seconds_median": {kind: round(statistics.median(v), 2) for kind, v in by_kind.items()},
    }
    print("\nsoak:", json.dumps(summary))
    (Path(os.environ.get("AF_SOAK_REPORT", tmp_path / "soak.json"))).write_text(json.dumps(summary, indent=2))
