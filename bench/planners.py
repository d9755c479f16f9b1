"""What planning costs: µs per decision of each planner over a whole run, and a fan-out DAG end to end.

The pure phase needs no server. For each kind it builds a workflow document of ``nodes`` nodes, times its
parse (what applying it costs), then replays a run the way the orchestrator meets it when results arrive
one at a time: decide with no records, record what was started as queued, finish the oldest queued tool
call as succeeded with its input as output (every tool echoes), decide again, until the run has an outcome.
The records are a ``Records`` kept from one decision to the next, as the engine's working copy of a run
keeps them, so each planner decides from what it kept of its last decision.
Timers and signals stay queued (no timer runs out). Every ``plan.decide`` call is timed with
``time.perf_counter_ns``.

The end-to-end phase applies a layered DAG of the built-in ``noop`` tool to a running stack and times each
run from its HTTP submit to its final event, counting its tasks from the ``task.succeeded`` events.
"""

import gc
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec

from bench.agentflow_path import Completions
from bench.http import LeanHTTP
from bench.stats import percentile
from bus.states import RunState, TaskState
from control_plane.planning import Plan, StepState, ToolCall
from control_plane.planning.bt import benchmark_document
from control_plane.planning.fsm import chain_document
from control_plane.planning.kinds import parse_workflow
from control_plane.planning.records import Records

KINDS = ("dag", "fsm", "bt")
RUN_INPUT = {"n": 0}
"""The run input of every replay: each builder's run succeeds with it when every call echoes its input."""
FANOUT_WORKFLOW = "bench-fanout"


# --- documents ------------------------------------------------------------------------------------------


def layered_dag(layers: int, width: int, tool: str = "echo@1.0.0", name: str = "bench-dag") -> dict[str, Any]:
    """A DAG document of ``layers`` layers of ``width`` steps, ``l<layer>-<j>``; each step needs the whole layer
    before it and calls ``tool`` with ``{"n": <the output n of step j of that layer>}`` (the run input first).

    A run with the input ``{"n": 0}`` in which every call echoes its input succeeds, with the outputs of the
    last layer as its output.
    """
    steps: list[dict[str, Any]] = []
    for layer in range(layers):
        before = [f"l{layer - 1}-{j}" for j in range(width)] if layer else []
        for j in range(width):
            step: dict[str, Any] = {"name": f"l{layer}-{j}", "tool": tool}
            if before:
                step["needs"] = before
                step["input"] = {"n": f"$.steps.{before[j]}.output.n"}
            else:
                step["input"] = {"n": "$.input.n"}
            steps.append(step)
    return {"name": name, "version": "1.0.0", "kind": "dag", "steps": steps}


def document(kind: str, nodes: int) -> dict[str, Any]:
    """A workflow of ``kind`` with exactly ``nodes`` nodes: DAG steps (layers of 10), FSM states (the final one
    included), behavior-tree nodes (at least 18)."""
    if kind == "dag":
        width = min(10, nodes)
        if nodes % width:
            raise ValueError(f"a layered DAG of width 10 has a multiple of 10 steps, not {nodes}")
        return layered_dag(nodes // width, width)
    if kind == "fsm":
        return chain_document(nodes - 1)
    if kind == "bt":
        return benchmark_document(nodes)
    raise ValueError(f"unknown kind {kind!r}")


# --- the pure phase -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Replay:
    """One run replayed decision by decision: the time of each decide call (µs), and the tool calls made."""

    decide_us: list[float]
    tasks: int


def replay(plan: Plan, run_input: Any = RUN_INPUT) -> Replay:
    """Replay a whole run of ``plan`` (see the module docstring); raises RuntimeError unless it succeeds."""
    states = Records()
    queued: deque[tuple[str, StepState]] = deque()
    samples: list[float] = []
    tasks = 0
    clock = time.perf_counter_ns
    while True:
        started = clock()
        decision = plan.decide(run_input, states)
        samples.append((clock() - started) / 1000)
        if decision.outcome is not None:
            if decision.outcome.state != RunState.SUCCEEDED:
                raise RuntimeError(f"the {plan.kind} replay failed: {decision.outcome.error}")
            return Replay(samples, tasks)
        for start in decision.start:
            states.set(start.key, StepState(TaskState.QUEUED, step=start.step))
            if isinstance(start.action, ToolCall):
                queued.append((start.key, StepState(TaskState.SUCCEEDED, start.action.input, step=start.step)))
                tasks += 1
        if not queued:
            raise RuntimeError(f"the {plan.kind} replay is stuck after {len(samples)} decisions")
        key, finished = queued.popleft()
        states.set(key, finished)


def timed_parse(doc: Mapping[str, Any], times: int = 3) -> tuple[Plan, float]:
    """The plan of ``doc`` and the median ms of ``times`` parses."""
    samples: list[float] = []
    plan: Plan | None = None
    for _ in range(times):
        started = time.perf_counter_ns()
        plan = parse_workflow(doc)
        samples.append((time.perf_counter_ns() - started) / 1e6)
    assert plan is not None
    return plan, percentile(samples, 50)


def measure(kind: str, nodes: int) -> dict[str, float]:
    """One repetition of the pure phase for ``kind``: the figures of one replayed run."""
    plan, parse_ms = timed_parse(document(kind, nodes))
    gc.collect()
    run = replay(plan)
    return {
        "nodes": nodes,
        "tasks": run.tasks,
        "decisions": len(run.decide_us),
        "p50_us": percentile(run.decide_us, 50),
        "p95_us": percentile(run.decide_us, 95),
        "max_us": max(run.decide_us),
        "mean_us": sum(run.decide_us) / len(run.decide_us),
        "total_ms": sum(run.decide_us) / 1000,
        "parse_ms": parse_ms,
    }


def warm_up(nodes: int = 100) -> None:
    """Replay a small run of each kind once, so that the timed runs find every code path warm."""
    for kind in KINDS:
        replay(parse_workflow(document(kind, nodes)))


# --- the end-to-end phase -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FanoutRun:
    seconds: float
    tasks: int


async def fanout_runs(
    api_url: str, nats_url: str, token: str, *, layers: int, width: int, runs: int, seconds: float = 120.0
) -> list[FanoutRun]:
    """Apply a ``layers`` x ``width`` DAG of ``noop`` and run it ``runs`` times one at a time, after one untimed
    run: the seconds from each HTTP submit to its ``run.succeeded`` event, and its tasks."""
    parts = urlsplit(api_url)
    http = LeanHTTP(parts.hostname or "127.0.0.1", parts.port or 80, token)
    watcher = Completions()
    await http.connect()
    await watcher.start(nats_url)
    try:
        doc = layered_dag(layers, width, tool="noop", name=FANOUT_WORKFLOW)
        status, body = await http.post("/v1/workflows", msgspec.json.encode(doc))
        if status not in (200, 201):
            raise RuntimeError(f"applying the fan-out workflow answered {status}: {body[:300]!r}")
        request = msgspec.json.encode({"workflow": f"{FANOUT_WORKFLOW}@1.0.0", "input": RUN_INPUT})
        measured: list[FanoutRun] = []
        for _ in range(runs + 1):
            started = time.perf_counter()
            status, body = await http.post("/v1/runs", request)
            if status != 201:
                raise RuntimeError(f"submitting the fan-out workflow answered {status}: {body[:300]!r}")
            run_id = msgspec.json.decode(body)["id"]
            finished = await watcher.wait(run_id, seconds)
            if run_id in watcher.failed:
                raise RuntimeError(f"fan-out run {run_id} ended with {watcher.failed[run_id]}")
            measured.append(FanoutRun(finished - started, watcher.tasks.get(run_id, 0)))
        return measured[1:]
    finally:
        await watcher.close()
        await http.close()


def fanout_figures(runs: list[FanoutRun], layers: int, width: int) -> dict[str, float]:
    """One repetition of the end-to-end phase: the median run, and its tasks per second."""
    seconds = [run.seconds for run in runs]
    p50 = percentile(seconds, 50)
    tasks = percentile([float(run.tasks) for run in runs], 50)
    return {
        "steps": layers * width,
        "width": width,
        "p50_ms": p50 * 1000,
        "min_ms": min(seconds) * 1000,
        "max_ms": max(seconds) * 1000,
        "tasks": tasks,
        "tasks_per_s": tasks / p50,
        "runs": len(runs),
    }


# --- the report -----------------------------------------------------------------------------------------


def render(planners: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The planner section of the table: one row per kind measured, then the end-to-end line if measured."""
    lines = [
        f"{'planner':<9}{'nodes':>6}{'tasks':>7}{'decisions':>11}{'p50 µs/decision':>17}{'p95 µs':>9}{'max µs':>9}"
        f"{'run ms':>9}{'parse ms':>10}"
    ]
    for kind in KINDS:
        m = planners.get(kind)
        if m is None:
            continue
        lines.append(
            f"{kind:<9}{m['nodes']:>6.0f}{m['tasks']:>7.0f}{m['decisions']:>11.0f}{m['p50_us']:>17.1f}"
            f"{m['p95_us']:>9.1f}{m['max_us']:>9.1f}{m['total_ms']:>9.1f}{m['parse_ms']:>10.2f}"
        )
    fanout = planners.get("fanout")
    if fanout is not None:
        lines.append(
            f"{fanout['steps']:.0f}-step DAG, fan-out {fanout['width']:.0f} (noop): end-to-end p50"
            f" {fanout['p50_ms']:.1f} ms ({fanout['tasks']:.0f} tasks, {fanout['tasks_per_s']:.0f} tasks/s;"
            f" min {fanout['min_ms']:.1f}, max {fanout['max_ms']:.1f} ms over {fanout['runs']:.0f} runs)"
        )
    return lines
