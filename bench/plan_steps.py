"""What a plan step costs AgentFlow itself, the model's own time aside.

``plan_overhead`` times, with ``time.perf_counter_ns``, what the orchestrator does when a plan step's
planning agent's final turn is recorded: decode the turn's output, decide (check the answer with the
validator of ``af workflow apply`` and the step's offers, record it, start the plan's first steps) and
encode the record. Each of the N plans is a different layered DAG, so none is checked from a cache.

``stack_overhead`` reads the same on finished runs of a running stack: from the planner's last turn
finishing on its worker to the plan's record committed (the result's trip over the bus, the orchestrator's
batch, its decision and its write to PostgreSQL).

    python -m bench.plan_steps --plans 500 --layers 4 --width 5
"""

import argparse
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import msgspec

from bench.planners import layered_dag
from bench.stats import percentile
from bus.states import TaskState
from control_plane.planning import Record, StepState
from control_plane.planning.agent import AgentLoop, compile_instructions
from control_plane.planning.dag import parse_dag
from control_plane.planning.planner import PLAN, Offer, PlanSteps

PLANNER = Offer("planner", "1", True)
TOOL = Offer("echo", "1", False, "Answers its input")
WORKFLOW = {
    "steps": [{"name": "x", "plan": {"agent": "planner", "goal": "$.input.goal", "tools": ["echo"]}}],
}


def _plan_steps() -> PlanSteps:
    loop = AgentLoop(
        name=PLANNER.name,
        version=PLANNER.version,
        instructions=compile_instructions("Plan for {{$.input.goal}}"),
        model="tier1",
        tools={},
        model_queue="default",
        max_turns=4,
    )
    offers: dict[tuple[str, str | None, bool], Offer] = {("planner", None, True): PLANNER, ("echo", None, False): TOOL}
    return PlanSteps(parse_dag(WORKFLOW), {"planner@1": loop}, offers)


def plan_overhead(plans: int, layers: int, width: int) -> dict[str, float]:
    """µs per plan accepted and started, over ``plans`` plans of ``layers`` x ``width`` steps."""
    layer = _plan_steps()
    (begun, *_) = layer.decide({"goal": "g", "n": 0}, {}).start
    record = StepState(TaskState.QUEUED, step="x", input=begun.action.input_record())  # type: ignore[union-attr]
    samples: list[float] = []
    for index in range(plans):
        document = layered_dag(layers, width, tool="echo")
        del document["name"], document["version"]
        document["description"] = f"plan {index}"  # each plan differs
        turn = msgspec.json.encode(
            {"message": {"role": "assistant", "content": msgspec.json.encode(document).decode()}}
        )
        began = time.perf_counter_ns()
        states = {
            "x": record,
            f"x/{PLAN}/turn-1": StepState(TaskState.SUCCEEDED, msgspec.json.decode(turn), step="x/plan/turn"),
        }
        decision = layer.decide({"goal": "g"}, states)
        msgspec.json.encode(decision.start[0].action.output)  # type: ignore[union-attr]
        samples.append((time.perf_counter_ns() - began) / 1000)
        assert isinstance(decision.start[0].action, Record) and len(decision.start) == 1 + width, decision
    return _figures(samples) | {"steps": layers * width}


def stack_overhead(runs: Iterable[Mapping[str, Any]], step: str) -> dict[str, float]:
    """ms from each run's last planning turn of plan step ``step`` finishing to its plan recorded."""
    samples = []
    for run in runs:
        tasks = {task["step"]: task for task in run["tasks"]}
        turns = [task for key, task in tasks.items() if key.startswith(f"{step}/{PLAN}/turn-")]
        last = max(datetime.fromisoformat(task["finished_at"]) for task in turns)
        recorded = datetime.fromisoformat(tasks[f"{step}/{PLAN}"]["finished_at"])
        samples.append((recorded - last).total_seconds() * 1000)
    return _figures(samples)


def _figures(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50": round(percentile(samples, 50), 1),
        "p95": round(percentile(samples, 95), 1),
        "max": round(max(samples), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plans", type=int, default=500, help="plans to accept (default 500)")
    parser.add_argument("--layers", type=int, default=4, help="layers of each plan's DAG (default 4)")
    parser.add_argument("--width", type=int, default=5, help="steps per layer (default 5)")
    args = parser.parse_args()
    figures = plan_overhead(args.plans, args.layers, args.width)
    print(
        f"plan accepted and started: {figures['n']:g} plans of {figures['steps']:g} steps, "
        f"p50 {figures['p50']} µs, p95 {figures['p95']} µs, max {figures['max']} µs"
    )


if __name__ == "__main__":
    main()
