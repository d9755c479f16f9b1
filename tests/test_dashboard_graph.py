"""The dashboard's graph layout (pure): layers from the workflow document, states from the run's tasks."""

from typing import Any

from control_plane.dashboard.graph import layout


def _task(element: str, state: str, finished: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"element": element, "state": state, "finished_at": finished, **fields}


def test_a_dag_step_sits_one_layer_right_of_the_latest_step_it_needs() -> None:
    document = {
        "kind": "dag",
        "steps": [{"name": "a"}, {"name": "b", "needs": ["a"]}, {"name": "c"}, {"name": "d", "needs": ["b", "c"]}],
    }
    graph = layout(document, [_task("a", "succeeded"), _task("b", "running")], "running")
    placed = {n.name: (n.layer, n.state) for n in graph.nodes}
    assert placed == {"a": (0, "succeeded"), "b": (1, "running"), "c": (0, "pending"), "d": (2, "pending")}
    assert {(e.source.name, e.target.name) for e in graph.edges} == {("a", "b"), ("b", "d"), ("c", "d")}


WAIT = {
    "kind": "fsm",
    "initial": "ask",
    "states": {
        "ask": {
            "wait": {"signals": ["go"], "timeout_seconds": 1},
            "transitions": [{"signal": "go", "to": "done"}, {"timeout": True, "to": "expired"}],
        },
        "done": {"final": True},
        "expired": {"final": True},
    },
}


def test_the_final_state_a_signal_led_to_takes_the_runs_state() -> None:
    tasks = [_task("ask", "succeeded", "2026-01-01T00:00:01+00:00", output={"signal": "go", "data": None})]
    states = {n.name: n.state for n in layout(WAIT, tasks, "succeeded").nodes}
    assert states == {"ask": "succeeded", "done": "succeeded", "expired": "pending"}


def test_the_final_state_a_timeout_led_to_takes_the_runs_state() -> None:
    tasks = [_task("ask", "failed", "2026-01-01T00:00:01+00:00", error="timed out waiting for a signal")]
    states = {n.name: n.state for n in layout(WAIT, tasks, "succeeded").nodes}
    assert states == {"ask": "failed", "done": "pending", "expired": "succeeded"}


def test_no_final_state_is_marked_while_the_run_runs() -> None:
    tasks = [_task("ask", "succeeded", "2026-01-01T00:00:01+00:00", output={"signal": "go"})]
    assert {n.name: n.state for n in layout(WAIT, tasks, "running").nodes}["done"] == "pending"


def test_a_behavior_tree_is_laid_out_by_depth_with_its_composites() -> None:
    document = {
        "kind": "bt",
        "root": {
            "sequence": [{"selector": [{"name": "p", "tool": "t"}, {"name": "q", "tool": "t"}]}, {"condition": "x"}]
        },
    }
    graph = layout(document, [_task("p", "failed"), _task("q", "succeeded")], "running")
    placed = {n.name: (n.layer, n.kind, n.state) for n in graph.nodes}
    assert placed == {
        "root": (0, "sequence", "pending"),
        "root.sequence[0]": (1, "selector", "pending"),
        "p": (2, "tool", "failed"),
        "q": (2, "tool", "succeeded"),
        "root.sequence[1]": (1, "condition", "pending"),
    }


def test_an_agent_runs_graph_is_its_loop_each_turn_right_of_the_calls_the_turn_before_asked_for() -> None:
    tasks = [
        {"step": "turn-1", "element": "looker", "state": "succeeded"},
        {"step": "turn-1/call-0", "element": "turn-1/call-0", "state": "succeeded"},
        {"step": "turn-1/approve-1", "element": "turn-1/approve-1", "state": "succeeded"},
        {"step": "turn-1/call-1", "element": "turn-1/call-1", "state": "failed"},
        {"step": "turn-2", "element": "turn-2", "state": "succeeded"},
        {"step": "turn-3", "element": "turn-3", "state": "running"},
        {"step": "turn-1/call-0/turn-1", "element": "turn-1/call-0/turn-1", "state": "succeeded"},  # a sub-agent's
    ]
    graph = layout({"kind": "agent"}, tasks, "running")
    placed = {n.name: (n.kind, n.layer, n.state) for n in graph.nodes}
    assert placed == {
        "turn-1": ("turn", 0, "succeeded"),
        "turn-1/call-0": ("call", 1, "succeeded"),
        "turn-1/approve-1": ("approve", 1, "succeeded"),
        "turn-1/call-1": ("call", 1, "failed"),
        "turn-2": ("turn", 2, "succeeded"),
        "turn-3": ("turn", 4, "running"),
    }
    assert {(e.source.name, e.target.name) for e in graph.edges} == {
        ("turn-1", "turn-1/call-0"),
        ("turn-1", "turn-1/approve-1"),
        ("turn-1", "turn-1/call-1"),
        ("turn-1/call-0", "turn-2"),
        ("turn-1/approve-1", "turn-2"),
        ("turn-1/call-1", "turn-2"),
        ("turn-2", "turn-3"),
    }


def test_agent_and_plan_steps_are_drawn_as_such_in_every_planners_graph() -> None:
    dag = {"kind": "dag", "steps": [{"name": "review", "agent": "reviewer@1"}, {"name": "p", "plan": {"goal": "g"}}]}
    fsm = {"kind": "fsm", "initial": "think", "states": {"think": {"agent": "a@1"}, "end": {"final": True}}}
    bt = {"kind": "bt", "root": {"sequence": [{"name": "ask", "agent": "a@1"}, {"name": "fetch", "tool": "t@1"}]}}
    assert {n.name: n.kind for n in layout(dag, [], "running").nodes} == {"review": "agent", "p": "plan"}
    assert {n.name: n.kind for n in layout(fsm, [], "running").nodes} == {"think": "agent", "end": "final"}
    kinds = {n.name: n.kind for n in layout(bt, [], "running").nodes}
    assert kinds["ask"] == "agent" and kinds["fetch"] == "tool"
