"""Tools that probe a sandbox, shared by the tests of the gVisor backends (runsc, docker): the same attack,
whichever backend has to contain it."""

import asyncio
import json
from typing import Any

from sandbox import Backend, Outcome, SandboxCall


def python(code: str, **fields: Any) -> SandboxCall:
    """A call that runs `code` with the sandbox's python3 (the host's /usr, mounted read-only)."""
    return SandboxCall(**{"call_id": "test-1", "command": ("python3", "-c", code), "stdin": b"", **fields})


async def reach_host_loopback(backend: Backend) -> tuple[Outcome, int]:
    """Run a tool that connects to a server on the host's loopback; its outcome (it prints the error it got,
    or 'connected') and how many connections the server saw."""
    connections = 0

    def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    server = await asyncio.start_server(count, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        outcome = await backend.run(
            python(
                "import socket\n"
                "try:\n"
                f"    socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
                "    print('connected')\n"
                "except OSError as error:\n"
                "    print(type(error).__name__)\n"
            )
        )
    finally:
        server.close()
        await server.wait_closed()
    return outcome, connections


_WRITE_PROBE = """
import json, sys
results = {}
for path in sys.argv[1:]:
    try:
        with open(path, "w") as file:
            file.write("x")
        results[path] = "written"
    except OSError as error:
        results[path] = error.strerror
mounts = {line.split()[1]: line.split()[3].split(",")[0] for line in open("/proc/mounts")}
print(json.dumps([results, mounts]))
"""


async def try_writing(backend: Backend, *paths: str) -> tuple[Outcome, dict[str, str], dict[str, str]]:
    """Run a tool that writes to each of `paths`; its outcome, what became of each write ('written' or the
    error), and each mount point's first option (ro or rw)."""
    call = SandboxCall(call_id="test-1", command=("python3", "-c", _WRITE_PROBE, *paths), stdin=b"")
    outcome = await backend.run(call)
    results, mounts = json.loads(outcome.stdout) if outcome.exit_code == 0 else ({}, {})
    return outcome, results, mounts
