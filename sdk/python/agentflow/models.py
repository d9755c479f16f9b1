"""The API's answers as typed objects: frozen msgspec Structs, decoded straight from the JSON the API sends.

Each answer has the API's field names as attributes (`run.state`, `run.tasks[0].sandbox.timing.run_seconds`);
times are aware `datetime`s; the documents the API passes through as they were given (inputs, outputs, specs,
event data) are plain JSON values. A field the API adds later is ignored when decoding (msgspec's default for
Structs), so an older SDK works with a newer server; a field missing, or of another type, is an
`AgentFlowError` naming it.

`document(answer)` turns an answer back into the API's JSON document, as the API spelled it: `af --output
json` prints that. Indexing an answer (`run["id"]`, `run.get("tasks")`) reads the same document, for code
written when the SDK answered with dicts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec

from ._errors import AgentFlowError

T = TypeVar("T")

RUN_STATES = ("pending", "running", "succeeded", "failed", "cancelled")
"""A run's states as the API spells them (the client's own copy: it never imports the server)."""
FINAL_RUN_STATES = frozenset({"succeeded", "failed", "cancelled"})
FINAL_EVENT_TYPES = frozenset(f"run.{state}" for state in FINAL_RUN_STATES)


def document(answer: Any) -> Any:
    """`answer` (an answer, a list of them, or plain JSON values) as the API's JSON document: the fields in
    the API's order, those it leaves out when empty left out, times in the API's spelling (ISO 8601 with
    the offset). A registration is the document of what was registered."""
    if isinstance(answer, Registered):
        answer = answer.value
    return _spelled(msgspec.to_builtins(answer, builtin_types=(datetime,)))


def decode_as(kind: type[T], content: bytes | str, what: str) -> T:
    """`content` (JSON) as a `kind`; an `AgentFlowError` saying which field of `what` does not fit."""
    try:
        decoded: T = msgspec.json.decode(content, type=kind)
    except msgspec.ValidationError as exc:
        raise AgentFlowError(f"{what} does not fit the SDK's {_name(kind)}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise AgentFlowError(f"{what} is not JSON: {exc}") from exc
    return decoded


def _name(kind: Any) -> str:
    return str(getattr(kind, "__name__", kind)).removeprefix("agentflow.models.")


def _spelled(value: Any) -> Any:
    # The server writes times with datetime.isoformat(), where msgspec would write UTC as "Z"; to_builtins
    # leaves the answers' tuples tuples, and JSON has arrays.
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _spelled(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_spelled(item) for item in value]
    return value


class Answer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base of the answers. A field with a default is one the API leaves out when it does not apply, so that
    `document()` leaves it out too."""

    def __getitem__(self, key: str) -> Any:
        """The field `key` as the API's JSON has it (a time as text, a nested answer as a dict)."""
        return document(self)[key]

    def get(self, key: str, default: Any = None) -> Any:
        """The field `key` as the API's JSON has it, or `default` when the answer has none."""
        return document(self).get(key, default)

    def __contains__(self, key: object) -> bool:
        """Whether the API's JSON of this answer has the field `key` (as `key in answer` reads a dict)."""
        return key in document(self)


class Registered(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """What a registration stored (`value`: a tool, workflow, agent, secret or model deployment, as the API
    returned it) and whether this request created it (HTTP 201) or found it there already (HTTP 200: the same
    version with the same content, or a deployment or secret replaced)."""

    value: T
    created: bool

    def __getitem__(self, key: str) -> Any:
        """The field `key` of the stored value, as the API's JSON has it."""
        return document(self)[key]

    def get(self, key: str, default: Any = None) -> Any:
        return document(self).get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in document(self)


class Page(Answer, Generic[T], frozen=True, kw_only=True):
    """One page of a listing, newest first; pass `next_cursor` back (with the same filters) for the next one,
    until it is None."""

    items: tuple[T, ...]
    next_cursor: str | None


class Problem(Answer, frozen=True, kw_only=True, omit_defaults=False):
    """An RFC 9457 problem as the API answers it (`type` is `urn:agentflow:problem:<slug>`); the API always
    writes `field` and `problems`, null when they do not apply."""

    type: str
    title: str
    status: int
    detail: str
    field: str | None = None
    """The request field at fault, when one is."""
    problems: list[dict[str, str]] | None = None
    """Each problem at its field, when the request had several (a document's validation)."""


# ---- the catalog ----------------------------------------------------------------------------------


class Entry(Answer, frozen=True, kw_only=True):
    """One immutable version of a tool, workflow or agent."""

    tenant: str
    name: str
    version: str
    spec: dict[str, Any]
    """The document as stored (a workflow's tools and an agent's pinned to versions)."""
    digest: str
    """The SHA-256 of the stored document, in hex."""
    created_at: datetime


class Tool(Entry, frozen=True, kw_only=True):
    """A tool version: a program that reads JSON on stdin and writes JSON on stdout."""


class Workflow(Entry, frozen=True, kw_only=True):
    """A workflow version."""

    kind: str | None = None
    """`dag`, `fsm` or `bt`."""


class Agent(Entry, frozen=True, kw_only=True):
    """An agent version: a model with instructions and the tools (and agents) it may call."""


# ---- runs -----------------------------------------------------------------------------------------


class Run(Answer, frozen=True, kw_only=True):
    """A run as listings and `cancel_run` show it."""

    id: str
    tenant: str
    workflow: str | None
    """`name@version` of the workflow it runs (None for a run of a single tool or agent)."""
    tool: str | None
    """`name@version` of the single tool it runs."""
    agent: str | None
    """`name@version` of the single agent it runs."""
    state: str
    """One of `RUN_STATES`."""
    input: Any
    output: Any
    """The output document once it has succeeded (None before)."""
    error: str | None
    """Why it failed or was cancelled."""
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def target(self) -> str:
        """`name@version` of what it runs: its workflow, tool or agent."""
        return self.workflow or self.agent or self.tool or ""

    @property
    def finished(self) -> bool:
        return self.state in FINAL_RUN_STATES


class Timing(Answer, frozen=True, kw_only=True):
    """Where an attempt's time went, in seconds (None: not measured)."""

    queue_seconds: float | None
    """From queued to taken by a worker."""
    start_seconds: float | None
    """Starting the sandbox."""
    run_seconds: float | None
    """Running the tool."""


class Sandbox(Answer, frozen=True, kw_only=True):
    """The sandbox of a task's latest finished attempt and what the attempt used."""

    kind: str
    """`runsc`, `docker` or `process`."""
    cpu_seconds: float | None
    max_rss_kb: int | None
    """Peak resident memory, in KiB."""
    timing: Timing


class Task(Answer, frozen=True, kw_only=True):
    """One step instance of a run, tracked by attempt: a tool call, a model turn, a timer or a signal wait."""

    id: str
    step: str
    element: str
    """Tells the step's instances apart (a loop's item, a turn's call)."""
    tool: str
    """`name@version` of the tool it calls (`@signal`, `@model`... for what the control plane runs)."""
    queue: str
    attempt: int
    """From 1."""
    state: str
    """`queued`, `running`, `succeeded`, `failed`, `cancelled` or `dead` (attempts exhausted)."""
    input: Any
    output: Any
    error: str | None
    detail: Any
    """What the worker reported beside the output (the tail of stderr, model usage)."""
    worker_id: str | None
    """The worker of its latest attempt."""
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    sandbox: Sandbox | None
    """None until an attempt finished in a sandbox."""


class TokenCount(Answer, frozen=True, kw_only=True):
    input_tokens: int
    output_tokens: int


class RunUsage(Answer, frozen=True, kw_only=True):
    """Model usage summed over a run's tasks, in total and per model."""

    input_tokens: int
    output_tokens: int
    by_model: dict[str, TokenCount]


class SignalWait(Answer, frozen=True, kw_only=True):
    """A signal the run waits for now: the step that waits, the signal names it takes, the data that picks it
    among the run's waits (an approval's `{"call": ...}`) and what it is about."""

    step: str
    signals: tuple[str, ...]
    match: dict[str, Any] | None
    about: dict[str, Any] | None


class RunDetail(Run, frozen=True, kw_only=True):
    """A run as `get_run` and `wait_run` read it: with its tasks, its model usage and its signal waits."""

    tasks: tuple[Task, ...]
    usage: RunUsage | None
    """None when no task reported model usage."""
    waiting: tuple[SignalWait, ...]


class RunWarning(Answer, frozen=True, kw_only=True):
    """Something the API accepted a run despite, such as a queue no live worker serves (`type` `no-worker`)."""

    type: str
    queue: str
    detail: str
    field: str | None = None


class StartedRun(Answer, frozen=True, kw_only=True):
    """The answer to starting a run."""

    id: str
    state: str
    """The run's state as the answer was made: a repeat of a finished run's start says how it ended."""
    created: bool
    """False when the idempotency key named a run started before, which this is."""
    warnings: tuple[RunWarning, ...] = ()


class RefusedRun(Answer, frozen=True, kw_only=True):
    """An item of a batch of runs that was refused, with the problem it would have been answered alone."""

    problem: Problem


class Signalled(Answer, frozen=True, kw_only=True):
    """A signal taken: by the step `step` of run `run_id`."""

    run_id: str
    signal: str
    step: str


class Event(Answer, frozen=True, kw_only=True):
    """An event of a run (`run.created`, `task.started`, `run.succeeded`...), or with `logs=True` a piece of a
    running tool's stderr (`type` `log`, no `seq`: it is live, not recorded)."""

    seq: int | None = None
    """Its place in the run's events; the stream's `Last-Event-ID`."""
    type: str
    at: datetime
    data: Any

    @property
    def final(self) -> bool:
        """Whether it is the run's last event (the run has finished)."""
        return self.type in FINAL_EVENT_TYPES


class Approval(Answer, frozen=True, kw_only=True):
    """The approval a tool call of an agent's turn waited for: its signal wait's step and what was decided
    (the approve signal's data, None until it came)."""

    step: str
    state: str
    decision: Any


class TurnCall(Answer, frozen=True, kw_only=True):
    """A tool call a model turn asked for, and the result the model was given for it."""

    id: str | None
    tool: str | None
    arguments: Any
    """As the model wrote them: parsed when they are JSON."""
    step: str | None
    """The step that ran it (None: not run)."""
    state: str
    """The call's task state, or `not run`."""
    result: Any
    approval: Approval | None = None
    """When the agent's policy made the call wait for approval."""


class TurnUsage(Answer, frozen=True, kw_only=True):
    input_tokens: int
    output_tokens: int
    cost_usd: int | float
    # int | float: the API writes a sum of no calls as 0, and document() must give that back unchanged.


class Turn(Answer, frozen=True, kw_only=True):
    """One model turn of an agent: the messages it added to the conversation, the answer, the calls it asked
    for, and what its model calls (failed attempts included) cost."""

    turn: int
    """From 1."""
    step: str
    state: str
    error: str | None
    model: str | None
    """The deployment that answered."""
    latency_ms: float | None
    messages: list[dict[str, Any]]
    answer: dict[str, Any] | None
    """The model's message (role, content, tool_calls); None until it answered."""
    tool_calls: tuple[TurnCall, ...]
    usage: TurnUsage
    model_calls: int


class TranscriptUsage(TurnUsage, frozen=True, kw_only=True):
    """A transcript's usage summed over its turns."""

    turns: int
    model_calls: int


class Transcript(Answer, frozen=True, kw_only=True):
    """An agent run's turns (or those of an agent step of a workflow's run), read back from what it recorded."""

    run_id: str
    step: str | None
    """The agent step (None: the run is an agent's)."""
    agent: str | None
    """`name@version` of the agent."""
    state: str
    output: Any
    error: str | None
    turns: tuple[Turn, ...]
    usage: TranscriptUsage


# ---- workers and queues ---------------------------------------------------------------------------


class HeldTask(Answer, frozen=True, kw_only=True):
    """A task attempt a worker holds (taken, not yet finished)."""

    run_id: str
    task_id: str
    attempt: int
    seq: int


class Worker(Answer, frozen=True, kw_only=True):
    """A live worker, as its last heartbeat says."""

    tenant: str
    queues: tuple[str, ...]
    concurrency: int
    in_flight: int
    sandbox: str
    pid: int
    host: str
    started_at: datetime
    metrics_port: int
    """The loopback port of its Prometheus metrics (0: none)."""
    holding: tuple[HeldTask, ...]
    id: str
    last_heartbeat: datetime


class QueueLoad(Answer, frozen=True, kw_only=True):
    """A queue's limit, priority and load: tasks in flight, tasks held back by a limit, and its backlog on
    the bus (`depth`: tasks no worker took yet; the age of the oldest)."""

    queue: str
    max_in_flight: int | None
    """None: no limit of its own."""
    priority: int
    in_flight: int
    held: int
    depth: int
    oldest_age_seconds: float


class Queues(Answer, frozen=True, kw_only=True):
    """The tenant's in-flight limit and load, and each of its queues."""

    max_in_flight: int | None
    in_flight: int
    held: int
    items: tuple[QueueLoad, ...]


# ---- tenants, keys, tokens, secrets, audit --------------------------------------------------------


class NewKey(Answer, frozen=True, kw_only=True):
    """An API key just made: `key` is shown this once."""

    key: str
    id: str
    """The key's prefix, which names it from now on."""
    prefix: str
    tenant: str
    role: str


class Tenant(Answer, frozen=True, kw_only=True):
    name: str
    created_at: datetime
    max_concurrent_runs: int | None
    """None: the platform's default."""
    requests_per_second: float | None
    admin_key: NewKey | None = None
    """Its first tenant-admin key, in the answer to its creation only (when asked for)."""


class Key(Answer, frozen=True, kw_only=True):
    """An API key as stored: never the key itself."""

    id: str
    tenant: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


class Tokens(Answer, frozen=True, kw_only=True):
    """An access token and the refresh token that renews it (used once), for an API key or a refresh token."""

    access_token: str
    token_type: str
    expires_in: int
    """Seconds the access token lives."""
    refresh_token: str
    stack_id: str = ""
    """The installation that issued them."""


class Revoked(Answer, frozen=True, kw_only=True):
    """The answer to revoking a login: whether the refresh token named one that was live until now."""

    revoked: bool


class Secret(Answer, frozen=True, kw_only=True):
    """A secret's name, version and times: never its value."""

    name: str
    scope: str
    version: int
    created_at: datetime
    updated_at: datetime
    updated_by: str
    outcome: str | None = None
    """`created` or `replaced`, in the answer to setting it only."""


class MasterKeyRotation(Answer, frozen=True, kw_only=True):
    """A master key rotation done: the secrets re-wrapped, and the ids (never the keys) of both master keys."""

    secrets: int
    previous_master_id: str
    master_id: str


class AuditEntry(Answer, frozen=True, kw_only=True):
    at: datetime | None
    tenant: str
    actor: str
    action: str
    target: str
    outcome: str
    source: str | None
    detail: str | None


class Health(Answer, frozen=True, kw_only=True):
    status: str
    stack_id: str
    """The installation's id."""
