"""The HTTP API observed: every request counted and timed by route template and status, and, while
tracing is on, a server span that the request's work (planning, publishing) continues; at log level debug,
a line per request (an access log an operator turns on with a reload, without a restart).

An ASGI wrapper around the whole app rather than a route middleware, so requests that match no route
(404, 405) are counted too; Litestar writes the matched route's template into the shared scope.
"""

import logging
import time
from typing import Any

from opentelemetry.trace import SpanKind

from bus import tracing
from control_plane import metrics

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Any
Send = Any


class Observed:
    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        status = 500

        async def send_noting_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        method = scope["method"]
        began = time.perf_counter()
        try:
            if tracing.enabled:
                await self._traced(scope, receive, send_noting_status)
            else:
                await self._app(scope, receive, send_noting_status)
        finally:
            route = scope.get("path_template") or "unmatched"
            took = time.perf_counter() - began
            metrics.HTTP_REQUESTS.add((method, route, str(status)))
            metrics.HTTP_DURATION.observe((method, route), took)
            log.debug("%s %s %d in %.1f ms", method, scope["path"], status, took * 1000)

    async def _traced(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        parent = tracing.parent_context((headers.get(b"traceparent") or b"").decode("latin-1") or None)
        with tracing.tracer.start_as_current_span(
            scope["method"], context=parent, kind=SpanKind.SERVER, attributes={"http.request.method": scope["method"]}
        ) as span:
            await self._app(scope, receive, send)
            route = scope.get("path_template") or "unmatched"
            span.update_name(f"{scope['method']} {route}")
            span.set_attribute("http.route", route)
