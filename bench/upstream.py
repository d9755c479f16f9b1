"""A fast model server on loopback that speaks the OpenAI chat completions and embeddings protocol and
Anthropic's Messages protocol, and fails on demand: the upstream of the gateway's tests and benchmark.

One process serves many named upstreams: ``/u/<name>/v1/chat/completions``, ``/u/<name>/v1/embeddings``
and ``/u/<name>/v1/messages`` (``/v1/...`` is the upstream ``default``). Each named upstream keeps its own
queue of faults and counts what it was asked, so that one server stands for the several deployments of a
failover chain. It is a plain asyncio HTTP/1.1 server (keep-alive, no framework), so that what a benchmark
measures is the gateway and not this server.

Faults, each for the next ``times`` requests of an upstream (``times`` 0: every request until reset), set
with ``POST /_control/<name>`` ``{"faults": [{"kind": ..., "times": 1, "retry_after": 2}], "latency_ms": 0}``,
or asked for by one request whose last user message holds ``[[upstream:<kind>]]``:

- ``429``: Too Many Requests with ``Retry-After`` (``retry_after`` seconds, default 1)
- ``500``: an internal server error
- ``overloaded``: 529, Anthropic's ``overloaded_error`` (in a stream: an error event after the first delta)
- ``hang``: read the request and never answer (until the client gives up)
- ``close``: read the request and close the connection without answering
- ``garbage``: 200 with a body that is not JSON
- ``context-length``: 400 with the provider's context-length error
- ``cut``: a stream that stops after its first delta, without its end (without streaming: like ``close``)
- ``stall``: a stream that sends nothing more after its first delta (without streaming: like ``hang``)

A Messages request without ``x-api-key`` is refused with 401 and one without ``anthropic-version`` with 400,
as Anthropic does; errors are in the protocol's own shape.

An upstream given ``"key": "<api key>"`` in its control document answers 401 (OpenAI's ``invalid_api_key``,
quoting the key it got) to every request that does not carry that key (``Authorization: Bearer <key>``, or
Anthropic's ``x-api-key``), as a provider does: what shows a test that the gateway sent the right credential.

``GET /_control/<name>`` answers ``{"requests": n, "last": <last request body>, "headers": {...}}`` and
``DELETE /_control/<name>`` resets the upstream. ``python -m bench.upstream --port N`` runs it; it prints
``listening on http://127.0.0.1:N`` once it accepts connections.
"""

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

FAULTS = ("429", "500", "overloaded", "hang", "close", "garbage", "context-length", "cut", "stall")
_MIDSTREAM = ("cut", "overloaded", "stall")
"""The faults that break a stream once it has begun."""
_MARKER = re.compile(r"\[\[upstream:([a-z0-9-]+)\]\]")
_PATH = re.compile(r"^(?:/u/(?P<name>[a-z0-9-]+))?/v1/(?P<op>chat/completions|embeddings|messages)$")
_CONTROL = re.compile(r"^/_control/(?P<name>[a-z0-9-]+)$")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    529: "Overloaded",
}


@dataclass
class Fault:
    kind: str
    times: int = 1
    """How many more requests it applies to; 0: every one, until the upstream is reset."""
    retry_after: float = 1.0


@dataclass
class Upstream:
    """One named upstream: its faults to come and what it was asked."""

    faults: list[Fault] = field(default_factory=list)
    latency_ms: float = 0.0
    key: str | None = None
    """The API key every request must carry; None: any or none."""
    requests: int = 0
    last: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def next_fault(self, body: Any) -> Fault | None:
        marked = _MARKER.search(_last_user_text(body))
        if marked:
            return Fault(marked.group(1))
        if not self.faults:
            return None
        fault = self.faults[0]
        if fault.times == 1:
            self.faults.pop(0)
        elif fault.times > 1:
            fault.times -= 1
        return fault

    def status(self) -> dict[str, Any]:
        return {"requests": self.requests, "last": self.last, "headers": self.headers}


def _bearer(headers: dict[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else None


def _last_user_text(body: Any) -> str:
    messages = body.get("messages") if isinstance(body, dict) else None
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part["text"]) for part in content if isinstance(part, dict) and "text" in part)
    return ""


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _prompt_tokens(body: dict[str, Any]) -> int:
    texts = [_text(m.get("content")) for m in body.get("messages", []) if isinstance(m, dict)]
    system = body.get("system")
    return _tokens(" ".join([*texts, _text(system) if system else ""]))


def _answer_text(body: dict[str, Any]) -> str:
    return f"echo: {_last_user_text(body)}"


def _wanted_tool(body: dict[str, Any]) -> str | None:
    """The tool to call: a forced one, or the first offered when the prompt says ``call a tool``."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        named = choice.get("function", {}).get("name") or choice.get("name")
        if named:
            return str(named)
    if tools and "call a tool" in _last_user_text(body):
        first = tools[0]
        return str(first.get("function", {}).get("name") or first.get("name"))
    return None


# --- OpenAI ----------------------------------------------------------------------------------------


def openai_completion(body: dict[str, Any]) -> dict[str, Any]:
    tool = _wanted_tool(body)
    if tool is not None:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_up_0", "type": "function", "function": {"name": tool, "arguments": "{}"}}],
        }
        finish, text = "tool_calls", tool
    else:
        text = _answer_text(body)
        message, finish = {"role": "assistant", "content": text}, "stop"
    prompt, completion = _prompt_tokens(body), _tokens(text)
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


def openai_chunks(body: dict[str, Any]) -> list[dict[str, Any]]:
    text = _answer_text(body)
    base = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": int(time.time())}
    base["model"] = body.get("model", "")
    words = text.split(" ")
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    for i, word in enumerate(words):
        piece = word if i == 0 else " " + word
        chunks.append({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        prompt, completion = _prompt_tokens(body), _tokens(text)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        chunks.append({**base, "choices": [], "usage": usage})
    return chunks


def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body.get("input")
    texts = inputs if isinstance(inputs, list) else [inputs]
    dimensions = int(body.get("dimensions") or 8)
    data = [{"object": "embedding", "index": i, "embedding": vector(str(t), dimensions)} for i, t in enumerate(texts)]
    used = sum(_tokens(str(t)) for t in texts)
    return {
        "object": "list",
        "data": data,
        "model": body.get("model", ""),
        "usage": {"prompt_tokens": used, "total_tokens": used},
    }


def vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector of ``text``."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(digest[i % len(digest)] - 127.5) / 127.5 for i in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


# --- Anthropic Messages ---------------------------------------------------------------------------


def _tool_input(body: dict[str, Any]) -> dict[str, Any]:
    return {"q": _last_user_text(body)}


def anthropic_message(body: dict[str, Any]) -> dict[str, Any]:
    tool = _wanted_tool(body)
    if tool is not None:
        use = {"type": "tool_use", "id": "toolu_up_0", "name": tool, "input": _tool_input(body)}
        content: list[dict[str, Any]] = [use]
        stop, text = "tool_use", tool
    else:
        text, stop = _answer_text(body), "end_turn"
        limit = int(body.get("max_tokens") or 0)
        if limit and _tokens(text) > limit:  # the answer cut at its limit, as the API cuts it
            text, stop = text[: limit * 4], "max_tokens"
        content = [{"type": "text", "text": text}]
    return {
        "id": "msg_upstream",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", ""),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": _prompt_tokens(body), "output_tokens": _tokens(text)},
    }


def anthropic_events(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The stream of the message ``anthropic_message`` answers: text word by word, a tool's input in two
    ``input_json_delta`` halves."""
    whole = anthropic_message(body)
    start = {**whole, "content": [], "stop_reason": None}
    start["usage"] = {"input_tokens": whole["usage"]["input_tokens"], "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(whole["content"]):
        opened: dict[str, Any]
        if block["type"] == "text":
            opened, parts = {"type": "text", "text": ""}, block["text"].split(" ")
            deltas = [{"type": "text_delta", "text": w if i == 0 else " " + w} for i, w in enumerate(parts)]
        else:
            opened, arguments = {**block, "input": {}}, json.dumps(block["input"])
            halves = (arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :])
            deltas = [{"type": "input_json_delta", "partial_json": half} for half in halves]
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": opened}))
        events.append(("ping", {"type": "ping"}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    ending = {"stop_reason": whole["stop_reason"], "stop_sequence": None}
    events.append(("message_delta", {"type": "message_delta", "delta": ending, "usage": whole["usage"]}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _error(op: str, kind: str, message: str) -> dict[str, Any]:
    """An error document in the protocol of ``op``."""
    if op == "messages":
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind}}


def _anthropic_refusal(headers: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
    """What Anthropic answers a request without its key or its API version."""
    if not headers.get("x-api-key"):
        return 401, _error("messages", "authentication_error", "x-api-key header is required")
    if not headers.get("anthropic-version"):
        return 400, _error("messages", "invalid_request_error", "anthropic-version header is required")
    return None


def _context_length_error(op: str) -> dict[str, Any]:
    if op == "messages":
        detail = "prompt is too long: 300000 tokens > 200000 maximum"
        return {"type": "error", "error": {"type": "invalid_request_error", "message": detail}}
    detail = "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens."
    error = {"message": detail, "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}
    return {"error": error}


# --- the HTTP server ------------------------------------------------------------------------------


class Closed(Exception):
    """The connection is to be closed without an answer."""


class Server:
    def __init__(self) -> None:
        self.upstreams: dict[str, Upstream] = {}
        self._server: asyncio.Server | None = None
        self.port = 0

    def upstream(self, name: str) -> Upstream:
        return self.upstreams.setdefault(name, Upstream())

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await asyncio.start_server(self._connection, host, port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (Closed, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        line = await reader.readline()
        if not line:
            return False
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        raw = await reader.readexactly(length) if length else b""
        path = target.split("?", 1)[0]
        if control := _CONTROL.match(path):
            status, answer = self._control(method, control.group("name"), raw)
            self._send_json(writer, status, answer)
        elif (called := _PATH.match(path)) and method == "POST":
            await self._model(writer, called.group("name") or "default", called.group("op"), raw, headers)
        else:
            self._send_json(writer, 404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}})
        await writer.drain()
        return headers.get("connection", "").lower() != "close"

    def _control(self, method: str, name: str, raw: bytes) -> tuple[int, Any]:
        if method == "DELETE":
            self.upstreams.pop(name, None)
            return 200, {"reset": name}
        upstream = self.upstream(name)
        if method == "POST":
            order = json.loads(raw or b"{}")
            upstream.faults = [Fault(**fault) for fault in order.get("faults", [])]
            upstream.latency_ms = float(order.get("latency_ms", upstream.latency_ms))
            upstream.key = order.get("key", upstream.key)
        return 200, upstream.status()

    async def _model(
        self, writer: asyncio.StreamWriter, name: str, op: str, raw: bytes, headers: dict[str, str]
    ) -> None:
        upstream = self.upstream(name)
        try:
            body = json.loads(raw)
        except ValueError:
            self._send_json(writer, 400, {"error": {"message": "the body is not JSON", "type": "invalid_request"}})
            return
        upstream.requests += 1
        upstream.last, upstream.headers = body, headers
        if upstream.key is not None and upstream.key not in (_bearer(headers), headers.get("x-api-key")):
            # Quoting the key it was given, as some providers do: the gateway must not pass it on.
            error = {"message": f"Incorrect API key provided: {_bearer(headers)}", "type": "invalid_request_error"}
            self._send_json(writer, 401, {"error": {**error, "code": "invalid_api_key"}})
            return
        if upstream.latency_ms:
            await asyncio.sleep(upstream.latency_ms / 1000)
        if op == "messages" and (refusal := _anthropic_refusal(headers)) is not None:
            self._send_json(writer, *refusal)
            return
        fault = upstream.next_fault(body)
        streaming = bool(body.get("stream")) and op != "embeddings"
        if fault is not None and not (fault.kind in _MIDSTREAM and streaming):
            await self._fail(writer, fault, op)
            return
        if op == "embeddings":
            self._send_json(writer, 200, embeddings(body))
        elif op == "chat/completions" and not streaming:
            self._send_json(writer, 200, openai_completion(body))
        elif op == "messages" and not streaming:
            self._send_json(writer, 200, anthropic_message(body))
        else:
            await self._stream(writer, op, body, fault.kind if fault is not None else None)

    async def _fail(self, writer: asyncio.StreamWriter, fault: Fault, op: str) -> None:
        if fault.kind == "429":
            after = fault.retry_after
            header = {"retry-after": str(int(after)) if after == int(after) else str(after)}
            self._send_json(writer, 429, _error(op, "rate_limit_error", "rate limited"), header)
        elif fault.kind == "500":
            self._send_json(writer, 500, _error(op, "api_error", "upstream failed"))
        elif fault.kind == "overloaded":
            self._send_json(writer, 529, _error(op, "overloaded_error", "Overloaded"))
        elif fault.kind == "garbage":
            self._send(writer, 200, b"<html>this is not json", "application/json")
        elif fault.kind == "context-length":
            self._send_json(writer, 400, _context_length_error(op))
        elif fault.kind in ("hang", "stall"):
            await asyncio.sleep(3600)
        else:  # close, and cut without a stream
            raise Closed()

    async def _stream(self, writer: asyncio.StreamWriter, op: str, body: dict[str, Any], fault: str | None) -> None:
        head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        writer.write(head.encode())
        overloaded = _error(op, "overloaded_error", "Overloaded")
        if op == "messages":
            events = anthropic_events(body)
            frames = [f"event: {kind}\ndata: {json.dumps(data)}\n\n" for kind, data in events]
            first_delta = next(i for i, (kind, _) in enumerate(events) if kind == "content_block_delta")
            failed = f"event: error\ndata: {json.dumps(overloaded)}\n\n"
        else:
            frames = [f"data: {json.dumps(chunk)}\n\n" for chunk in openai_chunks(body)] + ["data: [DONE]\n\n"]
            first_delta = 1  # after the role's chunk
            failed = f"data: {json.dumps(overloaded)}\n\n"
        if fault == "overloaded":  # the stream has begun, then fails with an error event and ends
            frames = [*frames[: first_delta + 1], failed]
        for index, frame in enumerate(frames):
            if fault in ("cut", "stall") and index == first_delta + 1:  # begun, it stops after its first delta
                await writer.drain()
                if fault == "stall":
                    await asyncio.sleep(3600)
                # The first delta reaches the caller before the connection drops (a cut mid-way, not a response
                # whose last bytes and end arrive in one read).
                await asyncio.sleep(0.05)
                raise Closed()
            data = frame.encode()
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        writer.write(b"0\r\n\r\n")

    def _send_json(
        self, writer: asyncio.StreamWriter, status: int, document: Any, headers: dict[str, str] | None = None
    ) -> None:
        self._send(writer, status, json.dumps(document).encode(), "application/json", headers)

    @staticmethod
    def _send(
        writer: asyncio.StreamWriter, status: int, body: bytes, media: str, headers: dict[str, str] | None = None
    ) -> None:
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        head = f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\ncontent-type: {media}\r\n"
        writer.write(f"{head}content-length: {len(body)}\r\n{extra}\r\n".encode() + body)


async def serve(host: str, port: int) -> None:
    server = Server()
    await server.start(host, port)
    print(f"listening on http://{host}:{server.port}", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
