"""The soaks: runs are submitted without pause while a driver kills (SIGKILL) and restarts, at random
moments, a worker, the control plane, nats-server and PostgreSQL. At the end every accepted run has
succeeded, no result was applied twice, and every task ran at least once (the tool's effect log).

The second soak does the same with two control planes on a 3-node NATS cluster (streams at three
replicas), killing one of the control planes or one NATS node at a time, under a queue limit that must
never be exceeded.

``make test`` runs short versions (AF_SOAK_RUNS, default 150); ``make soak`` runs 1,000 runs each.
"""

import itertools
import json
import math
import os
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentflow import AgentFlowError, Client

from control_plane.engine.dispatch import LIMITS_RELOAD_SECONDS
from tests.conftest import ControlPlane, Stack, clustered_stack
from tests.test_backpressure import most_at_once

SOAK_RUNS = int(os.environ.get("AF_SOAK_RUNS", "150"))
KILL_EVERY_SECONDS = (2.0, 4.0)
PACE_SECONDS = 0.02
"""Between submissions: the soak lasts long enough for a few kills while the runs go on."""

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


def _submit(stack: Stack, key: str, document: dict[str, object], urls: list[str] | None = None) -> str:
    """Submit until accepted: a refused or unanswered request is retried with the same idempotency key, at
    the next of ``urls`` (the stack's control plane when None)."""
    deadline = time.monotonic() + 120
    for attempt in itertools.count():
        targets = urls or [stack.api_url]
        try:
            with Client(api_url=targets[attempt % len(targets)], token=stack.token) as af:
                return str(af.start_run(workflow="soak", input=document, idempotency_key=key)["id"])
        except AgentFlowError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def _recovery_seconds(stack: Stack, started: float, urls: list[str] | None = None) -> float:
    """Time from a restart until a fresh run completes end to end."""
    probe = _submit(stack, f"probe-{time.monotonic_ns()}", {"log": "/dev/null"}, urls)
    with Client(api_url=(urls or [stack.api_url])[0], token=stack.token) as af:
        af.wait_run(probe, timeout=120)
    return time.monotonic() - started


def _p99(samples: list[float]) -> float:
    """Nearest-rank 99th percentile (the maximum for fewer than 100 samples)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


@dataclass
class Soak:
    """A stack under the soak, with the control planes it runs beside the stack's own."""

    stack: Stack
    others: list[ControlPlane] = field(default_factory=list)
    pace: float = PACE_SECONDS
    """Seconds between submissions."""

    @property
    def kinds(self) -> list[str]:
        """What may be killed: each control plane on its own, so that the leader's death is seen too."""
        planes = [f"control-plane-{index}" for index in range(1 + len(self.others))]
        return ["worker", *planes, "nats", "postgres"]

    @property
    def urls(self) -> list[str]:
        return [self.stack.api_url, *(other.url for other in self.others)]

    def kill_worker(self) -> None:
        worker = next(p for p in self.stack.workers.values() if p.poll() is None)
        os.kill(worker.pid, 9)
        worker.wait()
        self.stack.start_worker(concurrency=4, AF_SANDBOX="process")

    def kill_control_plane(self, index: int) -> None:
        """The stack's own (0), or one of the others (started again on its port)."""
        if index == 0:
            self.stack.kill_control_plane()
            self.stack.start_control_plane()
            return
        other = self.others[index - 1]
        os.kill(other.process.pid, 9)
        other.process.wait()
        self.others[index - 1] = self.stack.start_another_control_plane(int(other.url.rsplit(":", 1)[1]))

    def kill_nats(self, rng: random.Random) -> None:
        """nats-server, or one node of the cluster."""
        if self.stack.nats_cluster:
            node = rng.randrange(len(self.stack.nats_cluster))
            self.stack.kill_nats_node(node)
            time.sleep(0.3)
            self.stack.restart_nats_node(node)
        else:
            self.stack.kill_nats()
            time.sleep(0.3)
            self.stack.restart_nats()

    def kill_one(self, kind: str, rng: random.Random) -> tuple[str, float]:
        """Kill (SIGKILL) a process of ``kind`` and start it again; the kind, and the seconds until a fresh run
        completed."""
        if kind == "worker":
            self.kill_worker()
        elif kind.startswith("control-plane-"):
            self.kill_control_plane(int(kind.removeprefix("control-plane-")))
        elif kind == "nats":
            self.kill_nats(rng)
        else:
            self.stack.kill_postgres()
            self.stack.restart_postgres()
        return kind, _recovery_seconds(self.stack, time.monotonic(), self.urls)

    def register(self) -> None:
        with self.stack.client() as af:
            af.register_tool(
                {
                    "name": "effect",
                    "version": "1.0.0",
                    "runtime": {"command": ["python3", "main.py"], "files": {"main.py": EFFECT}},
                }
            )
            af.apply_workflow(WORKFLOW)

    def drive(self, effect_log: Path) -> tuple[list[str], list[tuple[str, float]]]:
        """Submit runs without pause, killing a process every few seconds (each kind in turn, in an order
        shuffled each round) until SOAK_RUNS were submitted and every kind was killed at least once; the runs
        accepted and the kills made."""
        rng = random.Random(int(os.environ.get("AF_SOAK_SEED", "7")))
        accepted: list[str] = []
        kills: list[tuple[str, float]] = []
        order: list[str] = []
        next_kill = time.monotonic() + rng.uniform(*KILL_EVERY_SECONDS)
        while len(accepted) < SOAK_RUNS or len(kills) < len(self.kinds):
            index = len(accepted)
            accepted.append(_submit(self.stack, f"soak-{index}", {"log": str(effect_log), "n": index}, self.urls))
            if time.monotonic() >= next_kill:
                order = order or rng.sample(self.kinds, len(self.kinds))
                kills.append(self.kill_one(order.pop(), rng))
                next_kill = time.monotonic() + rng.uniform(*KILL_EVERY_SECONDS)
            time.sleep(self.pace)
        return accepted, kills

    def check(
        self, accepted: list[str], kills: list[tuple[str, float]], effect_log: Path, report: Path
    ) -> list[dict[str, Any]]:
        """Every accepted run succeeded, each result applied once, each task ran; the summary printed and
        written to ``report``. Returns the runs' tasks."""
        with self.stack.client() as af:
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
            "control_planes": len(self.urls),
            "nats_nodes": len(self.stack.nats_cluster) or 1,
            "runs_accepted": len(accepted),
            "runs_lost": len(not_succeeded),
            "results_applied_twice": sum(1 for t in tasks if applied[t["id"]] > 1),
            "tasks_executed_more_than_once": sum(1 for t in tasks if executed[t["id"]] > 1),
            "kills": {kind: len(v) for kind, v in by_kind.items()},
            "recovery_seconds_p99": {kind: round(_p99(v), 2) for kind, v in by_kind.items()},
            "recovery_seconds_max": {kind: round(max(v), 2) for kind, v in by_kind.items()},
            "recovery_seconds_median": {kind: round(statistics.median(v), 2) for kind, v in by_kind.items()},
        }
        print(f"\nsoak ({report.stem}):", json.dumps(summary))
        report.write_text(json.dumps(summary, indent=2))
        return tasks


def _report(tmp_path: Path, name: str) -> Path:
    """Where a soak's summary goes: AF_SOAK_REPORT_DIR (``make soak``), or the test's temp dir."""
    folder = os.environ.get("AF_SOAK_REPORT_DIR")
    return Path(folder) / f"{name}.json" if folder else tmp_path / f"{name}.json"


def test_a_soak_with_random_kills_loses_no_run_and_applies_no_result_twice(own_stack: Stack, tmp_path: Path) -> None:
    effect_log = tmp_path / "effects.log"
    soak = Soak(own_stack)
    soak.register()
    accepted, kills = soak.drive(effect_log)
    soak.check(accepted, kills, effect_log, _report(tmp_path, "soak"))


SOAK_LIMIT = 6
"""The soak queue's in-flight limit, held across both control planes."""
LIMITED_PACE_SECONDS = 0.05
"""Between the limited soak's submissions: runs arrive slower than the limit lets them through (6 tools of
~80 ms at once), so that a kill's recovery, not a backlog of held tasks, is what its probe run measures."""


def test_a_soak_with_two_control_planes_on_a_nats_cluster_loses_no_run_and_keeps_the_limit(
    tmp_root: Path, tmp_path: Path
) -> None:
    effect_log = tmp_path / "effects.log"
    with clustered_stack(tmp_root, 3, durable=True) as stack:
        stack.start_worker(concurrency=4, AF_SANDBOX="process")
        stack.start_worker(concurrency=4, AF_SANDBOX="process")
        soak = Soak(stack, [stack.start_another_control_plane()], pace=LIMITED_PACE_SECONDS)
        soak.register()
        with stack.client() as af:
            af.configure_queue("default", max_in_flight=SOAK_LIMIT)
        time.sleep(LIMITS_RELOAD_SECONDS + 0.5)  # the other control plane reads the limit
        accepted, kills = soak.drive(effect_log)
        tasks = soak.check(accepted, kills, effect_log, _report(tmp_path, "soak-two-control-planes"))
    assert most_at_once(tasks) <= SOAK_LIMIT
