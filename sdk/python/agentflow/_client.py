"""`Client` and `AsyncClient`: the operations are built once in `_api` and bound to both clients here,
which differ only in how they send a request and read a stream. Both answer with the typed objects of
`_models` (`Run`, `Task`, `Event`, `Page`...)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import httpx
from httpx_sse import EventSource

from . import _api
from ._api import Call, EventFeed, RunWait
from ._config import Settings
from ._errors import AgentFlowError, raise_for_problem
from ._login import Login, forget_login, load_login, save_login
from .models import Event, Revoked, Run, RunDetail

P = ParamSpec("P")
T = TypeVar("T")
M = TypeVar("M", bound=Callable[..., Any])


def _sync(build: Callable[P, Call[T]]) -> Callable[Concatenate[Client, P], T]:
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._send(build(*args, **kwargs))

    return _described(method, build)


def _async(build: Callable[P, Call[T]]) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._send(build(*args, **kwargs))

    return _described(method, build)


def _described(method: M, build: Callable[..., Any]) -> M:
    """Give a bound operation the name, doc and parameters of its `_api` builder (for help() and IDEs),
    but not the builder's return type: the method returns what the `Call` decodes."""
    functools.update_wrapper(method, build)
    signature = inspect.signature(build)
    self_ = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[self_, *signature.parameters.values()], return_annotation=inspect.Signature.empty
    )
    return method


class Client:
    """A blocking client of the AgentFlow HTTP API. Each operation answers with a typed object (a `Run`, a
    `Page[Run]`, a `Tool`...), frozen, with the API's field names as attributes; `document()` turns one back
    into the API's JSON.

    `api_url` and `token` override `AF_API_URL` / `AF_TOKEN` and the embedded stack's files (see
    `Settings.load`). `transport` replaces the network, e.g. with `httpx.MockTransport` in tests.
    Use it as a context manager, or call `close()`.
    """

    def __init__(
        self,
        api_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = Settings.load(api_url, token)
        self._http = httpx.Client(transport=transport, **_api.http_options(self.settings, timeout))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call[T]) -> T:
        with _api.reaching(self.settings.api_url):
            response = self._http.request(**call.request_args())
        return call.decode(response)

    register_tool = _sync(_api.register_tool)
    get_tool = _sync(_api.get_tool)
    list_tools = _sync(_api.list_tools)
    apply_workflow = _sync(_api.apply_workflow)
    get_workflow = _sync(_api.get_workflow)
    list_workflows = _sync(_api.list_workflows)
    apply_agent = _sync(_api.apply_agent)
    get_agent = _sync(_api.get_agent)
    list_agents = _sync(_api.list_agents)
    apply_model = _sync(_api.apply_model)
    list_models = _sync(_api.list_models)
    delete_model = _sync(_api.delete_model)
    set_secret = _sync(_api.set_secret)
    list_secrets = _sync(_api.list_secrets)
    delete_secret = _sync(_api.delete_secret)
    rotate_master_key = _sync(_api.rotate_master_key)
    usage = _sync(_api.usage)
    get_budgets = _sync(_api.get_budgets)
    set_budgets = _sync(_api.set_budgets)
    llm_calls = _sync(_api.llm_calls)
    start_run = _sync(_api.start_run)
    start_runs = _sync(_api.start_runs)
    get_run = _sync(_api.get_run)
    get_transcript = _sync(_api.get_transcript)
    list_runs = _sync(_api.list_runs)
    cancel_run = _sync(_api.cancel_run)
    signal_run = _sync(_api.signal_run)
    list_workers = _sync(_api.list_workers)
    list_queues = _sync(_api.list_queues)
    configure_queue = _sync(_api.configure_queue)
    configure_limits = _sync(_api.configure_limits)
    exchange_key = _sync(_api.exchange_key)
    revoke_login = _sync(_api.revoke_login)
    list_tenants = _sync(_api.list_tenants)
    create_tenant = _sync(_api.create_tenant)
    create_key = _sync(_api.create_key)
    list_keys = _sync(_api.list_keys)
    revoke_key = _sync(_api.revoke_key)
    list_audit = _sync(_api.list_audit)
    health = _sync(_api.health)

    def login(self, api_key: str | None = None) -> Path:
        """Exchange `api_key` (default: this client's token) for tokens and store them for this API, where
        later clients find and refresh them; returns the file."""
        # A stored login is no key: log in again with the key the settings would give without it.
        key = api_key or self.settings.token or Settings.load(self.settings.api_url, use_login=False).token
        if not key:
            raise AgentFlowError("no API key to log in with: pass one (af login --api-key KEY) or set AF_TOKEN")
        return save_login(Login.from_answer(self.settings.api_url, self.exchange_key(key)))

    def logout(self) -> Revoked | None:
        """End the login `login()` stored for this API: its refresh token is revoked through the API (so no
        token of that login works any more, wherever it was copied), then the stored tokens are removed.
        None when no login was stored; `revoked` False when the API knew it no more (revoked, or of another
        stack). If the API cannot be asked, the error is raised and the login stays stored."""
        login = load_login(self.settings.api_url)
        if login is None:
            return None
        revoked = self.revoke_login(login.refresh_token)
        forget_login(self.settings.api_url)
        return revoked

    def iter_runs(self, state: str | None = None, limit: int = 50) -> Iterator[Run]:
        """Every run, newest first, `limit` per request, following the cursors."""
        page = self.list_runs(state, limit)
        yield from page.items
        while page.next_cursor:
            page = self.list_runs(state, limit, page.next_cursor)
            yield from page.items

    def events(
        self,
        run_id: str,
        last_event_id: str | None = None,
        *,
        idle_timeout: float | None = None,
        logs: bool = False,
    ) -> Iterator[Event]:
        """The run's events (`Event`: `seq`, `type`, `at`, `data`) from after `last_event_id` (default: the
        first), live, until the run's final event, or until none came for `idle_timeout` seconds. With `logs`,
        also what its tools write to stderr while they run, as events of `type` `log` without a `seq`, whose
        `data` is `{"task_id", "step", "attempt", "seq", "text", "truncated"}`: what the last hour kept
        first, then as it comes (they never move `last_event_id`; a reconnection gives them again, their
        `data["seq"]` tells)."""
        feed = EventFeed(run_id, last_event_id, idle_timeout, logs)
        while feed.open:
            with (
                _api.reaching(self.settings.api_url),
                feed.connection(),
                self._http.stream(**feed.stream_args(self._http.timeout)) as response,
            ):
                if not response.is_success:
                    response.read()
                    raise_for_problem(response)
                if feed.ended(response):
                    return
                for sse in EventSource(response).iter_sse():
                    if (event := feed.accept(sse)) is not None:
                        yield event
                    if not feed.open:
                        return

    def wait_run(self, run_id: str, timeout: float | None = None) -> RunDetail:
        """The run once it has finished (with its tasks); `WaitTimeout` after `timeout` seconds."""
        wait = RunWait(run_id, timeout)
        for _ in self.events(run_id, idle_timeout=timeout):
            if wait.expired():
                break
        return wait.result(self.get_run(run_id))


class AsyncClient:
    """The asyncio twin of `Client`: the same operations, awaited, with the same typed answers; `events` is
    an async iterator.

    Use it as an async context manager, or call `aclose()`.
    """

    def __init__(
        self,
        api_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = Settings.load(api_url, token)
        self._http = httpx.AsyncClient(transport=transport, **_api.http_options(self.settings, timeout))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        with _api.reaching(self.settings.api_url):
            response = await self._http.request(**call.request_args())
        return call.decode(response)

    register_tool = _async(_api.register_tool)
    get_tool = _async(_api.get_tool)
    list_tools = _async(_api.list_tools)
    apply_workflow = _async(_api.apply_workflow)
    get_workflow = _async(_api.get_workflow)
    list_workflows = _async(_api.list_workflows)
    apply_agent = _async(_api.apply_agent)
    get_agent = _async(_api.get_agent)
    list_agents = _async(_api.list_agents)
    apply_model = _async(_api.apply_model)
    list_models = _async(_api.list_models)
    delete_model = _async(_api.delete_model)
    set_secret = _async(_api.set_secret)
    list_secrets = _async(_api.list_secrets)
    delete_secret = _async(_api.delete_secret)
    rotate_master_key = _async(_api.rotate_master_key)
    usage = _async(_api.usage)
    get_budgets = _async(_api.get_budgets)
    set_budgets = _async(_api.set_budgets)
    llm_calls = _async(_api.llm_calls)
    start_run = _async(_api.start_run)
    start_runs = _async(_api.start_runs)
    get_run = _async(_api.get_run)
    get_transcript = _async(_api.get_transcript)
    list_runs = _async(_api.list_runs)
    cancel_run = _async(_api.cancel_run)
    signal_run = _async(_api.signal_run)
    list_workers = _async(_api.list_workers)
    list_queues = _async(_api.list_queues)
    configure_queue = _async(_api.configure_queue)
    configure_limits = _async(_api.configure_limits)
    exchange_key = _async(_api.exchange_key)
    revoke_login = _async(_api.revoke_login)
    list_tenants = _async(_api.list_tenants)
    create_tenant = _async(_api.create_tenant)
    create_key = _async(_api.create_key)
    list_keys = _async(_api.list_keys)
    revoke_key = _async(_api.revoke_key)
    list_audit = _async(_api.list_audit)
    health = _async(_api.health)

    async def iter_runs(self, state: str | None = None, limit: int = 50) -> AsyncGenerator[Run]:
        page = await self.list_runs(state, limit)
        for run in page.items:
            yield run
        while page.next_cursor:
            page = await self.list_runs(state, limit, page.next_cursor)
            for run in page.items:
                yield run

    async def events(
        self,
        run_id: str,
        last_event_id: str | None = None,
        *,
        idle_timeout: float | None = None,
        logs: bool = False,
    ) -> AsyncGenerator[Event]:
        feed = EventFeed(run_id, last_event_id, idle_timeout, logs)
        while feed.open:
            with _api.reaching(self.settings.api_url), feed.connection():
                async with self._http.stream(**feed.stream_args(self._http.timeout)) as response:
                    if not response.is_success:
                        await response.aread()
                        raise_for_problem(response)
                    if feed.ended(response):
                        return
                    async for sse in EventSource(response).aiter_sse():
                        if (event := feed.accept(sse)) is not None:
                            yield event
                        if not feed.open:
                            return

    # The same signature as Client.wait_run, whose timeout also bounds how long the stream may stay quiet.
    async def wait_run(self, run_id: str, timeout: float | None = None) -> RunDetail:  # noqa: ASYNC109
        wait = RunWait(run_id, timeout)
        async with aclosing(self.events(run_id, idle_timeout=timeout)) as events:
            async for _ in events:
                if wait.expired():
                    break
        return wait.result(await self.get_run(run_id))
