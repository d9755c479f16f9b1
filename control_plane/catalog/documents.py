"""The documents users send: tool specs, workflow documents and run requests, decoded once at the edge."""

import posixpath
import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from bus.subjects import InvalidName, check_name
from control_plane.errors import Invalid, field_from_msgspec

VERSION_RE = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,9}){0,2}$")
MAX_FILES_BYTES = 256 * 1024

Positive = Annotated[float, msgspec.Meta(gt=0, le=24 * 3600)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class RuntimeSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    command: Annotated[list[str], msgspec.Meta(min_length=1)]
    files: dict[str, str] = {}
    rootfs: str | None = None
    image: str | None = None
    warm: Annotated[int, msgspec.Meta(ge=0, le=32)] = 0
    """Sandboxes each worker keeps started ahead of this tool version's calls (runsc; 0: the worker's
    ``AF_RUNSC_WARM``). Each call still gets a fresh sandbox of its own, unless ``reuse``."""
    prestart: bool = True
    """A warm sandbox (runsc) starts the tool's own process ahead of its call, blocked on its stdin, which then
    brings the input; such a tool gets none of the per-call variables (``AF_RUN_ID``, ``AF_TASK_ID``,
    ``AF_ATTEMPT``, ``TRACEPARENT``), so a tool that reads them says ``false``."""
    reuse: bool = False
    """One sandbox (runsc) serves many calls of this tenant and tool version, a fresh tool process each, /work
    and /tmp wiped and leftover processes killed between them; not a fresh kernel per call (README)."""


class LimitsSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    wall_seconds: Positive = 30.0
    cpu_seconds: PositiveInt = 30
    memory_mb: Annotated[int, msgspec.Meta(ge=16, le=65536)] = 512
    processes: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 64
    output_bytes: Annotated[int, msgspec.Meta(ge=1, le=8 * 1024 * 1024)] = 1_048_576
    schedule_to_start_seconds: Positive | None = None
    """A queued attempt that no worker has started this long fails as timed out (and may be retried)."""


RetryableKind = Literal["timeout", "crash", "retryable", "sandbox", "exit"]


class RetrySpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When a failed attempt is tried again, and how long to wait before it.

    Failure kinds: ``timeout`` (wall limit), ``crash`` (killed by a signal), ``retryable`` (the tool exited
    with 75, EX_TEMPFAIL: it declares the failure passing), ``sandbox`` (the sandbox could not start it),
    ``exit`` (any other non-zero exit: a bug or bad input, so not retried unless listed).
    """

    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 1
    backoff_seconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 1.0
    multiplier: Annotated[float, msgspec.Meta(ge=1, le=10)] = 2.0
    max_backoff_seconds: Annotated[float, msgspec.Meta(ge=0, le=24 * 3600)] = 300.0
    jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2
    retry_on: tuple[RetryableKind, ...] = ("timeout", "crash", "retryable", "sandbox")

    def delay(self, attempt: int, unit_random: float) -> float:
        """Seconds before attempt ``attempt + 1``, given a uniform random number in [0, 1)."""
        base = min(self.max_backoff_seconds, self.backoff_seconds * self.multiplier ** (attempt - 1))
        return base * (1 - self.jitter + 2 * self.jitter * unit_random)


class ToolSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A versioned tool: a program reading one JSON document on stdin and writing one on stdout."""

    name: str
    version: str
    runtime: RuntimeSpec
    description: str = ""
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    limits: LimitsSpec = LimitsSpec()
    network: Literal["none", "egress"] = "none"
    queue: str = "default"
    retry: RetrySpec = RetrySpec()


class RunRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Start one run: of a workflow (``name[@version]``), of a single tool, or of a single agent."""

    workflow: str | None = None
    tool: str | None = None
    agent: str | None = None
    input: Any = None
    queue: str | None = None
    idempotency_key: str | None = None
    require_worker: bool = False
    """Refuse the run (409 ``no-worker``) rather than warn when no live worker serves a queue its first tasks go to."""


class SignalRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A named signal for a run waiting for one (human in the loop); ``data`` becomes the waiting step's output."""

    name: str
    data: Any = None


MaxInFlight = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class QueueSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A queue's in-flight limit (null: none of its own) and its priority among the tenant's queues (0-9):
    when the tenant's own limit binds, held tasks of higher-priority queues are released first."""

    max_in_flight: MaxInFlight | None = None
    priority: Annotated[int, msgspec.Meta(ge=0, le=9)] = 0


class InFlightLimit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The most tasks the tenant may have in flight over all of its queues (null: the platform's ceiling)."""

    max_in_flight: MaxInFlight | None = None


class BatchRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Start up to 1,000 runs; each item is a RunRequest, answered on its own."""

    runs: Annotated[list[dict[str, Any]], msgspec.Meta(min_length=1, max_length=1000)]


T = TypeVar("T")


def convert(document: Any, kind: type[T], field_prefix: str = "") -> T:
    """Convert decoded JSON into ``kind`` or raise a validation problem naming the field."""
    try:
        return msgspec.convert(document, type=kind)
    except msgspec.ValidationError as error:
        detail, field = field_from_msgspec(str(error))
        where = ".".join(part for part in (field_prefix, field or "") if part) or None
        raise Invalid("validation-error", detail, where) from None


def check_version(version: str, field: str = "version") -> str:
    if not VERSION_RE.fullmatch(version):
        raise Invalid("bad-version", f"invalid version {version!r}: use 1 to 3 numbers such as 1.0.2", field)
    return version


def check_name_field(kind: str, value: str, field: str) -> str:
    try:
        return check_name(kind, value)
    except InvalidName as error:
        raise Invalid("invalid-name", str(error), field) from None


def split_ref(ref: str, field: str) -> tuple[str, str | None]:
    """``name[@version]`` → (name, version or None for the latest)."""
    name, _, version = ref.partition("@")
    check_name_field("name", name, field)
    if not version or version == "latest":
        return name, None
    return name, check_version(version, field)


def version_as_text(document: Any) -> Any:
    """The document with a whole-number ``version`` (YAML's unquoted ``version: 1``, or JSON's ``1``) as its
    text; a decimal one is refused, since YAML has already read ``1.10`` as ``1.1``."""
    if not isinstance(document, dict):
        return document
    version = document.get("version")
    if isinstance(version, bool) or not isinstance(version, int | float):
        return document
    if isinstance(version, float):
        detail = f'version {version!r} is a number, and YAML reads 1.10 as 1.1: quote it, e.g. version: "{version}"'
        raise Invalid("bad-version", detail, "version")
    return {**document, "version": str(version)}


def check_tool(spec: ToolSpec) -> None:
    check_name_field("tool name", spec.name, "name")
    check_version(spec.version)
    check_name_field("queue", spec.queue, "queue")
    total = 0
    for path, content in spec.runtime.files.items():
        if path.startswith("/") or ".." in path.split("/") or not path:
            raise Invalid("validation-error", f"file name {path!r} must be relative", "runtime.files")
        total += len(content.encode())
    if total > MAX_FILES_BYTES:
        raise Invalid(
            "validation-error",
            f"runtime.files hold {total} bytes, more than {MAX_FILES_BYTES}",
            "runtime.files",
        )
    missing = unshipped_file(spec.runtime)
    if missing is not None:
        detail = f"runtime.command runs {missing!r}, a file the tool does not ship: add it to runtime.files"
        raise Invalid("validation-error", detail, "runtime.command")


_SCRIPT_RE = re.compile(r"[^\s]+\.(py|sh|bash|js|mjs|cjs|ts|rb|pl|php|lua|r|jl|jar|wasm)", re.IGNORECASE)
"""An argument naming a program's source by its extension (``main.py``, ``bin/run.sh``)."""
_CODE_OPTIONS = frozenset({"-c", "-e", "-m", "--eval", "--command"})
"""Options whose value is code or a module, never a file (``python3 -c``, ``node -e``, ``python3 -m``)."""


def unshipped_file(runtime: RuntimeSpec) -> str | None:
    """The first file of the working directory that ``command`` runs and ``files`` does not ship, if any.

    Every sandbox starts a tool in a fresh ``/work`` that holds only its shipped files, whatever its image
    or root file system, so a relative path in the command can name nothing else: the program itself when
    it has a slash (``./run``, ``bin/tool``), or an argument naming a source file (``python3 main.py``).
    Absolute paths (the image's, the host's ``/usr``) and commands found on the PATH are not checked.
    """
    shipped = {posixpath.normpath(name) for name in runtime.files}
    for index, arg in enumerate(runtime.command):
        if arg.startswith(("/", "-")) or (index > 0 and runtime.command[index - 1] in _CODE_OPTIONS):
            continue
        names_file = "/" in arg if index == 0 else arg.startswith("./") or _SCRIPT_RE.fullmatch(arg) is not None
        if names_file and posixpath.normpath(arg) not in shipped:
            return arg
    return None
