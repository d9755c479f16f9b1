"""A run's workflow as a graph to draw: nodes in layers (left to right), edges, each node in its state.

The layers come from the workflow document: a DAG step sits one layer right of the latest step it needs, an
FSM state one layer right of the first state that reaches it (breadth first from the initial state), a
behavior-tree node one layer right of its parent. An agent run has no document to draw: its graph is its loop
as recorded, each model turn one layer right of the tool calls (and approvals) the turn before asked for. A
node's state is its latest task's (tasks name the workflow element they run); an FSM's final state takes the
run's final state once the run reached it.
"""

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LAYER_WIDTH = 190
ROW_HEIGHT = 64
NODE_WIDTH = 150
NODE_HEIGHT = 40
MARGIN = 12

_BT_COMPOSITES = ("sequence", "selector", "parallel", "retry", "timeout", "invert", "repeat_until")
_FINAL_RUN_STATES = ("succeeded", "failed", "cancelled")
_STEP_KINDS = ("agent", "plan", "tool")
"""What a DAG step, an FSM state or a behavior-tree leaf runs, by the key that says it."""
_LOOP_KEY = re.compile(r"turn-(\d+)(?:/(call|approve)-(\d+))?")
"""An agent loop's own instances: its turns and what each asked for (a sub-agent's nested loop is its call's)."""


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    """The workflow element (step, state or leaf name), or a behavior-tree composite's field path."""
    label: str
    kind: str
    """tool, agent, plan, wait, sleep, final, condition, turn, call, approve, or a behavior-tree composite's key."""
    layer: int
    row: int
    state: str
    """pending until a task of it exists; then its latest task's state."""
    inspectable: bool
    """Whether tasks can run it (its detail lists them)."""

    @property
    def x(self) -> int:
        return MARGIN + self.layer * LAYER_WIDTH

    @property
    def y(self) -> int:
        return MARGIN + self.row * ROW_HEIGHT


@dataclass(frozen=True, slots=True)
class Edge:
    source: Node
    target: Node

    @property
    def path(self) -> str:
        """An SVG path from the source's right side to the target's left side (backwards edges bend below)."""
        x1, y1 = self.source.x + NODE_WIDTH, self.source.y + NODE_HEIGHT // 2
        x2, y2 = self.target.x, self.target.y + NODE_HEIGHT // 2
        if x2 > x1:
            middle = (x1 + x2) // 2
            return f"M{x1},{y1} C{middle},{y1} {middle},{y2} {x2},{y2}"
        low = max(self.source.y, self.target.y) + NODE_HEIGHT + ROW_HEIGHT // 3
        start = f"{self.source.x + NODE_WIDTH // 2},{self.source.y + NODE_HEIGHT}"
        end = f"{self.target.x + NODE_WIDTH // 2},{self.target.y + NODE_HEIGHT}"
        return f"M{start} C{x1},{low} {x2},{low} {end}"


@dataclass(frozen=True, slots=True)
class Graph:
    kind: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    @property
    def width(self) -> int:
        return 2 * MARGIN + max((n.layer for n in self.nodes), default=0) * LAYER_WIDTH + NODE_WIDTH

    @property
    def height(self) -> int:
        return 2 * MARGIN + max((n.row for n in self.nodes), default=0) * ROW_HEIGHT + NODE_HEIGHT + ROW_HEIGHT // 2


@dataclass(frozen=True, slots=True)
class _Draft:
    name: str
    label: str
    kind: str
    layer: int
    inspectable: bool = True


def latest_tasks(tasks: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Each element's latest task (tasks come oldest first)."""
    return {str(task["element"]): task for task in tasks}


def layout(document: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]], run_state: str) -> Graph:
    """The graph of a run of workflow ``document`` (of kind ``agent`` for an agent's run) with its ``tasks``, in
    state ``run_state``."""
    kind = str(document.get("kind", "dag"))
    latest = latest_tasks(tasks)
    if kind == "agent":
        drafts, links = _loop(tasks)
        by_step = {str(task["step"]): task for task in tasks}  # a loop's instances are its elements
        states = {d.name: _state_of(d, by_step) for d in drafts}
    elif kind == "fsm":
        drafts, links = _fsm(document)
        states = {d.name: _state_of(d, latest) for d in drafts}
        reached = _final_reached(document, latest) if run_state in _FINAL_RUN_STATES else None
        if reached is not None:
            states[reached] = run_state
    else:
        drafts, links = _bt(document) if kind == "bt" else _dag(document)
        states = {d.name: _state_of(d, latest) for d in drafts}
    rows: dict[int, int] = {}
    nodes: dict[str, Node] = {}
    for draft in drafts:
        row = rows[draft.layer] = rows.get(draft.layer, -1) + 1
        nodes[draft.name] = Node(
            draft.name, draft.label, draft.kind, draft.layer, row, states[draft.name], draft.inspectable
        )
    edges = tuple(Edge(nodes[a], nodes[b]) for a, b in links if a in nodes and b in nodes)
    return Graph(kind, tuple(nodes.values()), edges)


def _state_of(draft: _Draft, latest: Mapping[str, Mapping[str, Any]]) -> str:
    task = latest.get(draft.name)
    return str(task["state"]) if task is not None else "pending"


def _dag(document: Mapping[str, Any]) -> tuple[list[_Draft], list[tuple[str, str]]]:
    steps = [s for s in document.get("steps") or [] if isinstance(s, Mapping) and isinstance(s.get("name"), str)]
    needs = {str(s["name"]): [str(n) for n in s.get("needs") or []] for s in steps}
    layers: dict[str, int] = {}

    def layer_of(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name not in layers:
            before = [layer_of(n, seen | {name}) for n in needs.get(name, []) if n in needs and n not in seen]
            layers[name] = 1 + max(before, default=-1)
        return layers[name]

    kinds = {str(s["name"]): _step_kind(s) for s in steps}
    drafts = [_Draft(name, name, kinds[name], layer_of(name)) for name in needs]
    return drafts, [(need, name) for name, before in needs.items() for need in before]


def _step_kind(step: Mapping[str, Any]) -> str:
    return next((key for key in _STEP_KINDS if step.get(key)), "tool")


def _fsm_kind(state: Mapping[str, Any]) -> str:
    for key in ("final", "wait", *_STEP_KINDS):
        if state.get(key):
            return key
    return "sleep" if "sleep_seconds" in state else "tool"


def _loop(tasks: Sequence[Mapping[str, Any]]) -> tuple[list[_Draft], list[tuple[str, str]]]:
    """An agent run's turns (layers 0, 2, 4…) and the calls and approvals each asked for (the layer between)."""
    turns: dict[int, list[str]] = {}
    drafts: dict[str, _Draft] = {}
    for task in tasks:
        step = str(task["step"])
        found = _LOOP_KEY.fullmatch(step)
        if found is None or step in drafts:
            continue
        number = int(found.group(1))
        if found.group(2) is None:
            drafts[step] = _Draft(step, step, "turn", 2 * (number - 1))
            turns.setdefault(number, [])
        else:
            drafts[step] = _Draft(step, step, found.group(2), 2 * number - 1)
            turns.setdefault(number, []).append(step)
    links: list[tuple[str, str]] = []
    for number, asked in turns.items():
        following = f"turn-{number + 1}"
        links += [(f"turn-{number}", step) for step in asked]
        links += [(step, following) for step in asked] if asked else [(f"turn-{number}", following)]
    return sorted(drafts.values(), key=lambda d: (d.layer, d.name)), links


def _fsm(document: Mapping[str, Any]) -> tuple[list[_Draft], list[tuple[str, str]]]:
    states: Mapping[str, Any] = document.get("states") or {}
    targets = {name: [str(t.get("to")) for t in _transitions(state)] for name, state in states.items()}
    for name, state in states.items():
        if isinstance(state, Mapping) and state.get("on_failure"):
            targets[name].append(str(state["on_failure"]))
    layers: dict[str, int] = {}
    frontier = [str(document.get("initial"))] if document.get("initial") in states else []
    depth = 0
    while frontier:
        following: list[str] = []
        for name in frontier:
            if name not in layers:
                layers[name] = depth
                following.extend(targets.get(name, []))
        frontier, depth = following, depth + 1
    for name in states:  # unreachable states (the planner refuses them) still get a place
        layers.setdefault(name, depth)
    drafts = [
        _Draft(name, name, kind, layers[name], inspectable=kind != "final")
        for name, state in states.items()
        for kind in [_fsm_kind(state if isinstance(state, Mapping) else {})]
    ]
    return drafts, [(name, to) for name, tos in targets.items() for to in tos]


def _transitions(state: Any) -> list[Mapping[str, Any]]:
    listed = state.get("transitions") if isinstance(state, Mapping) else None
    return [t for t in listed or [] if isinstance(t, Mapping)]


def _final_reached(document: Mapping[str, Any], latest: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The final state a finished FSM run went to: where the transitions of its last finished state lead (by the
    planner's rules: the signal received, a timeout, the state's on_failure, else its first plain transition)."""
    states: Mapping[str, Any] = document.get("states") or {}
    finished = [t for name, t in latest.items() if name in states and t.get("finished_at")]
    if not finished:
        return None
    last = max(finished, key=lambda t: str(t["finished_at"]))
    state = states[str(last["element"])]
    transitions = _transitions(state)
    output = last.get("output")
    signal = output.get("signal") if isinstance(output, Mapping) else None
    if last.get("state") == "succeeded":
        chosen = [t for t in transitions if t.get("signal") == signal] if signal else []
        chosen = chosen or [t for t in transitions if not t.get("signal") and not t.get("timeout")]
    elif str(last.get("error") or "").startswith("timed out"):
        chosen = [t for t in transitions if t.get("timeout")]
    else:
        chosen = [{"to": state.get("on_failure")}] if state.get("on_failure") else []
    for transition in chosen:
        target = states.get(str(transition.get("to")))
        if isinstance(target, Mapping) and target.get("final"):
            return str(transition["to"])
    return None


def _bt(document: Mapping[str, Any]) -> tuple[list[_Draft], list[tuple[str, str]]]:
    drafts: list[_Draft] = []
    links: list[tuple[str, str]] = []
    for draft, parent in _bt_walk(document.get("root"), "root", 0):
        drafts.append(draft)
        if parent is not None:
            links.append((parent, draft.name))
    return drafts, links


def _bt_children(node: Mapping[str, Any], key: str) -> list[tuple[Any, str]]:
    value = node[key]
    if key in ("sequence", "selector"):
        return [(child, f"{key}[{i}]") for i, child in enumerate(value or [])]
    if key == "parallel":
        return [(child, f"parallel.children[{i}]") for i, child in enumerate((value or {}).get("children") or [])]
    if key == "invert":
        return [(value, "invert")]
    return [((value or {}).get("child"), f"{key}.child")]


def _bt_walk(node: Any, path: str, depth: int, parent: str | None = None) -> Iterator[tuple[_Draft, str | None]]:
    if not isinstance(node, Mapping):
        return
    if "wait_signal" in node or any(key in node for key in _STEP_KINDS):
        kind = "wait" if "wait_signal" in node else _step_kind(node)
        name = str(node.get("name") or (node.get("wait_signal") or {}).get("name") or path)
        yield _Draft(name, name, kind, depth), parent
        return
    if "condition" in node:
        yield _Draft(path, "condition", "condition", depth, inspectable=False), parent
        return
    for key in _BT_COMPOSITES:
        if key in node:
            yield _Draft(path, key, key, depth, inspectable=False), parent
            for child, field in _bt_children(node, key):
                yield from _bt_walk(child, f"{path}.{field}", depth + 1, path)
            return
