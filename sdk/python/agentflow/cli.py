"""The `af` command line: the SDK's operations for people and scripts, and the server commands, which it
hands over to the server package's own entry points without importing them."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from importlib.util import find_spec
from pathlib import Path
from typing import IO, Any, TypeVar

import click
import httpx
import yaml
from rich.console import Console
from rich.table import Column, Table

from . import models
from ._api import JSON
from ._client import Client
from ._errors import AgentFlowError, FileError, TransportError
from ._files import load_agent_file, load_model_file, load_tool_file, load_workflow_file, parse_json, read_text
from ._login import forget_login, login_file
from ._scaffold import DEFAULT_TEMPLATE, TEMPLATES, scaffold
from .models import (
    RUN_STATES,
    Entry,
    Event,
    Registered,
    RunDetail,
    RunUsage,
    Sandbox,
    SignalWait,
    StartedRun,
    Transcript,
)

E = TypeVar("E", bound=Entry)

ClientFactory = Callable[[str | None, str | None], Client]
"""Makes the client from the `--api-url` and `--token` flags; tests pass one as click's `obj`."""

IDLE_LOG_SECONDS = 0.5
"""`af logs` without `--follow` stops once the stream has been quiet this long: it has sent the past."""
UNSERVED_CHECK_SECONDS = 3.0
"""`af run --wait` looks at the fleet after this long without an event from the run."""


class _Failure(click.ClickException):
    """A failure already phrased for the user: one line `af: ...` on stderr; exit code 1."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"af: {self.message}", err=True)


class _UsageFailure(_Failure):
    exit_code = click.UsageError.exit_code


class _Unreachable(_Failure):
    exit_code = 3


@contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        raise _UsageFailure(exc.format_message() + hint) from exc
    except TransportError as exc:
        raise _Unreachable(str(exc)) from exc
    except AgentFlowError as exc:
        raise _Failure(str(exc)) from exc
    except (KeyError, TypeError, ValueError, httpx.HTTPError) as exc:
        # An answer of an unexpected shape, or a URL httpx refuses: still one line, never a traceback.
        raise _Failure(f"unexpected {type(exc).__name__}: {exc}") from exc


class _Root(click.Group):
    """The `af` group: every failure below it, in parsing or in a command, ends as one line on stderr."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with _one_line_errors():
            return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_errors():
            return super().invoke(ctx)


class _Session:
    """What the commands of one invocation share: the client, made on first use and closed at exit."""

    def __init__(self, ctx: click.Context, factory: ClientFactory, api_url: str | None, token: str | None):
        self._ctx = ctx
        self._factory = factory
        self._api_url = api_url
        self._token = token

    @functools.cached_property
    def client(self) -> Client:
        client = self._factory(self._api_url, self._token)
        self._ctx.call_on_close(client.close)
        if client.settings.forgot_login:
            click.echo(
                f"af: forgot the login stored for {client.settings.api_url}: an earlier stack issued it; using"
                " this stack's key (af login logs in to this one)",
                err=True,
            )
        return client


_pass_session = click.make_pass_decorator(_Session)

_output_option = click.option(
    "--output",
    "-o",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="json: exactly the API's JSON on stdout, nothing else.",
)


@click.group(cls=_Root, name="af", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="agentflow", prog_name="af", message="%(prog)s %(version)s")
@click.option("--api-url", metavar="URL", help="The API (default: $AF_API_URL, else the local stack's).")
@click.option("--token", metavar="TOKEN", help="Bearer token (default: $AF_TOKEN, else the local stack's key).")
@click.pass_context
def cli(ctx: click.Context, api_url: str | None, token: str | None) -> None:
    """Run multi-agent workflows with AgentFlow."""
    ctx.obj = _Session(ctx, ctx.obj or Client, api_url, token)


def main() -> None:
    """The `af` entry point."""
    cli(prog_name="af")


# ---- output ---------------------------------------------------------------------------------------


PIPE_WIDTH = 4096
"""The width tables get off a terminal (a pipe, a file): every row on one line, for grep and awk."""


def _console(stderr: bool = False) -> Console:
    # Names, specs and errors may hold "[...]", which rich would read as markup.
    console = Console(stderr=stderr, markup=False, highlight=False)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console


def _print_rich(table: Table) -> None:
    console = _console()
    if console.is_terminal:
        console.print(table)
        return
    # Off a terminal, without the cells' padding at the ends of lines, which a wide table gives every row.
    with console.capture() as captured:
        console.print(table)
    for line in captured.get().splitlines():
        click.echo(line.rstrip())


def _print_json(data: Any, *, one_line: bool = False) -> None:
    """The API's JSON of `data` (answers, or documents holding them); `one_line` keeps a stream of documents
    (events, then the final run) valid JSON Lines."""
    if one_line:
        click.echo(json.dumps(models.document(data), ensure_ascii=False, separators=(",", ":")))
    else:
        click.echo(json.dumps(models.document(data), ensure_ascii=False, indent=2))


WHOLE_COLUMNS = frozenset({"ID"})
"""Columns never shortened to fit the terminal: an id is there to be copied."""


def _print_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    cells = [list(row) for row in rows]
    columns = [
        Column(header, no_wrap=True, min_width=max((len(row[index]) for row in cells), default=0))
        if header in WHOLE_COLUMNS
        else Column(header)
        for index, header in enumerate(headers)
    ]
    table = Table(*columns, box=None, pad_edge=False)
    for row in cells:
        table.add_row(*row)
    _print_rich(table)


def _print_fields(fields: Iterable[tuple[str, str]]) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    for name, value in fields:
        if value:
            table.add_row(name, value)
    _print_rich(table)


def _parse_time(value: Any) -> datetime | None:
    """A time of a typed answer, or one of a JSON document (ISO 8601 text)."""
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _when(value: Any) -> str:
    moment = _parse_time(value)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else str(value or "")


def _seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _duration(start: Any, end: Any) -> str:
    begun, ended = _parse_time(start), _parse_time(end)
    return _seconds((ended - begun).total_seconds()) if begun and ended else ""


def _age(value: Any) -> str:
    moment = _parse_time(value)
    return f"{_seconds((datetime.now(UTC) - moment).total_seconds())} ago" if moment else ""


def _short(value: Any, width: int = 60) -> str:
    """A one-line glimpse of an output or an error, which may be any JSON."""
    if value is None:
        return ""
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        value = value["message"]
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class _EventPrinter:
    """Prints a run's events one line each, with the tail of what a tool wrote to stderr under the event of
    its attempt; and the `log` events of a live stream (the tools' stderr as it is written) line by line as
    their lines end, an attempt's last unended line with its event, whose tail then repeats nothing."""

    def __init__(self, output: str) -> None:
        self._output = output
        self._unended: dict[tuple[Any, Any], str] = {}
        self._streamed: set[tuple[Any, Any]] = set()
        """The attempts whose stderr came whole as `log` events."""
        self._pieces: dict[tuple[Any, Any], int] = {}
        """The last piece shown of each attempt: a reconnection gives them all again."""

    def __call__(self, event: Event) -> None:
        if self._output == "json":
            _print_json(event, one_line=True)
            return
        data = event.data if isinstance(event.data, dict) else {}
        attempt = (data.get("task_id"), data.get("attempt"))
        step = data.get("step") or "-"
        if event.type == "log":
            self._log(attempt, step, data)
            return
        self._stderr(step, self._unended.pop(attempt, ""))
        clock = event.at.astimezone().strftime("%H:%M:%S")
        detail = _short(data.get("error") or data.get("output"))
        click.echo(f"{clock}  {event.type:<15} {step:<16} {detail}".rstrip())
        if attempt not in self._streamed:
            self._stderr(step, str(data.get("stderr") or ""))

    def _log(self, attempt: tuple[Any, Any], step: str, data: JSON) -> None:
        seq, last = int(data.get("seq") or 0), self._pieces.get(attempt, 0)
        if seq <= last:
            return
        self._pieces[attempt] = seq
        if seq == last + 1 and not data.get("truncated") and (last == 0 or attempt in self._streamed):
            self._streamed.add(attempt)
        else:  # cut, or pieces the stream no longer kept: the tail under its event shows how it ended
            self._streamed.discard(attempt)
        text = self._unended.pop(attempt, "") + str(data.get("text") or "")
        ended, _, unended = text.rpartition("\n")
        self._stderr(step, ended)
        if unended:
            self._unended[attempt] = unended

    @staticmethod
    def _stderr(step: str, text: str) -> None:
        for line in text.splitlines():
            click.echo(f"    [{step}] {line}".rstrip())


def _usage(usage: RunUsage | None) -> str:
    """Model usage as "1,234 in / 56 out tokens (model-a, model-b)", or empty."""
    if not usage:
        return ""
    names = ", ".join(sorted(usage.by_model))
    return f"{usage.input_tokens:,} in / {usage.output_tokens:,} out tokens ({names})"


def _print_run(run: RunDetail, output: str, *, one_line: bool = False) -> None:
    if output == "json":
        _print_json(run, one_line=one_line)
        return
    kind = "workflow" if run.workflow else "agent" if run.agent else "tool"
    _print_fields(
        [
            ("run", run.id),
            ("target", f"{kind} {run.target}"),
            ("state", run.state),
            ("created", _when(run.created_at)),
            ("finished", _when(run.finished_at)),
            ("duration", _duration(run.created_at, run.finished_at)),
            ("output", _short(run.output, width=2000)),
            ("error", _short(run.error, width=2000)),
            ("usage", _usage(run.usage)),
            *(("waiting", _signal_wait(wait)) for wait in run.waiting),
        ]
    )
    if run.tasks:
        click.echo()
        _print_table(
            ["STEP", "TOOL", "STATE", "ATTEMPT", "WORKER", "DURATION", "ERROR"],
            (
                [
                    task.step,
                    task.tool,
                    task.state,
                    str(task.attempt),
                    task.worker_id or "",
                    _duration(task.started_at, task.finished_at),
                    _short(task.error),
                ]
                for task in run.tasks
            ),
        )
        used = [(task.step, task.sandbox) for task in run.tasks if task.sandbox]
        if used:
            click.echo()
            _print_table(
                ["STEP", "SANDBOX", "CPU", "PEAK MEM", "QUEUE", "START", "RUN"],
                ([step, *_sandbox_usage(usage)] for step, usage in used),
            )


def _signal_wait(wait: SignalWait) -> str:
    """A signal wait as one line: ``approve {"call": "turn-1/call-0"} (step turn-1/approve-0): <about>``."""
    said = ", ".join(wait.signals)
    if wait.match:
        said += " " + json.dumps(wait.match)
    said += f" (step {wait.step})"
    if wait.about:
        said += ": " + _short(wait.about, width=500)
    return said


def _sandbox_usage(usage: Sandbox) -> list[str]:
    """The sandbox kind, CPU time, peak memory and queue, start and run times of a task's latest attempt."""
    timing = usage.timing
    measures = [usage.cpu_seconds, timing.queue_seconds, timing.start_seconds, timing.run_seconds]
    memory = usage.max_rss_kb
    shown = ["" if seconds is None else _milliseconds(seconds) for seconds in measures]
    return [usage.kind, shown[0], "" if memory is None else f"{memory / 1024:.1f} MiB", *shown[1:]]


def _milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else _seconds(seconds)


@contextmanager
def _progress(message: str, output: str) -> Iterator[None]:
    """A spinner on stderr for a wait; none with `--output json`, and rich shows none off a terminal."""
    if output == "json":
        yield
        return
    with _console(stderr=True).status(message):
        yield


# ---- tools and workflows --------------------------------------------------------------------------


def _split_ref(ref: str) -> tuple[str, str]:
    name, _, version = ref.partition("@")
    return name, version or "latest"


def _definitions(
    kind: str,
    summary: str,
    verb: str,
    load: Callable[[Path], JSON],
    store: Callable[[Client, JSON], Registered[E]],
    fetch: Callable[[Client, str, str], E],
    listing: Callable[[Client], list[E]],
    details: dict[str, Callable[[E], str]],
) -> click.Group:
    """The `af tool`, `af workflow` and `af agent` groups, which differ only in what they load, call and
    list (`details`: the columns of `ls` particular to the kind)."""
    group = click.Group(kind, help=summary)
    columns: dict[str, Callable[[E], str]] = {
        "NAME": lambda item: item.name,
        "VERSION": lambda item: item.version,
        **details,
        "CREATED": lambda item: _when(item.created_at),
    }

    @group.command(verb, help=f"{verb.capitalize()} a {kind} from a YAML or JSON FILE.")
    @click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
    @_output_option
    @_pass_session
    def store_command(session: _Session, file: Path, output: str) -> None:
        stored = store(session.client, load(file))
        if output == "json":
            _print_json(stored)
        else:
            outcome = "created" if stored.created else "unchanged (this version already exists)"
            click.echo(f"{kind} {stored.value.name}@{stored.value.version} {outcome}")

    @group.command("ls", help=f"List every {kind} version.")
    @_output_option
    @_pass_session
    def ls_command(session: _Session, output: str) -> None:
        items = listing(session.client)
        if output == "json":
            _print_json({"items": items})
        else:
            _print_table(list(columns), ([cell(item) for cell in columns.values()] for item in items))

    @group.command("get", help=f"Show one {kind} version (default: the latest).")
    @click.argument("ref", metavar="NAME[@VERSION]")
    @_output_option
    @_pass_session
    def get_command(session: _Session, ref: str, output: str) -> None:
        item = fetch(session.client, *_split_ref(ref))
        if output == "json":
            _print_json(item)
            return
        _print_fields(
            [(kind, f"{item.name}@{item.version}"), ("digest", item.digest), ("created", _when(item.created_at))]
        )
        click.echo()
        click.echo(yaml.safe_dump(item.spec, sort_keys=False, allow_unicode=True).rstrip())

    return group


def _steps(workflow: models.Workflow) -> int:
    """What a workflow is made of: a dag's steps (a loop and each of its steps), an fsm's states, a bt's nodes."""
    spec = workflow.spec
    if workflow.kind == "fsm":
        return len(spec.get("states") or {})
    if workflow.kind == "bt":
        return _tree_nodes(spec.get("root"))
    return sum(1 + len((step.get("loop") or {}).get("steps") or []) for step in spec.get("steps") or [])


_BRANCHES = ("sequence", "selector")
_DECORATORS = ("parallel", "retry", "timeout", "repeat_until")


def _tree_nodes(node: Any) -> int:
    """The nodes of a behavior tree (planning/bt.py's document): a leaf is one, an inner node one plus its children."""
    if not isinstance(node, dict) or "tool" in node:
        return 1 if node else 0
    children: list[Any] = []
    for key, inner in node.items():
        if key in _BRANCHES and isinstance(inner, list):
            children = inner
        elif key in _DECORATORS and isinstance(inner, dict):
            children = inner.get("children") or [inner.get("child")]
        elif key == "invert":
            children = [inner]
    return 1 + sum(_tree_nodes(child) for child in children)


cli.add_command(
    _definitions(
        "tool",
        "Versioned tools: programs that read JSON on stdin and write JSON on stdout.",
        "register",
        load_tool_file,
        Client.register_tool,
        Client.get_tool,
        Client.list_tools,
        {"DESCRIPTION": lambda tool: _short(tool.spec.get("description"), width=40)},
    )
)
cli.add_command(
    _definitions(
        "workflow",
        "Versioned workflows: steps that run tools.",
        "apply",
        load_workflow_file,
        Client.apply_workflow,
        Client.get_workflow,
        Client.list_workflows,
        {
            "KIND": lambda workflow: workflow.kind or "",
            "STEPS": lambda workflow: str(_steps(workflow)),
        },
    )
)


cli.add_command(
    _definitions(
        "agent",
        "Versioned agents: a model with instructions and the tools it may call.",
        "apply",
        load_agent_file,
        Client.apply_agent,
        Client.get_agent,
        Client.list_agents,
        {
            "MODEL": lambda agent: str(agent.spec.get("model", "")),
            "TOOLS": lambda agent: str(len(agent.spec.get("tools") or [])),
        },
    )
)


# ---- models ---------------------------------------------------------------------------------------


@cli.group("model")
def model_group() -> None:
    """Model deployments: how the gateway reaches each model, and the tier it serves."""


@model_group.command("apply")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--platform", is_flag=True, help="A deployment every tenant may use (platform admins).")
@_output_option
@_pass_session
def model_apply(session: _Session, file: Path, platform: bool, output: str) -> None:
    """Apply a model deployment from a YAML or JSON FILE (again: it replaces the one of that name)."""
    stored = session.client.apply_model(load_model_file(file), platform=platform)
    if output == "json":
        _print_json(stored)
    else:
        outcome = stored.value.get("outcome", "created" if stored.created else "unchanged")
        click.echo(f"model {stored.value['name']} {outcome}")


@model_group.command("delete")
@click.argument("name")
@click.option("--platform", is_flag=True, help="The platform's deployment of that name (platform admins).")
@_pass_session
def model_delete(session: _Session, name: str, platform: bool) -> None:
    """Remove a model deployment."""
    session.client.delete_model(name, platform=platform)
    click.echo(f"model {name} deleted")


@cli.group("models")
def models_group() -> None:
    """The model deployments the tenant may call, with their health."""


def _cooldown(health: JSON) -> str:
    left = health.get("cooldown_seconds") or 0
    if not left:
        return "-"
    return f"{_seconds(left)} ({_short(health.get('reason'), width=48)})"


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.1f} ms"


@models_group.command("ls")
@_output_option
@_pass_session
def models_ls(session: _Session, output: str) -> None:
    """List the deployments: provider, tier and place in its chain, health, cool-down left and why, latency
    p50, error rate and calls in the last minute (over every control plane)."""
    answer = session.client.list_models()
    if output == "json":
        _print_json(answer)
        return
    _print_table(
        ["NAME", "SCOPE", "PROVIDER", "MODEL", "TIER", "ORDER", "HEALTH", "COOL-DOWN", "P50", "ERRORS", "CALLS/MIN"],
        (
            [
                item["name"],
                item.get("scope", ""),
                item["spec"].get("provider", ""),
                item["spec"].get("model") or item["name"],
                item["spec"].get("tier") or "-",
                str(item["spec"].get("order", 0)),
                item["health"].get("state", ""),
                _cooldown(item["health"]),
                _ms(item["health"].get("latency_p50_ms")),
                f"{100 * (item['health'].get('error_rate') or 0):.0f}%",
                str(item["health"].get("calls_last_minute", 0)),
            ]
            for item in answer["items"]
        ),
    )


# ---- usage and budgets ----------------------------------------------------------------------------


def _tokens(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


def _dollars(value: Any) -> str:
    """US dollars to the millionth, trailing zeros dropped (``$0.0042``); ``-``: none."""
    if value is None:
        return "-"
    return "$" + (f"{value:.6f}".rstrip("0").rstrip(".") or "0")


@cli.command("usage")
@click.option(
    "--by",
    "group_by",
    type=click.Choice(["day", "model", "tier", "run", "workflow", "agent"]),
    default="model",
    show_default=True,
    help="What to sum the usage by.",
)
@click.option("--since", help="From this ISO date or date and time (UTC unless it says).")
@click.option("--until", help="Until this ISO date or date and time, exclusive.")
@_output_option
@_pass_session
def usage_command(session: _Session, group_by: str, since: str | None, until: str | None, output: str) -> None:
    """The tenant's metered model usage: calls, input and output tokens and cost, summed by day, model, tier,
    run, workflow or agent, the most costly first, and in total."""
    answer = session.client.usage(group_by=group_by, since=since, until=until)
    if output == "json":
        _print_json(answer)
        return
    total = answer["total"]
    rows = [
        [item["key"], str(item["calls"]), _tokens(item["input_tokens"]), _tokens(item["output_tokens"]),
         _dollars(item["cost_usd"])]
        for item in answer["items"]
    ]  # fmt: skip
    rows.append(["TOTAL", str(total["calls"]), _tokens(total["input_tokens"]), _tokens(total["output_tokens"]),
                 _dollars(total["cost_usd"])])  # fmt: skip
    _print_table([group_by.upper(), "CALLS", "INPUT", "OUTPUT", "COST"], rows)


@cli.group("budget")
def budget_group() -> None:
    """The tenant's budgets for model calls: tokens and cost per month, and per run."""


def _print_budgets(answer: JSON, output: str) -> None:
    if output == "json":
        _print_json(answer)
        return
    month = answer["month"]
    period = month["period"]
    _print_fields(
        [
            ("monthly tokens", f"{_tokens(month['tokens'])} of {_tokens(answer['monthly_tokens'])} ({period})"),
            ("monthly cost", f"{_dollars(month['cost_usd'])} of {_dollars(answer['monthly_cost_usd'])}"),
            ("run tokens", _tokens(answer["run_tokens"])),
            ("run cost", _dollars(answer["run_cost_usd"])),
        ]
    )


@budget_group.command("show")
@_output_option
@_pass_session
def budget_show(session: _Session, output: str) -> None:
    """Show the budgets ("-": no limit) and what this month has spent."""
    _print_budgets(session.client.get_budgets(), output)


@budget_group.command("set")
@click.option("--monthly-tokens", type=click.IntRange(min=0), help="Input and output tokens per calendar month (UTC).")
@click.option("--monthly-cost", type=click.FloatRange(min=0), help="US dollars per calendar month (UTC).")
@click.option("--run-tokens", type=click.IntRange(min=0), help="Tokens of one run's model calls.")
@click.option("--run-cost", type=click.FloatRange(min=0), help="US dollars of one run's model calls.")
@_output_option
@_pass_session
def budget_set(
    session: _Session,
    monthly_tokens: int | None,
    monthly_cost: float | None,
    run_tokens: int | None,
    run_cost: float | None,
    output: str,
) -> None:
    """Replace the budgets (tenant admins): a limit not given is no limit, so `af budget set` alone lifts
    them all. Over one, model calls are refused with budget-exceeded."""
    answer = session.client.set_budgets(
        monthly_tokens=monthly_tokens, monthly_cost_usd=monthly_cost, run_tokens=run_tokens, run_cost_usd=run_cost
    )
    _print_budgets(answer, output)


@cli.group("llm")
def llm_group() -> None:
    """The model calls the gateway made."""


@llm_group.command("calls")
@click.argument("run_id")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@_output_option
@_pass_session
def llm_calls(session: _Session, run_id: str, limit: int, output: str) -> None:
    """List a run's model calls in order: tier, the deployment that answered, attempts (every deployment
    tried), latency, tokens, cost and outcome."""
    items = session.client.llm_calls(run_id, limit=limit)
    if output == "json":
        _print_json({"items": items})
        return
    _print_table(
        ["AT", "TASK", "TURN", "TIER", "DEPLOYMENT", "ATTEMPTS", "LATENCY", "TOKENS IN/OUT", "COST", "OUTCOME"],
        (
            [
                _when(call["at"]),
                _short(call.get("task_id") or "-", width=12),
                "-" if call.get("turn") is None else str(call["turn"]),
                call.get("tier") or "-",
                call.get("deployment") or "-",
                " > ".join(f"{a['deployment']}:{a['outcome']}" for a in call.get("attempts") or []) or "-",
                _ms(call.get("latency_ms")),
                f"{call['input_tokens']}/{call['output_tokens']}",
                _dollars(call.get("cost_usd")),
                call["outcome"],
            ]
            for call in items
        ),
    )


# ---- secrets --------------------------------------------------------------------------------------


@cli.group("secret")
def secret_group() -> None:
    """Secrets: values such as provider keys that AgentFlow uses and never shows again (write-only)."""


def _secret_value(from_file: Path | None) -> str:
    """The value from FILE, from standard input when it is not a terminal, else from a prompt that does
    not echo; its trailing line break dropped. Never from the command line, where other users see it."""
    if from_file is not None:
        text: str = read_text(from_file, "--from-file")
    elif sys.stdin.isatty():
        text = click.prompt("Value", hide_input=True, confirmation_prompt=True, err=True)
    else:
        text = sys.stdin.read()
    value = text.rstrip("\r\n")
    if not value:
        raise _Failure("the secret's value is empty")
    return value


@secret_group.command("set")
@click.argument("name")
@click.option("--from-file", type=click.Path(dir_okay=False, path_type=Path), help="Read the value from FILE instead.")
@click.option("--platform", is_flag=True, help="A secret of the platform's, for platform-wide deployments.")
@_output_option
@_pass_session
def secret_set(session: _Session, name: str, from_file: Path | None, platform: bool, output: str) -> None:
    """Set secret NAME, or replace it: the value comes from --from-file, from standard input, or from a
    prompt that does not echo (never from the command line)."""
    stored = session.client.set_secret(name, _secret_value(from_file), platform=platform)
    if output == "json":
        _print_json(stored)
    else:
        click.echo(f"secret {stored.value.name} {stored.value.outcome} (version {stored.value.version})")


@secret_group.command("ls")
@click.option("--platform", is_flag=True, help="The platform's secrets (platform admins).")
@_output_option
@_pass_session
def secret_ls(session: _Session, platform: bool, output: str) -> None:
    """List the secrets: names, versions and when and by whom each was last set; never a value."""
    items = session.client.list_secrets(platform=platform)
    if output == "json":
        _print_json({"items": items})
        return
    _print_table(
        ["NAME", "SCOPE", "VERSION", "CREATED", "UPDATED", "UPDATED-BY"],
        (
            [
                item.name,
                item.scope,
                str(item.version),
                _when(item.created_at),
                _when(item.updated_at),
                item.updated_by,
            ]
            for item in items
        ),
    )


@secret_group.command("rm")
@click.argument("name")
@click.option("--platform", is_flag=True, help="The platform's secret of that name (platform admins).")
@_pass_session
def secret_rm(session: _Session, name: str, platform: bool) -> None:
    """Remove secret NAME."""
    session.client.delete_secret(name, platform=platform)
    click.echo(f"secret {name} deleted")


@secret_group.command("rotate-master")
@click.option(
    "--new-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The new master key (base64 of 32 bytes), needed when the control plane reads AF_MASTER_KEY.",
)
@_output_option
@_pass_session
def secret_rotate_master(session: _Session, new_key_file: Path | None, output: str) -> None:
    """Re-wrap every secret's data key under a new master key (platform admins). Without --new-key-file the
    control plane makes the key and replaces its key file, keeping the old one beside it until done."""
    new_key = read_text(new_key_file, "--new-key-file").strip() if new_key_file is not None else None
    answer = session.client.rotate_master_key(new_key)
    if output == "json":
        _print_json(answer)
    else:
        click.echo(
            f"master key rotated: {answer.secrets} secrets re-wrapped"
            f" (key {answer.previous_master_id} -> {answer.master_id})"
        )


# ---- runs -----------------------------------------------------------------------------------------


def _parse_input(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        if value.startswith("@"):
            return parse_json(read_text(Path(value[1:])), value[1:])
        return parse_json(value)
    except FileError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


def _follow(client: Client, run_id: str, output: str) -> RunDetail:
    printer = _EventPrinter(output)
    for event in client.events(run_id, logs=True):
        printer(event)
    return client.get_run(run_id)


CONTROL_PLANE_QUEUE = "control-plane"
"""Where the API shows the tasks the control plane keeps itself (an agent step, a timer): no worker's."""


def _no_worker(queue: str) -> str:
    return f"no live worker serves queue {queue!r}: the run waits until one starts (af worker start --queue {queue})"


def _wait(client: Client, run_id: str) -> RunDetail:
    """The run once it has finished. Whenever it has been quiet for a while, say on stderr which queues its
    waiting tasks are on that no live worker serves (once while each stays unserved)."""
    after: str | None = None
    unserved: set[str] = set()
    while True:
        for event in client.events(run_id, after, idle_timeout=UNSERVED_CHECK_SECONDS):
            after = str(event.seq)
        run = client.get_run(run_id)
        if run.finished:
            return run
        try:
            served = {queue for worker in client.list_workers() for queue in worker.queues}
        except AgentFlowError:
            continue  # the caller may not read the fleet: it just waits
        waiting = {task.queue for task in run.tasks if task.state == "queued"}
        waiting.discard(CONTROL_PLANE_QUEUE)
        for queue in sorted(waiting - served - unserved):
            click.echo(f"af: still waiting: {_no_worker(queue)}", err=True)
        unserved = (unserved | waiting) - served


def _starting_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options of a command that starts a run (`af run`, `af runs rerun`), with --output and the session."""
    options: list[Callable[[Callable[..., None]], Callable[..., None]]] = [
        click.option("--idempotency-key", metavar="KEY", help="Starting again with the same KEY starts no new run."),
        click.option("--queue", metavar="QUEUE", help="The worker queue to run on (default: the steps' own)."),
        click.option("--wait", is_flag=True, help="Wait for the run to end and print it; exit 1 unless it succeeded."),
        click.option(
            "--follow", is_flag=True, help="Like --wait, printing each event, and the tools' stderr, as it happens."
        ),
        click.option(
            "--require-worker",
            is_flag=True,
            help="Refuse the run if no live worker serves its queue (instead of warning).",
        ),
        _output_option,
        _pass_session,
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command("run")
@click.argument("ref", metavar="NAME[@VERSION]")
@click.option("--tool", "of_tool", is_flag=True, help="NAME is a tool, run on its own, not a workflow.")
@click.option("--agent", "of_agent", is_flag=True, help="NAME is an agent, run on its own, not a workflow.")
@click.option("--input", "input_", metavar="JSON|@FILE", callback=_parse_input, help="The run's input.")
@_starting_options
def run_command(
    session: _Session,
    ref: str,
    of_tool: bool,
    of_agent: bool,
    input_: Any,
    idempotency_key: str | None,
    queue: str | None,
    wait: bool,
    follow: bool,
    require_worker: bool,
    output: str,
) -> None:
    """Start a run of a workflow (or, with --tool or --agent, of one tool or agent); print its id."""
    if wait and follow:
        raise click.UsageError("--wait and --follow exclude each other")
    if of_tool and of_agent:
        raise click.UsageError("--tool and --agent exclude each other")
    client = session.client
    run = client.start_run(
        workflow=None if of_tool or of_agent else ref,
        tool=ref if of_tool else None,
        agent=ref if of_agent else None,
        input=input_,
        idempotency_key=idempotency_key,
        queue=queue,
        require_worker=require_worker,
    )
    _show_started(client, run, wait=wait, follow=follow, output=output)


def _show_started(client: Client, started: StartedRun, *, wait: bool, follow: bool, output: str) -> None:
    """Print a run just started: its id (or the API's answer), or with `wait` / `follow` the run once it
    ended (exit 1 unless it succeeded)."""
    unserved = {warning.queue for warning in started.warnings if warning.type == "no-worker"}
    for name in sorted(unserved):
        click.echo(f"af: warning: {_no_worker(name)}", err=True)
    if not (wait or follow):
        if output == "json":
            _print_json(started)
        else:
            click.echo(started.id)
        return
    if follow:
        run = _follow(client, started.id, output)
    else:
        with _progress(f"waiting for run {started.id}", output):
            run = _wait(client, started.id)
    _print_run(run, output, one_line=follow)
    if run.state != "succeeded":
        raise click.exceptions.Exit(1)


@cli.group("runs")
def runs_group() -> None:
    """Runs: started workflows and tools."""


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_since(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """A time ago (`30s`, `15m`, `2h`, `7d`) or an ISO 8601 time (local unless it says); as an aware time."""
    if value is None:
        return None
    amount, unit = value[:-1], value[-1:]
    try:
        if amount.isdigit() and unit in _UNITS:
            return datetime.now(UTC) - timedelta(seconds=int(amount) * _UNITS[unit])
        moment = datetime.fromisoformat(value)
        return moment if moment.tzinfo is not None else moment.astimezone()
    except (ValueError, OverflowError):  # not a time, or none there can be
        raise click.BadParameter(
            f"{value!r}: expected a time ago (30s, 15m, 2h, 7d) or an ISO 8601 time", ctx, param
        ) from None


@runs_group.command("ls")
@click.option("--state", type=click.Choice(RUN_STATES), help="Only runs in this state.")
@click.option("--workflow", metavar="NAME[@VERSION]", help="Only runs of this workflow (version).")
@click.option(
    "--since", metavar="AGO|TIME", callback=_parse_since, help="Only runs created since: 2h, 7d, 2026-12-01T09:00."
)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most N runs.")
@click.option("--cursor", metavar="CURSOR", help="The page after the one that printed this cursor.")
@_output_option
@_pass_session
def runs_ls(
    session: _Session,
    state: str | None,
    workflow: str | None,
    since: datetime | None,
    limit: int,
    cursor: str | None,
    output: str,
) -> None:
    """List the newest runs, a page at a time."""
    page = session.client.list_runs(state=state, limit=limit, cursor=cursor, workflow=workflow, since=since)
    if output == "json":
        _print_json(page)
        return
    _print_table(
        ["ID", "TARGET", "STATE", "CREATED", "DURATION"],
        (
            [run.id, run.target, run.state, _when(run.created_at), _duration(run.created_at, run.finished_at)]
            for run in page.items
        ),
    )
    if page.next_cursor:
        # On stderr, so that the table alone goes down a pipe.
        click.echo(f"more: the same command with --cursor {page.next_cursor}", err=True)


@runs_group.command("get")
@click.argument("run_id", metavar="ID")
@click.option("--transcript", is_flag=True, help="An agent run's turns: messages, tool calls, tokens and cost.")
@click.option("--step", metavar="NAME", help="With --transcript: the agent step NAME of a workflow's run.")
@_output_option
@_pass_session
def runs_get(session: _Session, run_id: str, transcript: bool, step: str | None, output: str) -> None:
    """Show a run with its tasks (or an agent run's transcript)."""
    if not transcript:
        _print_run(session.client.get_run(run_id), output)
    elif output == "json":
        _print_json(session.client.get_transcript(run_id, step))
    else:
        _print_transcript(session.client.get_transcript(run_id, step))


def _print_transcript(transcript: Transcript) -> None:
    """Turn by turn: what came in, what the model said, what each call it asked for gave back."""
    for turn in transcript.turns:
        cost = f"${turn.usage.cost_usd:.6f}"
        said = f"{turn.usage.input_tokens} in / {turn.usage.output_tokens} out tokens, {cost}"
        click.echo(f"turn {turn.turn}  {turn.state}  {turn.model or ''}  {said}")
        for message in turn.messages:
            click.echo(f"  {message.get('role')}: {_short(message.get('content'), width=500)}")
        if turn.answer:
            click.echo(f"  assistant: {_short(turn.answer.get('content'), width=500)}")
        for call in turn.tool_calls:
            approval = call.approval
            decided = f" approval {approval.state} {json.dumps(approval.decision)}" if approval else ""
            click.echo(f"  -> {call.tool} {json.dumps(call.arguments)} [{call.state}{decided}]")
            click.echo(f"     = {_short(call.result, width=500)}")
    usage = transcript.usage
    click.echo(
        f"run {transcript.run_id}  {transcript.state}  {usage.turns} turns, {usage.model_calls} model "
        f"calls, {usage.input_tokens} in / {usage.output_tokens} out tokens, ${usage.cost_usd:.6f}"
    )


@runs_group.command("rerun")
@click.argument("run_id", metavar="ID")
@_starting_options
def runs_rerun(
    session: _Session,
    run_id: str,
    idempotency_key: str | None,
    queue: str | None,
    wait: bool,
    follow: bool,
    require_worker: bool,
    output: str,
) -> None:
    """Start a new run of run ID's workflow, tool or agent, at the same version, with the same input; print
    its id."""
    if wait and follow:
        raise click.UsageError("--wait and --follow exclude each other")
    client = session.client
    earlier = client.get_run(run_id)
    run = client.start_run(
        workflow=earlier.workflow,
        tool=earlier.tool,
        agent=earlier.agent,
        input=earlier.input,
        idempotency_key=idempotency_key,
        queue=queue,
        require_worker=require_worker,
    )
    _show_started(client, run, wait=wait, follow=follow, output=output)


@cli.command("logs")
@click.argument("run_id", metavar="ID")
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Keep printing events until the run finishes, and what its tools write to stderr as they write it.",
)
@_output_option
@_pass_session
def logs_command(session: _Session, run_id: str, follow: bool, output: str) -> None:
    """Print a run's events, each with the tail of its tool's stderr."""
    printer = _EventPrinter(output)
    for event in session.client.events(run_id, idle_timeout=None if follow else IDLE_LOG_SECONDS, logs=follow):
        printer(event)


@cli.command("cancel")
@click.argument("run_id", metavar="ID")
@_output_option
@_pass_session
def cancel_command(session: _Session, run_id: str, output: str) -> None:
    """Cancel a run."""
    run = session.client.cancel_run(run_id)
    if output == "json":
        _print_json(run)
    else:
        click.echo(f"run {run.id}: {run.state}")


@cli.command("signal")
@click.argument("run_id", metavar="ID")
@click.argument("name", metavar="NAME")
@click.option("--data", metavar="JSON|@FILE", callback=_parse_input, help="What the signal carries.")
@_output_option
@_pass_session
def signal_command(session: _Session, run_id: str, name: str, data: Any, output: str) -> None:
    """Send signal NAME to a run waiting for it (an approval, say)."""
    answer = session.client.signal_run(run_id, name, data)
    if output == "json":
        _print_json(answer)
    else:
        click.echo(f"run {answer.run_id}: signal {answer.signal} taken by step {answer.step}")


@cli.group("workers")
def workers_group() -> None:
    """The live worker fleet."""


@workers_group.command("ls")
@_output_option
@_pass_session
def workers_ls(session: _Session, output: str) -> None:
    """List the live workers."""
    workers = session.client.list_workers()
    if output == "json":
        _print_json({"items": workers})
        return
    _print_table(
        ["ID", "QUEUES", "CONCURRENCY", "IN-FLIGHT", "SANDBOX", "HEARTBEAT"],
        (
            [
                worker.id,
                ",".join(worker.queues),
                str(worker.concurrency),
                str(worker.in_flight),
                worker.sandbox,
                _age(worker.last_heartbeat),
            ]
            for worker in workers
        ),
    )


@cli.group("queues")
def queues_group() -> None:
    """Back-pressure: in-flight limits and priorities of the tenant's queues."""


@queues_group.command("ls")
@_output_option
@_pass_session
def queues_ls(session: _Session, output: str) -> None:
    """List the queues with their limits, priorities, tasks in flight, tasks held, and tasks waiting for a
    worker on the bus (DEPTH) with the age of the oldest (OLDEST)."""
    _print_queues(session.client.list_queues(), output)


@queues_group.command("set")
@click.argument("queue", metavar="QUEUE")
@click.option("--max-in-flight", type=click.IntRange(min=1), help="Tasks on the bus at once (default: no limit).")
@click.option("--priority", type=click.IntRange(0, 9), default=0, show_default=True, help="Higher is released first.")
@_output_option
@_pass_session
def queues_set(session: _Session, queue: str, max_in_flight: int | None, priority: int, output: str) -> None:
    """Set QUEUE's in-flight limit and priority."""
    _print_queues(session.client.configure_queue(queue, max_in_flight, priority), output)


@queues_group.command("limit")
@click.option("--max-in-flight", type=click.IntRange(min=1), help="Over all queues (default: the platform's).")
@_output_option
@_pass_session
def queues_limit(session: _Session, max_in_flight: int | None, output: str) -> None:
    """Set the tenant's in-flight limit over all of its queues."""
    _print_queues(session.client.configure_limits(max_in_flight), output)


def _print_queues(answer: models.Queues, output: str) -> None:
    if output == "json":
        _print_json(answer)
        return
    limit = answer.max_in_flight
    click.echo(f"tenant: {answer.in_flight} in flight, {answer.held} held, limit {'none' if limit is None else limit}")
    _print_table(
        ["QUEUE", "MAX-IN-FLIGHT", "PRIORITY", "IN-FLIGHT", "HELD", "DEPTH", "OLDEST"],
        (
            [
                queue.queue,
                "-" if queue.max_in_flight is None else str(queue.max_in_flight),
                str(queue.priority),
                str(queue.in_flight),
                str(queue.held),
                str(queue.depth),
                f"{queue.oldest_age_seconds:.1f}s",
            ]
            for queue in answer.items
        ),
    )


# ---- login, tenants and keys ----------------------------------------------------------------------


@cli.command("login")
@click.option(
    "--api-key", metavar="KEY", help="The API key to log in with (default: --token, $AF_TOKEN or the stack's)."
)
@_pass_session
def login_command(session: _Session, api_key: str | None) -> None:
    """Exchange an API key for an access and a refresh token, stored for this API (mode 0600); later
    commands use them and refresh them when they expire."""
    path = session.client.login(api_key)
    click.echo(f"logged in to {session.client.settings.api_url}; tokens stored in {path}")


@cli.command("logout")
@_pass_session
def logout_command(session: _Session) -> None:
    """End the login `af login` stored for this API: its refresh token is revoked through the API (no token
    of that login works any more), and the tokens are removed (later commands use --token, $AF_TOKEN or the
    local stack's key). An API that cannot be reached cannot revoke it: the tokens are removed all the same."""
    api_url = session.client.settings.api_url
    try:
        revoked = session.client.logout()
    except TransportError as exc:  # a stack gone for good must not keep its login stored
        forget_login(api_url)
        click.echo(f"af: warning: the login could not be revoked: {exc}", err=True)
        revoked = models.Revoked(revoked=False)
    if revoked is None:
        click.echo(f"no login was stored for {api_url}")
    elif revoked.revoked:
        click.echo(f"logged out of {api_url}: its login revoked, its tokens removed from {login_file()}")
    else:
        click.echo(f"logged out of {api_url}; its tokens removed from {login_file()}")


@cli.group("tenants")
def tenants_group() -> None:
    """Tenants and their API keys (platform admins; tenant admins make keys of their own tenant)."""


@tenants_group.command("ls")
@_output_option
@_pass_session
def tenants_ls(session: _Session, output: str) -> None:
    """List the tenants."""
    tenants = session.client.list_tenants()
    if output == "json":
        _print_json({"items": tenants})
        return
    _print_table(
        ["NAME", "MAX-RUNS", "REQUESTS/S", "CREATED"],
        (
            [
                tenant.name,
                str(tenant.max_concurrent_runs or "default"),
                str(tenant.requests_per_second or "default"),
                _when(tenant.created_at),
            ]
            for tenant in tenants
        ),
    )


def _print_key(key: models.NewKey) -> None:
    click.echo(f"{key.role} key of tenant {key.tenant} (shown only now): {key.key}")


@tenants_group.command("create")
@click.argument("name")
@click.option("--admin-key/--no-admin-key", default=True, show_default=True, help="Also make a tenant-admin key.")
@click.option("--max-concurrent-runs", type=click.IntRange(min=0), help="Unfinished runs at most.")
@click.option("--requests-per-second", type=click.FloatRange(min=0, min_open=True), help="Request rate at most.")
@_output_option
@_pass_session
def tenants_create(
    session: _Session,
    name: str,
    admin_key: bool,
    max_concurrent_runs: int | None,
    requests_per_second: float | None,
    output: str,
) -> None:
    """Create tenant NAME, with its first tenant-admin API key."""
    tenant = session.client.create_tenant(
        name, admin_key=admin_key, max_concurrent_runs=max_concurrent_runs, requests_per_second=requests_per_second
    )
    if output == "json":
        _print_json(tenant)
        return
    click.echo(f"tenant {tenant.name} created")
    if tenant.admin_key:
        _print_key(tenant.admin_key)


@tenants_group.command("add-key")
@click.argument("tenant")
@click.option("--role", required=True, help="tenant-admin, developer, operator or viewer.")
@_output_option
@_pass_session
def tenants_add_key(session: _Session, tenant: str, role: str, output: str) -> None:
    """Make an API key of TENANT with a role."""
    key = session.client.create_key(tenant, role)
    if output == "json":
        _print_json(key)
    else:
        _print_key(key)


@cli.group("keys")
def keys_group() -> None:
    """API keys: list them, revoke them (tenant admins of their tenant, platform admins)."""


@keys_group.command("ls")
@click.option("--tenant", metavar="TENANT", help="Another tenant's keys (platform admins).")
@click.option("--all", "include_revoked", is_flag=True, help="Also the revoked keys.")
@_output_option
@_pass_session
def keys_ls(session: _Session, tenant: str | None, include_revoked: bool, output: str) -> None:
    """List the API keys of your tenant by id (the key's prefix); the keys themselves are never shown again."""
    items = session.client.list_keys(tenant, include_revoked=include_revoked)
    if output == "json":
        _print_json({"items": items})
        return
    _print_table(
        ["ID", "TENANT", "ROLE", "CREATED", "REVOKED"],
        ([key.id, key.tenant, key.role, _when(key.created_at), _when(key.revoked_at)] for key in items),
    )


@keys_group.command("revoke")
@click.argument("key_id", metavar="ID")
@_output_option
@_pass_session
def keys_revoke(session: _Session, key_id: str, output: str) -> None:
    """Revoke API key ID: it fails authentication at once, and so does every token got with it."""
    key = session.client.revoke_key(key_id)
    if output == "json":
        _print_json(key)
    else:
        click.echo(f"key {key.id} ({key.role} of tenant {key.tenant}) revoked")


@cli.command("init")
@click.argument("directory", metavar="[DIR]", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--template",
    type=click.Choice(sorted(TEMPLATES)),
    default=DEFAULT_TEMPLATE,
    show_default=True,
    help="default: a tool with its test, a workflow and an agent; tool: the tool and its test alone.",
)
def init_command(directory: Path, template: str) -> None:
    """Start a project in DIR (default: here), which must be new or empty: files to register with `af`
    and a README with the commands that run them."""
    written = scaffold(directory, template)
    click.echo(f"{template} project in {directory}:")
    for path in written:
        click.echo(f"  {path}")
    click.echo(f"next: cd {directory} and follow README.md (af up --detach, af tool register ...)")


# ---- server commands ------------------------------------------------------------------------------


def _exec_server(command: str, module: str, args: Sequence[str]) -> None:
    # Only the top-level package is looked up: finding a submodule would import its parent, and this
    # process must never import the server.
    if find_spec(module.partition(".")[0]) is None:
        raise AgentFlowError(f"{command} needs the AgentFlow server package (pip install agentflow-server)")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", module, *args])


def _server_command(name: str, module: str, *lead: str, summary: str, command: str = "") -> click.Command:
    """A command that hands all its arguments, `--help` included, to `python -m module *lead`."""

    @click.command(
        name,
        help=summary,
        context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
        add_help_option=False,
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def server_command(args: tuple[str, ...]) -> None:
        _exec_server(command or name, module, [*lead, *args])

    return server_command


for _name, _summary in [
    ("up", "Start the embedded stack on this machine."),
    ("down", "Stop the embedded stack."),
    ("status", "Show the embedded stack's processes."),
    ("doctor", "Check that this machine has what the stack needs."),
]:
    cli.add_command(_server_command(_name, "control_plane.stack", _name, summary=_summary))

_worker_group = click.Group("worker", help="The data-plane process.")
_worker_group.add_command(
    _server_command("start", "control_plane.stack", "worker", summary="Start a worker process.", command="worker start")
)
cli.add_command(_worker_group)

_control_plane_group = click.Group("control-plane", help="The control plane process.")
_control_plane_group.add_command(
    _server_command("start", "control_plane", summary="Start a control plane.", command="control-plane start")
)
cli.add_command(_control_plane_group)

cli.add_command(_server_command("bench", "bench", summary="Run the benchmarks."))


if __name__ == "__main__":
    main()
