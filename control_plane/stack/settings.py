"""The embedded stack's settings: read once from the environment where ``af up``, ``af down``, ``af status``
or ``af worker start`` begins, and passed down. The environment goes along as it is: the processes the stack
starts inherit it, each with its own settings on top."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from control_plane.stack.processes import StackError

DEFAULT_PORT = 8080
"""The API's port when AF_PORT is 0 and it is free."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StackSettings:
    home: Path
    """``AF_HOME``: where the stack keeps its state (stack.json, logs, the NATS store, a PostgreSQL cluster);
    default ``/var/lib/agentflow`` for root, else ``$XDG_STATE_HOME/agentflow`` (``~/.local/state``)."""
    port: int = 0
    """``AF_PORT``: the control plane's HTTP port; 0: 8080 where it is free, else any free port."""
    database_url: str = ""
    """``AF_DATABASE_URL``: a PostgreSQL of the user's; empty: a cluster of the stack's own under ``home``."""
    sandbox: str = ""
    """``AF_SANDBOX``: the workers' sandbox backend (``af up`` warns when it is ``process``); empty: runsc
    where it is installed, else process, as the workers choose."""
    local_model: bool = False
    """``AF_LOCAL_MODEL``: 1 starts the local model server with the stack, as ``af up --local-model`` does."""
    env: Mapping[str, str]
    """The environment the stack's processes start from."""

    @staticmethod
    def read(env: Mapping[str, str]) -> "StackSettings":
        """The settings in ``env``; StackError naming a malformed one."""
        port = env.get("AF_PORT") or "0"
        if not port.isdigit() or int(port) > 65535:
            raise StackError(f"AF_PORT: expected a port number, got {port!r}")
        local_model = env.get("AF_LOCAL_MODEL") or "0"
        if local_model not in ("0", "1"):
            raise StackError(f"AF_LOCAL_MODEL: use 0 or 1, got {local_model!r}")
        return StackSettings(
            home=default_home(env),
            port=int(port),
            database_url=env.get("AF_DATABASE_URL", ""),
            sandbox=env.get("AF_SANDBOX", ""),
            local_model=local_model == "1",
            env=dict(env),
        )


def default_home(env: Mapping[str, str]) -> Path:
    """Where the embedded stack keeps its state: a system directory for root, the user's state dir otherwise."""
    if env.get("AF_HOME"):
        return Path(env["AF_HOME"])
    if os.geteuid() == 0:
        return Path("/var/lib/agentflow")
    state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "agentflow"
