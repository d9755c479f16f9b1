"""Smoke test of the bench's planner phase: tiny sizes, no servers, no timed assertion."""

import asyncio
import shutil

from bench import plan_steps, planners
from bench.__main__ import Bench, arguments, render
from control_plane.planning.kinds import parse_workflow

FIELDS = {"nodes", "tasks", "decisions", "p50_us", "p95_us", "max_us", "mean_us", "total_ms", "parse_ms"}


def test_each_builder_makes_a_workflow_of_the_nodes_asked_whose_replay_succeeds() -> None:
    for kind in planners.KINDS:
        doc = planners.document(kind, 20)
        run = planners.replay(parse_workflow(doc))

        assert len(run.decide_us) == run.tasks + 1, kind
    assert len(planners.document("dag", 20)["steps"]) == 20
    assert len(planners.document("fsm", 20)["states"]) == 20


def test_the_planner_phase_reports_every_planner_in_the_json_and_the_table() -> None:
    args = arguments().parse_args(
        ["--only", "planners", "--repeat", "2", "--planner-nodes", "20", "--fanout-runs", "0"]
    )
    bench = Bench(args)
    try:
        for index in range(args.repeat):
            asyncio.run(bench.planner_phases(index))
        summary = bench.report()
    finally:
        shutil.rmtree(bench.home, ignore_errors=True)

    assert set(summary["planners"]) == set(planners.KINDS)
    for kind in planners.KINDS:
        figures = summary["planners"][kind]
        assert set(figures) == FIELDS
        assert figures["nodes"] == 20
        assert figures["decisions"] == figures["tasks"] + 1
        assert 0 < figures["p50_us"] <= figures["p95_us"] <= figures["max_us"]
        assert len(summary["samples"][f"planner:{kind}"]["p50_us"]) == 2
    table = render(summary)
    assert "p50 µs/decision" in table
    assert [line.split()[0] for line in table.splitlines()[-3:]] == list(planners.KINDS)


def test_the_plan_step_bench_accepts_and_starts_every_plan_and_reports_its_percentiles() -> None:
    figures = plan_steps.plan_overhead(plans=5, layers=2, width=3)
    assert figures["n"] == 5 and figures["steps"] == 6
    assert figures["p50"] <= figures["p95"] <= figures["max"]
