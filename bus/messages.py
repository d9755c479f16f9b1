"""Wire messages: frozen msgspec Structs, each with a version field ``v``, decoded once at the edge.

Inputs and outputs travel as ``msgspec.Raw`` (JSON bytes passed through untouched), so the control
plane and the workers never decode a document they only forward.
"""

from typing import Any, Literal, TypeVar

import msgspec

WIRE_VERSION = 1


class ToolRuntime(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How to execute a tool: a command with its files, or a built-in answered by the worker."""

    command: tuple[str, ...] = ()
    files: dict[str, str] = {}
    builtin: str | None = None
    rootfs: str | None = None
    image: str | None = None
    warm: int = 0
    """Sandboxes a worker keeps started ahead of this tool's calls (0: the worker's default)."""
    prestart: bool = True
    """A warm sandbox starts the tool's own process ahead of its call; the tool then gets no per-call
    environment (``AF_RUN_ID``...). Older messages, without it, decode as prestarted."""
    reuse: bool = False
    """One sandbox serves several calls of this tenant and tool version, a fresh process each."""


class ToolLimits(msgspec.Struct, frozen=True, kw_only=True):
    wall_seconds: float = 30.0
    cpu_seconds: int = 30
    memory_mb: int = 512
    processes: int = 64
    output_bytes: int = 1_048_576


class Task(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt of one step, published on ``af.<tenant>.tasks.<queue>``."""

    v: int = WIRE_VERSION
    tenant: str
    run_id: str
    task_id: str
    attempt: int
    step: str
    tool: str
    runtime: ToolRuntime
    limits: ToolLimits = ToolLimits()
    network: Literal["none", "egress"] = "none"
    input: msgspec.Raw


ErrorKind = Literal[
    "exit",
    "crash",
    "retryable",
    "timeout",
    "bad-output",
    "output-too-large",
    "sandbox",
    "malformed",
    "cancelled",
    "lost",
]
"""Why an attempt failed; ``lost`` is the control plane's own: the attempt's worker stopped sending heartbeats."""
# A tool that exits with this code (EX_TEMPFAIL) declares its failure passing: worth another attempt.
RETRYABLE_EXIT_CODE = 75


class Result(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag="result"):
    """The outcome of one task attempt, published on ``af.<tenant>.results.<run_id>``."""

    v: int = WIRE_VERSION
    tenant: str
    run_id: str
    task_id: str
    attempt: int
    ok: bool
    # msgspec cannot decode Raw inside a union, so a failed result carries JSON null here.
    output: msgspec.Raw = msgspec.Raw(b"null")
    error: str | None = None
    error_kind: ErrorKind | None = None
    worker_id: str
    sandbox: str
    """What ran the attempt: "runsc-cold", "runsc-warm", "docker", "process", or "builtin"/"none"."""
    started_at: float
    finished_at: float
    exit_code: int | None = None
    stderr_tail: str | None = None
    cpu_seconds: float | None = None
    """User plus system CPU time of the tool and the descendants it waited for."""
    max_rss_kb: int | None = None
    """Peak resident memory of the tool (or its largest waited-for descendant), KiB."""
    queue_seconds: float | None = None
    """From the task's storing on its stream (``queued_at``) to the worker starting it."""
    start_seconds: float | None = None
    """From the worker starting the attempt to the tool's process starting: files, bundle, sandbox creation."""
    run_seconds: float | None = None
    """The tool's process, from its start to its exit."""
    deliveries: int = 1
    """How many times the task message was delivered (more than 1: a worker died holding it)."""
    queued_at: float | None = None
    """When the task message was stored on its stream (the control plane measures the round trip from it)."""


class _AttemptNotice(msgspec.Struct, frozen=True, kw_only=True):
    """What every notice a worker sends about an attempt names."""

    v: int = WIRE_VERSION
    tenant: str
    run_id: str
    task_id: str
    attempt: int
    worker_id: str


class Started(_AttemptNotice, frozen=True, kw_only=True, tag="started"):
    """A worker began an attempt (sent for sandboxed tools and model turns, which take long enough for it to
    matter), published on the same subject as the result that follows it."""

    sandbox: str
    started_at: float
    seq: int = 0
    """The task message's sequence in the tasks stream (0: not known)."""


class Released(_AttemptNotice, frozen=True, kw_only=True, tag="released"):
    """A worker handed an attempt it had started back to the queue (it is draining): queued again."""


class ToolLog(_AttemptNotice, frozen=True, kw_only=True):
    """What an attempt's tool wrote to stderr since the last piece, published while it runs on
    ``af.<tenant>.logs.<run_id>`` (stream AF_LOGS, kept an hour, for those following the run; the result
    keeps the tail for the record). ``seq`` counts an attempt's pieces from 1: a follower that is given a
    piece again (it came back) knows it."""

    step: str
    seq: int
    text: str
    at: float
    truncated: bool = False
    """The attempt wrote more than a worker streams (the rest is not published; the tail is in the result)."""


Report = Result | Started | Released
"""What workers send back about a task, told apart by the ``type`` tag."""


class RunEvent(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    type: str
    at: float
    data: msgspec.Raw


class RunEvents(msgspec.Struct, frozen=True, kw_only=True):
    """Events of one run, committed together, published on ``af.<tenant>.events.<run_id>``."""

    v: int = WIRE_VERSION
    tenant: str
    run_id: str
    events: tuple[RunEvent, ...]


class CancelTasks(msgspec.Struct, frozen=True, kw_only=True):
    """The control plane cancelled these tasks: a worker running one kills its sandbox. Published on
    ``af.<tenant>.cancel`` without the stream: a worker that misses it finishes the task, and the result,
    arriving for a cancelled task, is ignored."""

    v: int = WIRE_VERSION
    tenant: str
    run_id: str
    task_ids: tuple[str, ...]


class Held(msgspec.Struct, frozen=True, kw_only=True):
    """A task attempt a worker holds (pulled and not yet acknowledged), as its heartbeat lists it."""

    run_id: str
    task_id: str
    attempt: int
    seq: int
    """The task message's sequence in the tasks stream: what the control plane withdraws if the worker dies."""


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """A worker's registration and liveness, the value of its key in the ``af_workers`` bucket."""

    v: int = WIRE_VERSION
    worker_id: str
    tenant: str
    queues: tuple[str, ...]
    concurrency: int
    in_flight: int
    sandbox: str
    pid: int
    host: str
    started_at: float
    at: float
    metrics_port: int = 0
    """The loopback port of the worker's Prometheus ``/metrics`` (0: not served)."""
    holding: tuple[Held, ...] = ()
    """The task attempts the worker holds now: retried at once by the control plane if its heartbeat expires."""


class ModelHealth(msgspec.Struct, frozen=True, kw_only=True):
    """A model deployment's health, shared by every control plane: the value of its key in ``af_models``."""

    v: int = WIRE_VERSION
    failures: int = 0
    """Consecutive failed attempts."""
    cooldowns: int = 0
    """Consecutive cool-downs (each one after a failed probe lasts twice the one before)."""
    until: float = 0.0
    """Epoch seconds: the deployment is left alone until then."""
    reason: str = ""
    """Why it is cooling down: the failure that put it there."""
    at: float = 0.0


class ModelStats(msgspec.Struct, frozen=True, kw_only=True):
    """One control plane's last minute of calls to one deployment, put every few seconds in ``af_models``."""

    v: int = WIRE_VERSION
    calls: int
    errors: int
    tokens: int
    latency_p50_ms: float | None = None
    latency_ewma_ms: float | None = None
    at: float


_encoder = msgspec.json.Encoder()
_decoders: dict[type, msgspec.json.Decoder[object]] = {}


class TurnRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One model turn of one run: the chat completion request, and which step instance it is for."""

    v: int = WIRE_VERSION
    tenant: str
    run_id: str
    task_id: str
    step: str
    """The turn's key in the run (``turn-3``): with the task id, what makes the call idempotent."""
    agent: str
    body: msgspec.Raw
    """An OpenAI chat completion request (``model`` a tier or a deployment's name)."""
    first: bool = False
    """Asked on the first delivery of the turn's first attempt: no call of it can have been made before."""


class TurnReply(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The gateway's answer to a ``TurnRequest``."""

    v: int = WIRE_VERSION
    ok: bool
    completion: msgspec.Raw = msgspec.Raw(b"null")
    """The OpenAI ``chat.completion`` answered (when ``ok``)."""
    error: str | None = None
    retryable: bool = False
    """The turn may succeed if tried again (no healthy deployment now, the gateway unreachable)."""
    working: bool = False
    """Not the answer: the control plane is still on the call, and the answer follows on the same inbox."""


M = TypeVar(
    "M",
    Task,
    Result,
    Started,
    RunEvents,
    ToolLog,
    Heartbeat,
    CancelTasks,
    ModelHealth,
    ModelStats,
    TurnRequest,
    TurnReply,
)


def encode(value: Any) -> bytes:
    """A message, or any value msgspec can write, as JSON: the one encoder of every process."""
    return _encoder.encode(value)


def json_text(value: Any) -> str:
    """``value`` as JSON text, for a JSON column or an SSE data line."""
    return _encoder.encode(value).decode()


def decode(data: bytes, kind: type[M]) -> M:
    """Decode one message; raises ``msgspec.ValidationError``/``DecodeError`` on anything malformed."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    message: M = decoder.decode(data)  # type: ignore[assignment]
    _check_version(message.v)
    return message


_report_decoder = msgspec.json.Decoder(Report)


def decode_report(data: bytes) -> Result | Started | Released:
    """Decode what a worker sent about a task; raises like ``decode``."""
    report: Result | Started | Released = _report_decoder.decode(data)
    _check_version(report.v)
    return report


def _check_version(version: int) -> None:
    if version != WIRE_VERSION:
        raise msgspec.ValidationError(f"unsupported message version {version}, expected {WIRE_VERSION}")
