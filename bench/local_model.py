"""The local model's speed: tokens per second as it generates, and time to its first token.

``speed`` measures any OpenAI base URL: the local model server itself (``af up --local-model``, or the one
``python -m bench.local_model`` starts here), or AgentFlow's ``/v1/llm`` with a tenant's key and model
``local``, which the gateway phase of ``af bench`` can call beside its upstream. Each run is one streamed
answer of at most ``max_tokens``: its rate counts the tokens after the first (the prompt's processing is the
time to the first token, reported apart), with the count the server reports in the stream's usage.
"""

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.stats import median
from control_plane.stack import local_model
from control_plane.stack.processes import stop

PROMPT = "Tell me a long story about a lighthouse keeper and a storm."


async def _one(client: aiohttp.ClientSession, base: str, model: str, max_tokens: int) -> tuple[float, float, int]:
    """(seconds to the first token, seconds after it, completion tokens) of one streamed answer."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    async with client.post(f"{base}/chat/completions", json=body) as answer:
        answer.raise_for_status()
        async for line in answer.content:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            chunk: dict[str, Any] = json.loads(line[6:])
            if not first and any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
    ended = time.perf_counter()
    if not first or tokens < 2:
        raise RuntimeError(f"{base}: the stream brought {tokens} tokens, too few to measure a rate")
    return first - started, ended - first, tokens


async def speed(
    base: str, *, key: str = "unused", model: str = "local", max_tokens: int = 128, runs: int = 3
) -> dict[str, float]:
    """The median of ``runs`` answers: ``tokens_per_second`` (after the first token), ``ttft_ms`` and
    ``tokens`` (generated per answer)."""
    samples = []
    timeout = aiohttp.ClientTimeout(total=300)
    # A connection per answer: llama.cpp's server drops a kept-alive one after a stream longer than 5 s.
    headers = {"Authorization": f"Bearer {key}", "Connection": "close"}
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as client:
        for _ in range(runs):
            samples.append(await _one(client, base, model, max_tokens))
    return {
        "tokens_per_second": median((tokens - 1) / after for _, after, tokens in samples),
        "ttft_ms": median(ttft * 1000 for ttft, _, _ in samples),
        "tokens": median(tokens for _, _, tokens in samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="The local model server's speed on this machine.")
    parser.add_argument("--threads", type=int, default=local_model.default_threads())
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="af-bench-local-") as home:
        server = local_model.start(Path(home) / "local-model.log", threads=args.threads)
        try:
            figures = asyncio.run(speed(server.url, max_tokens=args.max_tokens, runs=args.runs))
        finally:
            stop(server.process.pid)
    print(json.dumps({"threads": args.threads, **figures}, indent=2))


if __name__ == "__main__":
    main()
