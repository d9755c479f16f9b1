"""Tools, workflows and agents as the control plane uses them: validated at registration, resolved by
``name[@version]``, and cached (a stored version never changes, so only ``latest`` can go stale)."""

import dataclasses
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jsonschema
import msgspec

from bus.messages import ToolLimits, ToolRuntime
from bus.states import MODEL_TOOL
from control_plane.catalog import agents
from control_plane.catalog.documents import RetrySpec, ToolSpec, check_name_field, check_tool, check_version, convert
from control_plane.errors import Conflict, Invalid
from control_plane.planning import Plan, ToolCall, ToolRef, WorkflowInvalid
from control_plane.planning.agent import AgentLoop, AgentTool, Instructions, compile_instructions
from control_plane.planning.agent_steps import AgentSteps
from control_plane.planning.kinds import KINDS, parse_workflow
from control_plane.planning.planner import Offer, PlanSteps
from control_plane.planning.problems import child_field
from registry import catalog as store
from registry.db import Pool

LATEST_TTL_SECONDS = 2.0
BUILTIN_NOOP = "noop"
BUILTIN_VERSION = "1"
# Step instances the control plane runs itself: they never reach a worker.
BUILTIN_SLEEP = "@sleep"
BUILTIN_SIGNAL = "@signal"
BUILTIN_AGENT = "@agent"
"""An agent step's own instance in a workflow (``planning.agent_steps``)."""
BUILTIN_PLAN = "@plan"
"""A plan step's own instance (``planning.planner``)."""
BUILTIN_RECORD = "@record"
"""What the control plane records already succeeded: a plan step's accepted plan."""
PINS = "pins"
"""The key of a stored workflow holding the version pinned for each tool named without one (and for each
agent, under ``agent:<name>``)."""
AGENT_PIN = "agent:"


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool version ready to dispatch."""

    name: str
    version: str
    queue: str
    runtime: ToolRuntime
    limits: ToolLimits
    network: str
    input_validator: jsonschema.protocols.Validator | None
    output_validator: jsonschema.protocols.Validator | None
    retry: RetrySpec
    schedule_to_start: float | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def start_by(self, queued_at: float) -> float | None:
        """When an attempt queued (or due) at ``queued_at`` must have been started by a worker."""
        return None if self.schedule_to_start is None else queued_at + self.schedule_to_start


@dataclass(frozen=True, slots=True)
class Workflow:
    name: str
    version: str
    kind: str
    plan: Plan
    tools: dict[tuple[str, str | None], Tool]
    """The pinned tool of each (name, version as written) the workflow names."""
    input_validator: jsonschema.protocols.Validator | None
    retries: dict[str, RetrySpec]
    """Elements whose retry policy overrides their tool's, by element name."""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def tool(self, call: ToolCall) -> Tool:
        return self.tools[(call.tool, call.tool_version)]


@dataclass(frozen=True, slots=True)
class Agent:
    """An agent version ready to run: its document, its instructions compiled, its tools pinned."""

    spec: agents.AgentSpec
    instructions: Instructions
    tools: dict[str, Tool]
    """By name, as the model calls them."""
    output_validator: jsonschema.protocols.Validator | None
    described: tuple[tuple[Tool, dict[str, Any]], ...]
    """Each tool with its stored document: its description and input schema are what the model is shown."""
    agent_pins: dict[str, str]
    """The version pinned for each agent of ``agents`` and ``handoffs`` named without one."""

    @property
    def ref(self) -> str:
        return f"{self.spec.name}@{self.spec.version}"


def _checker(validator: jsonschema.protocols.Validator | None, field: str) -> Callable[[Any], str | None] | None:
    """The agent loop's view of a schema: a function naming the first problem of a document."""
    if validator is None:
        return None
    return lambda document: schema_problem(validator, document, field)


ModelCheck = Callable[[str], Awaitable[bool]]
"""Whether the tenant applying an agent can reach this model (a tier, or a deployment it sees)."""


def _builtin(name: str) -> Tool:
    return Tool(
        name=name,
        version=BUILTIN_VERSION,
        queue="default",
        runtime=ToolRuntime(builtin=name),
        limits=ToolLimits(),
        network="none",
        input_validator=None,
        output_validator=None,
        retry=RetrySpec(),
    )


BUILTINS = {
    name: _builtin(name)
    for name in (BUILTIN_NOOP, BUILTIN_SLEEP, BUILTIN_SIGNAL, BUILTIN_AGENT, BUILTIN_PLAN, BUILTIN_RECORD)
}
MODEL_TURN_SECONDS = 300.0
"""The wall limit of one model turn on a worker: longer than the gateway's deadline for one call."""
# A model turn: a worker asks the gateway. A lost answer (a control plane or a connection gone mid-call) is
# tried again; the gateway replays a call it already answered, so no finished call is made twice.
BUILTINS[MODEL_TOOL] = dataclasses.replace(
    BUILTINS[BUILTIN_NOOP],
    name=MODEL_TOOL,
    runtime=ToolRuntime(builtin=MODEL_TOOL),
    limits=ToolLimits(wall_seconds=MODEL_TURN_SECONDS),
    retry=RetrySpec(max_attempts=4, backoff_seconds=1.0, retry_on=("retryable", "crash", "timeout")),
)


def digest(document: Any) -> str:
    return hashlib.sha256(msgspec.json.encode(document, order="sorted")).hexdigest()


def schema_validator(schema: dict[str, Any] | None, field: str) -> jsonschema.protocols.Validator | None:
    if schema is None:
        return None
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as error:
        raise Invalid("validation-error", f"not a valid JSON Schema: {error.message}", field) from None
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def schema_problem(validator: jsonschema.protocols.Validator, document: Any, field: str) -> str | None:
    """The first way ``document`` breaks the schema, as one sentence naming where, or None."""
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is None:
        return None
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"{field}{where}: {error.message}"


def _tool_refs(plan: Plan) -> list[ToolRef]:
    """Every tool the workflow names: its elements' tools, their compensations and what plan steps offer."""
    refs = []
    for info in plan.steps.values():
        if info.tool is not None:
            refs.append(info.tool)
        if info.compensate is not None:
            refs.append(info.compensate.tool)
        refs.extend(info.uses)
    return refs


def _header_problems(document: dict[str, Any]) -> list[Invalid]:
    """What is wrong with a workflow's name, version, kind, input schema and reserved keys."""
    found: list[Invalid] = []
    name, version, kind = (document.get(key) for key in ("name", "version", "kind"))
    if not isinstance(name, str):
        found.append(Invalid("validation-error", "a workflow needs a name", "name"))
    if not isinstance(version, str):
        found.append(Invalid("bad-version", 'a workflow needs a version string such as "1.0.0"', "version"))
    try:
        if isinstance(name, str):
            check_name_field("workflow name", name, "name")
    except Invalid as problem:
        found.append(problem)
    try:
        if isinstance(version, str):
            check_version(version)
    except Invalid as problem:
        found.append(problem)
    try:
        schema_validator(document.get("input_schema"), "input_schema")
    except Invalid as problem:
        found.append(problem)
    if kind not in KINDS:
        found.append(Invalid("validation-error", f"unsupported kind {kind!r}: use one of {', '.join(KINDS)}", "kind"))
    if PINS in document:
        found.append(Invalid("validation-error", f"{PINS!r} is set by AgentFlow when a workflow is applied", PINS))
    return found


def _named_tools(document: Any, field: str = "") -> list[ToolRef]:
    """The tools a document names at its ``tool`` keys, for a document too broken to plan: so that an unknown
    tool is reported beside the other problems. Inputs and outputs are templates and name no tools."""
    refs: list[ToolRef] = []
    if isinstance(document, list):
        for index, value in enumerate(document):
            refs.extend(_named_tools(value, f"{field}[{index}]"))
    elif isinstance(document, dict):
        for key, value in document.items():
            where = child_field(field, str(key)) if field else str(key)
            if key == "tool" and isinstance(value, str) and value:
                name, _, version = value.partition("@")
                refs.append(ToolRef(where, name, version or None))
            elif key not in ("input", "output"):
                refs.extend(_named_tools(value, where))
    return refs


def _all_of(found: list[Invalid]) -> Invalid:
    """One refusal listing every problem: its kind is theirs when they share one, else invalid-workflow; its
    field and detail lead with the first."""
    kinds = {problem.kind for problem in found}
    return Invalid(
        kinds.pop() if len(kinds) == 1 else "invalid-workflow",
        found[0].detail if len(found) == 1 else "; ".join(f"{p.field}: {p.detail}" for p in found),
        found[0].field,
        problems=[{"field": p.field or "", "detail": p.detail, "type": p.kind} for p in found],
    )


def _step_retries(plan: Plan) -> dict[str, RetrySpec]:
    """The retry policies elements set for themselves; a malformed one is a problem naming its element."""
    return {
        info.name: convert(dict(info.retry), RetrySpec, f"{info.field}.retry")
        for info in plan.steps.values()
        if info.retry is not None
    }


def _tool_from_spec(spec: ToolSpec) -> Tool:
    return Tool(
        name=spec.name,
        version=spec.version,
        queue=spec.queue,
        runtime=ToolRuntime(
            command=tuple(spec.runtime.command),
            files=dict(spec.runtime.files),
            rootfs=spec.runtime.rootfs,
            image=spec.runtime.image,
            warm=spec.runtime.warm,
            prestart=spec.runtime.prestart,
            reuse=spec.runtime.reuse,
        ),
        limits=msgspec.convert(msgspec.to_builtins(spec.limits), ToolLimits),
        network=spec.network,
        input_validator=schema_validator(spec.input_schema, "input_schema"),
        output_validator=schema_validator(spec.output_schema, "output_schema"),
        retry=spec.retry,
        schedule_to_start=spec.limits.schedule_to_start_seconds,
    )


class Catalog:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._tools: dict[tuple[str, str, str], Tool] = {}
        self._workflows: dict[tuple[str, str, str], Workflow] = {}
        self._agents: dict[tuple[str, str, str], Agent] = {}
        self._latest: dict[tuple[store.Kind, str, str], tuple[str, float]] = {}

    # --- registration ------------------------------------------------------------------------------

    async def register_tool(self, tenant: str, spec: ToolSpec) -> tuple[store.Entry, bool]:
        check_tool(spec)
        _tool_from_spec(spec)  # validates the schemas before anything is stored
        document = msgspec.to_builtins(spec)
        return await self._put(store.Kind.TOOL, tenant, spec.name, spec.version, document, digest(document), None)

    async def register_workflow(self, tenant: str, document: dict[str, Any]) -> tuple[store.Entry, bool]:
        """Check every part of the document and answer every problem found, each at its field, at once."""
        found = _header_problems(document)
        plan = None
        try:
            plan = parse_workflow(document)
            _step_retries(plan)  # validates them
        except WorkflowInvalid as invalid:
            found.extend(Invalid("invalid-workflow", p.detail, p.field) for p in invalid.problems)
        except Invalid as problem:
            found.append(problem)
        refs = _tool_refs(plan) if plan is not None else _named_tools(document)
        pins: dict[str, str] = {}
        for ref in refs:
            try:
                if ref.agent:
                    entry = await self._entry(store.Kind.AGENT, tenant, ref.name, ref.version, ref.field)
                    version = entry.version
                else:
                    version = (await self.tool(tenant, ref.name, ref.version, field=ref.field)).version
            except Invalid as unknown:
                found.append(unknown)
            else:
                if ref.version is None:
                    pins.setdefault(AGENT_PIN + ref.name if ref.agent else ref.name, version)
        if found:
            raise _all_of(found)
        pinned = {**document, PINS: pins} if pins else document
        name, version, kind = document["name"], document["version"], document["kind"]
        return await self._put(store.Kind.WORKFLOW, tenant, name, version, pinned, digest(document), kind)

    async def register_agent(self, tenant: str, document: Any, model_exists: ModelCheck) -> tuple[store.Entry, bool]:
        """Check the agent and what it names (model, tools, agents): every problem at its field, at once."""
        spec, found = agents.decode(document)
        if spec is None:
            raise _all_of(found)
        found = agents.problems(spec)
        try:
            schema_validator(spec.output_schema, "output_schema")
        except Invalid as problem:
            found.append(problem)
        if not await model_exists(spec.model):
            found.append(Invalid("model-not-found", f"no model or tier {spec.model} is deployed for you", "model"))
        pins: dict[str, dict[str, str]] = {"tools": {}, "agents": {}}
        for index, ref in enumerate(spec.tools):
            name, version = ref.partition("@")[0], ref.partition("@")[2] or None
            try:
                tool = await self.tool(tenant, name, version, field=f"tools[{index}]")
            except Invalid as unknown:
                found.append(unknown)
            else:
                pins["tools"][name] = tool.version
        for key in ("agents", "handoffs"):
            for index, ref in enumerate(getattr(spec, key)):
                name, version = ref.partition("@")[0], ref.partition("@")[2] or None
                try:
                    entry = await self._entry(store.Kind.AGENT, tenant, name, version, f"{key}[{index}]")
                except Invalid as unknown:
                    found.append(unknown)
                else:
                    pins["agents"][name] = entry.version
        if found:
            raise _all_of(found)
        stored = msgspec.to_builtins(spec)
        pinned = {**stored, PINS: pins}
        return await self._put(store.Kind.AGENT, tenant, spec.name, spec.version, pinned, digest(stored), None)

    async def agent_workflow(self, tenant: str, name: str, version: str | None, *, field: str = "agent") -> Workflow:
        """An agent as the engine runs it on its own: a workflow whose plan is the agent loop."""
        plan, pinned = await self.agent_loop(tenant, name, version, field=field)
        pinned[(MODEL_TOOL, None)] = BUILTINS[MODEL_TOOL]
        return Workflow(plan.name, plan.version, "agent", plan, pinned, None, {})

    async def agent_loop(
        self, tenant: str, name: str, version: str | None, *, field: str = "agent"
    ) -> tuple[AgentLoop, dict[tuple[str, str | None], Tool]]:
        """An agent's loop, with its sub-agents' and handoffs' loops (pinned when each was applied, so they
        never form a cycle), and every tool any of them calls, by (name, pinned version)."""
        agent = await self.agent(tenant, name, version, field=field)
        spec = agent.spec
        tools = {
            tool.name: AgentTool(
                name=tool.name,
                version=tool.version,
                queue=tool.queue,
                description=described.get("description", ""),
                parameters=described.get("input_schema") or {"type": "object"},
                check=_checker(tool.input_validator, "arguments"),
            )
            for tool, described in agent.described
        }
        pinned: dict[tuple[str, str | None], Tool] = {(tool.name, tool.version): tool for tool in agent.tools.values()}
        nested: dict[str, dict[str, AgentLoop]] = {"agents": {}, "handoffs": {}}
        for key, loops in nested.items():
            for ref in getattr(spec, key):
                other, _, other_version = ref.partition("@")
                loop, used = await self.agent_loop(tenant, other, other_version or agent.agent_pins.get(other))
                loops[other] = loop
                pinned.update(used)
        plan = AgentLoop(
            name=spec.name,
            version=spec.version,
            instructions=agent.instructions,
            model=spec.model,
            tools=tools,
            model_queue=BUILTINS[MODEL_TOOL].queue,
            max_turns=spec.limits.max_turns,
            answer_last_turn=spec.limits.last_turn == "answer",
            max_tokens=spec.limits.max_tokens,
            temperature=spec.temperature,
            max_output_tokens=spec.max_output_tokens,
            check_output=_checker(agent.output_validator, "output"),
            description=spec.description,
            agents=nested["agents"],
            handoffs=nested["handoffs"],
            approval=frozenset(spec.approval),
        )
        return plan, pinned

    async def agent(self, tenant: str, name: str, version: str | None, *, field: str = "agent") -> Agent:
        version = version or self._cached_latest(store.Kind.AGENT, tenant, name)
        if version is not None and (found := self._agents.get((tenant, name, version))) is not None:
            return found
        entry = await self._entry(store.Kind.AGENT, tenant, name, version, field)
        document = msgspec.json.decode(entry.spec)
        pins = document.pop(PINS, {})
        spec = msgspec.convert(document, type=agents.AgentSpec)
        tools = {}
        described = []
        for ref in spec.tools:
            tool_name, _, tool_version = ref.partition("@")
            pinned = tool_version or pins.get("tools", {}).get(tool_name)
            tools[tool_name] = tool = await self.tool(tenant, tool_name, pinned)
            if tool_name in BUILTINS:  # noop: no stored document, nothing to describe
                described.append((tool, {"description": f"the built-in {tool_name} tool"}))
                continue
            stored = await self._entry(store.Kind.TOOL, tenant, tool.name, tool.version, "tools")
            described.append((tool, msgspec.json.decode(stored.spec)))
        agent = Agent(
            spec=spec,
            instructions=compile_instructions(spec.instructions),
            tools=tools,
            output_validator=schema_validator(spec.output_schema, "output_schema"),
            described=tuple(described),
            agent_pins=pins.get("agents", {}),
        )
        self._agents[(tenant, entry.name, entry.version)] = agent
        return agent

    async def _put(
        self,
        kind: store.Kind,
        tenant: str,
        name: str,
        version: str,
        document: dict[str, Any],
        doc_digest: str,
        wf_kind: str | None,
    ) -> tuple[store.Entry, bool]:
        entry, created = await store.put(
            self._pool,
            kind,
            tenant,
            name,
            version,
            msgspec.json.encode(document).decode(),
            doc_digest,
            wf_kind,
        )
        if not created and entry.digest != doc_digest:
            raise Conflict(
                "duplicate-version",
                f"{name}@{version} already exists with other content; versions are immutable, use a new version",
                "version",
            )
        self._latest.pop((kind, tenant, name), None)
        return entry, created

    @staticmethod
    def _parse(document: dict[str, Any]) -> Plan:
        try:
            return parse_workflow(document)
        except WorkflowInvalid as invalid:
            raise _all_of([Invalid("invalid-workflow", p.detail, p.field) for p in invalid.problems]) from None

    async def _offer(self, tenant: str, ref: ToolRef, pins: dict[str, str]) -> Offer:
        """A tool or agent a plan step offers, pinned, with what its planner is told of it."""
        if ref.agent:
            agent = await self.agent(tenant, ref.name, ref.version or pins.get(AGENT_PIN + ref.name))
            return Offer(agent.spec.name, agent.spec.version, True, agent.spec.description)
        tool = await self.tool(tenant, ref.name, ref.version or pins.get(ref.name))
        if tool.name in BUILTINS:
            return Offer(tool.name, tool.version, False)
        stored = msgspec.json.decode(
            (await self._entry(store.Kind.TOOL, tenant, tool.name, tool.version, ref.field)).spec
        )
        return Offer(tool.name, tool.version, False, stored.get("description", ""), stored.get("input_schema"))

    # --- resolution --------------------------------------------------------------------------------

    def _cached_latest(self, kind: store.Kind, tenant: str, name: str) -> str | None:
        cached = self._latest.get((kind, tenant, name))
        return cached[0] if cached is not None and cached[1] > time.monotonic() else None

    async def _entry(self, kind: store.Kind, tenant: str, name: str, version: str | None, field: str) -> store.Entry:
        """A stored version (the latest when ``version`` is None), or the unknown-tool/workflow problem."""
        entry = await store.get(self._pool, kind, tenant, name, version)
        if entry is None:
            noun = kind.value[:-1]
            wanted = f"{name}@{version}" if version else name
            raise Invalid(f"unknown-{noun}", f"no {noun} {wanted} is registered", field)
        if version is None:
            self._latest[(kind, tenant, name)] = (entry.version, time.monotonic() + LATEST_TTL_SECONDS)
        return entry

    async def tool(self, tenant: str, name: str, version: str | None, *, field: str = "tool") -> Tool:
        if name in BUILTINS and version in (None, BUILTIN_VERSION):
            return BUILTINS[name]
        version = version or self._cached_latest(store.Kind.TOOL, tenant, name)
        if version is not None and (found := self._tools.get((tenant, name, version))) is not None:
            return found
        entry = await self._entry(store.Kind.TOOL, tenant, name, version, field)
        tool = _tool_from_spec(msgspec.json.decode(entry.spec, type=ToolSpec))
        self._tools[(tenant, entry.name, entry.version)] = tool
        return tool

    async def workflow(self, tenant: str, name: str, version: str | None, *, field: str = "workflow") -> Workflow:
        version = version or self._cached_latest(store.Kind.WORKFLOW, tenant, name)
        if version is not None and (found := self._workflows.get((tenant, name, version))) is not None:
            return found
        entry = await self._entry(store.Kind.WORKFLOW, tenant, name, version, field)
        cached = self._workflows.get((tenant, entry.name, entry.version))
        if cached is not None:
            return cached
        document = msgspec.json.decode(entry.spec)
        pins = document.pop(PINS, {})
        plan: Plan = self._parse(document)
        tools: dict[tuple[str, str | None], Tool] = {}
        loops: dict[str, AgentLoop] = {}
        agent_pins: dict[tuple[str, str | None], str] = {}
        for ref in _tool_refs(plan):
            if not ref.agent:
                tool = await self.tool(tenant, ref.name, ref.version or pins.get(ref.name))
                # Plans call the pinned version: by it too.
                tools[(ref.name, ref.version)] = tools[(tool.name, tool.version)] = tool
                continue
            run = await self.agent_workflow(tenant, ref.name, ref.version or pins.get(AGENT_PIN + ref.name))
            assert isinstance(run.plan, AgentLoop)
            agent_pins[(ref.name, ref.version)] = agent_pins[(ref.name, run.version)] = run.ref
            loops[run.ref] = run.plan
            tools.update(run.tools)
        offers = {
            (ref.name, ref.version, ref.agent): await self._offer(tenant, ref, pins)
            for info in plan.steps.values()
            if info.uses and info.tool is not None
            for ref in (info.tool, *info.uses)
        }
        if offers:
            plan = PlanSteps(plan, loops, offers)
        if loops:
            plan = AgentSteps(plan, loops, agent_pins)
        workflow = Workflow(
            entry.name,
            entry.version,
            entry.kind or "dag",
            plan,
            tools,
            schema_validator(document.get("input_schema"), "input_schema"),
            _step_retries(plan),
        )
        self._workflows[(tenant, entry.name, entry.version)] = workflow
        return workflow
