"""The one request layer under both clients: each API operation as a `Call` (what to send, how to decode
the answer into the typed objects of `_models`), and the reading of a run's event stream. Nothing here sends
anything."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import msgspec
from httpx_sse import ServerSentEvent

from ._config import Settings
from ._errors import TransportError, WaitTimeout, raise_for_problem
from ._login import TokenAuth
from .models import (
    Agent,
    AuditEntry,
    Event,
    Health,
    Key,
    MasterKeyRotation,
    NewKey,
    Page,
    Queues,
    RefusedRun,
    Registered,
    Revoked,
    Run,
    RunDetail,
    Secret,
    Signalled,
    StartedRun,
    Tenant,
    Tokens,
    Tool,
    Transcript,
    Worker,
    Workflow,
    decode_as,
)

T = TypeVar("T")
JSON = dict[str, Any]
"""A document the SDK does not type (yet): the model gateway's deployments, usage, budgets and calls, and
what is sent."""


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and the decoding of its answer."""

    method: str
    path: str
    decode: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    body: Any = None
    headers: dict[str, str] | None = None
    stored_login: bool = True
    """Sent with the stored login's tokens when the client has one (False: never, not even refreshed)."""

    def request_args(self) -> dict[str, Any]:
        """Keyword arguments for `httpx.Client.request` and `httpx.AsyncClient.request` alike."""
        args = {
            "method": self.method,
            "url": self.path,
            "params": self.params,
            "json": self.body,
            "headers": self.headers,
        }
        if not self.stored_login:
            args["auth"] = None  # httpx: no auth for this request, the client's notwithstanding
        return args


def http_options(settings: Settings, timeout: float) -> dict[str, Any]:
    """Keyword arguments for `httpx.Client` and `httpx.AsyncClient` alike."""
    if settings.token is None and settings.login is not None:
        return {"base_url": settings.api_url, "auth": TokenAuth(settings.login), "timeout": timeout}
    headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
    return {"base_url": settings.api_url, "headers": headers, "timeout": timeout}


@contextmanager
def reaching(api_url: str) -> Iterator[None]:
    """Turn httpx's connection failures into our `TransportError`, which names the API's URL."""
    try:
        yield
    except httpx.TransportError as exc:
        raise TransportError(api_url, exc) from exc


def _answer(response: httpx.Response) -> str:
    return f"the API's answer (HTTP {response.status_code}) to {response.request.method} {response.request.url.path}"


def _as(kind: type[T]) -> Callable[[httpx.Response], T]:
    """Decode a successful answer as a `kind`; raise the problem of any other."""

    def decode(response: httpx.Response) -> T:
        raise_for_problem(response)
        return decode_as(kind, response.content, _answer(response))

    return decode


_json = _as(JSON)


class _Items(msgspec.Struct, Generic[T], frozen=True):
    items: list[T]


def _items(kind: type[T]) -> Callable[[httpx.Response], list[T]]:
    """Decode a listing (`{"items": [...]}`) as the list of its items."""
    decode = _as(_Items[kind])  # type: ignore[valid-type]

    def items(response: httpx.Response) -> list[T]:
        listed: list[T] = decode(response).items
        return listed

    return items


def _registered(kind: type[T]) -> Callable[[httpx.Response], Registered[T]]:
    """Decode what a registration stored, and whether it created it (201) or found it (200)."""
    decode = _as(kind)

    def registered(response: httpx.Response) -> Registered[T]:
        return Registered(value=decode(response), created=response.status_code == httpx.codes.CREATED)

    return registered


def _batch(response: httpx.Response) -> list[StartedRun | RefusedRun]:
    """Each item of a batch's answer as the run started, or the problem it was refused with."""
    what = _answer(response)
    answers: list[StartedRun | RefusedRun] = []
    for item in _items(JSON)(response):
        encoded = msgspec.json.encode(item)
        answers.append(
            decode_as(RefusedRun, encoded, what) if "problem" in item else decode_as(StartedRun, encoded, what)
        )
    return answers


def _segment(value: str) -> str:
    return quote(value, safe="")


def register_tool(spec: JSON) -> Call[Registered[Tool]]:
    """Register a tool version (`runtime.files` holding contents); `.created` is False when the same
    version with the same content already existed."""
    return Call("POST", "/v1/tools", _registered(Tool), body=spec)


def get_tool(name: str, version: str = "latest") -> Call[Tool]:
    """One version of a tool."""
    return Call("GET", f"/v1/tools/{_segment(name)}/versions/{_segment(version)}", _as(Tool))


def list_tools() -> Call[list[Tool]]:
    """The latest version of every tool of the tenant."""
    return Call("GET", "/v1/tools", _items(Tool))


def apply_workflow(spec: JSON) -> Call[Registered[Workflow]]:
    """Store a workflow version; `.created` is False when the same version with the same content already
    existed."""
    return Call("POST", "/v1/workflows", _registered(Workflow), body=spec)


def get_workflow(name: str, version: str = "latest") -> Call[Workflow]:
    """One version of a workflow."""
    return Call("GET", f"/v1/workflows/{_segment(name)}/versions/{_segment(version)}", _as(Workflow))


def list_workflows() -> Call[list[Workflow]]:
    """The latest version of every workflow of the tenant."""
    return Call("GET", "/v1/workflows", _items(Workflow))


def apply_agent(spec: JSON) -> Call[Registered[Agent]]:
    """Store an agent version (its tools pinned to versions); `.created` is False when the same version with
    the same content already existed."""
    return Call("POST", "/v1/agents", _registered(Agent), body=spec)


def get_agent(name: str, version: str = "latest") -> Call[Agent]:
    """One version of an agent."""
    return Call("GET", f"/v1/agents/{_segment(name)}/versions/{_segment(version)}", _as(Agent))


def list_agents() -> Call[list[Agent]]:
    """The latest version of every agent of the tenant."""
    return Call("GET", "/v1/agents", _items(Agent))


def apply_model(spec: JSON, *, platform: bool = False) -> Call[Registered[JSON]]:
    """Apply a model deployment (`platform`: one every tenant may use; platform admins); `.created` is False
    when it replaced (or matched) one of the same name; the answer's `outcome` says which."""
    params = {"scope": "platform"} if platform else None
    return Call("POST", "/v1/models", _registered(JSON), body=spec, params=params)


def list_models() -> Call[JSON]:
    """The model deployments the tenant may call, each with its health: `{"items": [...], "tiers": {...}}`
    (`tiers`: each tier's failover chain, in order)."""
    return Call("GET", "/v1/models", _json)


def delete_model(name: str, *, platform: bool = False) -> Call[JSON]:
    """Remove a model deployment of the tenant (`platform`: of the platform)."""
    params = {"scope": "platform"} if platform else None
    return Call("DELETE", f"/v1/models/{_segment(name)}", _json, params=params)


def set_secret(name: str, value: str, *, platform: bool = False) -> Call[Registered[Secret]]:
    """Set the tenant's secret `name` to `value`, or replace it (`platform`: the platform's; platform admins).
    The answer holds its name, version and times, never the value; `.created` is False when it replaced one."""
    params = {"scope": "platform"} if platform else None
    return Call("POST", "/v1/secrets", _registered(Secret), body={"name": name, "value": value}, params=params)


def list_secrets(*, platform: bool = False) -> Call[list[Secret]]:
    """The tenant's secrets (`platform`: the platform's): names, versions and times, never values."""
    params = {"scope": "platform"} if platform else None
    return Call("GET", "/v1/secrets", _items(Secret), params=params)


def delete_secret(name: str, *, platform: bool = False) -> Call[JSON]:
    """Remove the tenant's secret `name` (`platform`: the platform's)."""
    params = {"scope": "platform"} if platform else None
    return Call("DELETE", f"/v1/secrets/{_segment(name)}", _json, params=params)


def rotate_master_key(new_key: str | None = None) -> Call[MasterKeyRotation]:
    """Re-wrap every secret under a new master key (platform admins): `new_key` (base64 of 32 bytes) when the
    control plane reads its key from `AF_MASTER_KEY`; else it makes one and replaces its key file.
    Answers how many secrets were re-wrapped and the ids of both keys (never the keys)."""
    body = {} if new_key is None else {"new_key": new_key}
    return Call("POST", "/v1/secrets:rotate-master", _as(MasterKeyRotation), body=body)


def usage(*, group_by: str = "model", since: str | None = None, until: str | None = None) -> Call[JSON]:
    """The tenant's metered model usage in `[since, until)` (ISO dates or dates and times), summed per
    `group_by` (day, model, tier, run, workflow, agent): `{"items": [...], "total": {...}}`."""
    params = {k: v for k, v in {"group_by": group_by, "since": since, "until": until}.items() if v is not None}
    return Call("GET", "/v1/usage", _json, params=params)


def get_budgets() -> Call[JSON]:
    """The tenant's budgets (`None`: no limit) and what this month has spent (`month`)."""
    return Call("GET", "/v1/budgets", _json)


def set_budgets(
    *,
    monthly_tokens: int | None = None,
    monthly_cost_usd: float | None = None,
    run_tokens: int | None = None,
    run_cost_usd: float | None = None,
) -> Call[JSON]:
    """Replace the tenant's budgets (tenant admins): a limit left out is no limit."""
    limits = {
        "monthly_tokens": monthly_tokens,
        "monthly_cost_usd": monthly_cost_usd,
        "run_tokens": run_tokens,
        "run_cost_usd": run_cost_usd,
    }
    return Call("PUT", "/v1/budgets", _json, body={k: v for k, v in limits.items() if v is not None})


def llm_calls(run_id: str | None = None, *, limit: int = 100) -> Call[list[JSON]]:
    """The tenant's model calls, newest first, or one run's in order, each with its attempts, tokens, cost."""
    params: dict[str, Any] = {"limit": limit}
    if run_id is not None:
        params["run_id"] = run_id
    return Call("GET", "/v1/llm/calls", _items(JSON), params=params)


def start_run(
    *,
    workflow: str | None = None,
    tool: str | None = None,
    agent: str | None = None,
    input: Any = None,
    idempotency_key: str | None = None,
    queue: str | None = None,
    require_worker: bool = False,
) -> Call[StartedRun]:
    """Start a run of a workflow, of a single tool or of a single agent, each named `name[@version]`;
    `created` is False when `idempotency_key` matched an existing run, which is returned instead, in its
    current `state`. The answer's `warnings` name each queue of the run's first tasks that no live worker
    serves; `require_worker=True` refuses the run instead (`Conflict`, type `no-worker`)."""
    targets = {"workflow": workflow, "tool": tool, "agent": agent}
    named = {kind: ref for kind, ref in targets.items() if ref is not None}
    if len(named) != 1:
        raise ValueError("start_run takes exactly one of workflow=, tool= and agent=")
    body: JSON = dict(named)
    if input is not None:
        body["input"] = input
    if queue is not None:
        body["queue"] = queue
    if require_worker:
        body["require_worker"] = True
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
    return Call("POST", "/v1/runs", _as(StartedRun), body=body, headers=headers)


def start_runs(items: list[JSON]) -> Call[list[StartedRun | RefusedRun]]:
    """Start up to 1,000 runs in one request; each item is `{"workflow", "tool" or "agent", "input",
    "idempotency_key"?}`. Answers, in the same order, each run started or the problem it was refused with."""
    return Call("POST", "/v1/runs:batch", _batch, body={"runs": items})


def get_run(run_id: str) -> Call[RunDetail]:
    """A run with its tasks, model usage and signal waits; `run_id` may be the start of its id."""
    return Call("GET", f"/v1/runs/{_segment(run_id)}", _as(RunDetail))


def get_transcript(run_id: str, step: str | None = None) -> Call[Transcript]:
    """An agent run's turns (or those of its agent step `step`, in a workflow's run): messages, answers, tool
    calls and their results, tokens and cost."""
    params = {"step": step} if step is not None else None
    return Call("GET", f"/v1/runs/{_segment(run_id)}/transcript", _as(Transcript), params=params)


def list_runs(
    state: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    *,
    workflow: str | None = None,
    since: datetime | str | None = None,
) -> Call[Page[Run]]:
    """One page of runs, newest first; only those of `workflow`
    (`NAME` or `NAME@VERSION`) and created at or after `since` (an aware datetime, or ISO 8601 text) if given.
    Pass `next_cursor` back as `cursor`, with the same filters, for the next page."""
    if isinstance(since, datetime):
        since = since.isoformat()
    params = {"state": state, "limit": limit, "cursor": cursor, "workflow": workflow, "since": since}
    return Call("GET", "/v1/runs", _as(Page[Run]), params={k: v for k, v in params.items() if v is not None})


def cancel_run(run_id: str) -> Call[Run]:
    """Cancel a run; answers it, cancelled. Raises `Conflict` when it has already finished."""
    return Call("POST", f"/v1/runs/{_segment(run_id)}/cancel", _as(Run))


def signal_run(run_id: str, name: str, data: Any = None) -> Call[Signalled]:
    """Send signal `name` with `data` to a run waiting for it; answers the step that took it. Raises
    `Conflict` when the run is not waiting for that signal now."""
    return Call("POST", f"/v1/runs/{_segment(run_id)}/signal", _as(Signalled), body={"name": name, "data": data})


def list_workers() -> Call[list[Worker]]:
    """The live workers of the tenant."""
    return Call("GET", "/v1/workers", _items(Worker))


def list_queues() -> Call[Queues]:
    """The tenant's in-flight limit and load, and per queue its limit, priority, tasks in flight and held."""
    return Call("GET", "/v1/queues", _as(Queues))


def configure_queue(queue: str, max_in_flight: int | None = None, priority: int = 0) -> Call[Queues]:
    """Set a queue's in-flight limit (None: no limit of its own) and its priority (0-9) among the
    tenant's queues; answers like `list_queues`."""
    body = {"max_in_flight": max_in_flight, "priority": priority}
    return Call("PUT", f"/v1/queues/{_segment(queue)}", _as(Queues), body=body)


def configure_limits(max_in_flight: int | None) -> Call[Queues]:
    """Set the tenant's in-flight limit over all its queues (None: the platform's ceiling)."""
    return Call("PUT", "/v1/limits", _as(Queues), body={"max_in_flight": max_in_flight})


def exchange_key(api_key: str) -> Call[Tokens]:
    """An access token and a refresh token for an API key."""
    return Call("POST", "/v1/auth/token", _as(Tokens), body={"api_key": api_key})


def revoke_login(refresh_token: str) -> Call[Revoked]:
    """End the login of `refresh_token`: it and every token of its login (each refresh token that replaced
    another, and their access tokens) stop working. `revoked` is False when it named no live login. The
    refresh token is the proof: the request carries no other (a stored login is not refreshed for it)."""
    body = {"refresh_token": refresh_token}
    return Call("POST", "/v1/auth/revoke", _as(Revoked), body=body, stored_login=False)


def list_tenants() -> Call[list[Tenant]]:
    """Every tenant (platform admins)."""
    return Call("GET", "/v1/tenants", _items(Tenant))


def create_tenant(
    name: str,
    *,
    admin_key: bool = True,
    max_concurrent_runs: int | None = None,
    requests_per_second: float | None = None,
) -> Call[Tenant]:
    """Create a tenant (platform admins); with `admin_key` the answer holds its first tenant-admin key under
    `admin_key`, shown this once."""
    body: JSON = {"name": name, "admin_key": admin_key}
    if max_concurrent_runs is not None:
        body["max_concurrent_runs"] = max_concurrent_runs
    if requests_per_second is not None:
        body["requests_per_second"] = requests_per_second
    return Call("POST", "/v1/tenants", _as(Tenant), body=body)


def create_key(tenant: str, role: str) -> Call[NewKey]:
    """A new API key of `tenant` with `role`, shown this once."""
    return Call("POST", f"/v1/tenants/{_segment(tenant)}/keys", _as(NewKey), body={"role": role})


def list_keys(tenant: str | None = None, *, include_revoked: bool = False) -> Call[list[Key]]:
    """The API keys of the caller's tenant (platform admins may name another), by id (the key's prefix): never
    the key itself."""
    params: dict[str, Any] = {"include_revoked": include_revoked}
    if tenant is not None:
        params["tenant"] = tenant
    return Call("GET", "/v1/keys", _items(Key), params=params)


def revoke_key(key_id: str) -> Call[Key]:
    """Revoke the API key `key_id` (its prefix) and every token got with it; answers the key as now stored."""
    return Call("DELETE", f"/v1/keys/{_segment(key_id)}", _as(Key))


def list_audit(limit: int = 100, tenant: str | None = None) -> Call[list[AuditEntry]]:
    """The audit trail, newest first (tenant admins; platform admins may name another tenant)."""
    params: dict[str, Any] = {"limit": limit} if tenant is None else {"limit": limit, "tenant": tenant}
    return Call("GET", "/v1/audit", _items(AuditEntry), params=params)


def health() -> Call[Health]:
    """Liveness of the API (`status` `ok`), and the installation's id."""
    return Call("GET", "/healthz", _as(Health))


class EventFeed:
    """Where a client is in a run's event stream, across reconnections.

    The server closes the stream after the run's final event, and answers 204 No Content to a resumption
    of a finished run with nothing left; a stream that ends earlier (a restart, a proxy) is resumed from the
    last event seen, as SSE intends, as long as each connection moves that event on: a server that ends
    streams without news must not make us loop. While a step runs the server sends keep-alives (messages
    without data, which carry the last event id): they are no events, and they do not stop `idle_timeout`.
    """

    def __init__(self, run_id: str, last_event_id: str | None, idle_timeout: float | None, logs: bool) -> None:
        self.run_id = run_id
        self.last_event_id = last_event_id
        self.idle_timeout = idle_timeout
        self.logs = logs
        """Ask for the tools' live stderr too (`log` events, which carry no id and so never move the feed)."""
        self.open = True
        self._last_news = time.monotonic()

    def stream_args(self, timeout: httpx.Timeout) -> dict[str, Any]:
        """Keyword arguments for `stream()` of either httpx client, whose `timeout` it adapts: a live
        stream may stay quiet for as long as a step runs, so reads wait for `idle_timeout` only."""
        headers = {"Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        return {
            "method": "GET",
            "url": f"/v1/runs/{_segment(self.run_id)}/events",
            "params": {"logs": "true"} if self.logs else None,
            "headers": headers,
            "timeout": httpx.Timeout(
                connect=timeout.connect, read=self.idle_timeout, write=timeout.write, pool=timeout.pool
            ),
        }

    def ended(self, response: httpx.Response) -> bool:
        """Whether the answer to a connection says that the run has finished and nothing is left."""
        if response.status_code == httpx.codes.NO_CONTENT:
            self.open = False
        return not self.open

    def accept(self, sse: ServerSentEvent) -> Event | None:
        """Decode one event and close the feed when it is the run's final one; None for a keep-alive."""
        if not sse.data:
            if self.idle_timeout is not None and time.monotonic() - self._last_news >= self.idle_timeout:
                self.open = False
            return None
        self._last_news = time.monotonic()
        event = decode_as(Event, sse.data, f"an event of the stream of run {self.run_id}")
        self.last_event_id = sse.id or self.last_event_id
        if event.final:
            self.open = False
        return event

    @contextmanager
    def connection(self) -> Iterator[None]:
        """Wrap one connection: decide from how it ended whether the feed goes on."""
        resumed_from = self.last_event_id
        try:
            yield
        except httpx.ReadTimeout:
            if self.idle_timeout is None:
                raise
            self.open = False
        except (httpx.RemoteProtocolError, httpx.ReadError):
            if self.last_event_id == resumed_from:
                raise
        else:
            if self.last_event_id == resumed_from:
                self.open = False


class RunWait:
    """The deadline of a wait for a run, and its verdict on the run read at the end."""

    def __init__(self, run_id: str, timeout: float | None) -> None:
        self.run_id = run_id
        self.timeout = timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout

    def expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def result(self, run: RunDetail) -> RunDetail:
        """The run when it has finished; `WaitTimeout` otherwise."""
        if run.finished:
            return run
        waited = f" after {self.timeout:g} s" if self.timeout is not None else ""
        raise WaitTimeout(f"run {self.run_id} is still {run.state}{waited}")
