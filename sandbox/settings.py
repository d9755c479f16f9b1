"""The sandbox's settings: which backend a worker opens and what that backend needs of its surroundings.

One frozen object, loaded once by the worker with its other settings (flags over ``AF_*`` environment over the
``AF_CONFIG`` file over these defaults) and handed to open_backend; nothing in this package reads the
environment. Each field is the worker's setting of its own name (``runsc_root`` is ``AF_RUNSC_ROOT``), or of
the name its metadata gives as ``setting``.
"""

from dataclasses import dataclass, field

DOCKER_RUNTIME = "runsc"
"""The Docker Engine runtime the docker backend runs its containers under, unless told another."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxSettings:
    backend: str = field(default="", metadata={"setting": "sandbox"})
    """``AF_SANDBOX``: ``runsc`` (gVisor; the default where runsc is installed), ``docker`` (gVisor through a
    Docker Engine) or ``process`` (development only, no isolation; the default elsewhere, with a warning in the
    log)."""
    runsc_root: str = ""
    """``AF_RUNSC_ROOT``: the dir under which runsc backends keep their state (one dir per worker process);
    empty: ``/var/run/agentflow/runsc`` for root, else a dir in the temp dir."""
    runsc_warm: int = 0
    """``AF_RUNSC_WARM``: sandboxes runsc keeps started ahead for each pool in use whose calls ask for no number
    of their own; 0: none, every such call starts cold."""
    docker_host: str = ""
    """``AF_DOCKER_HOST``: the Docker Engine of the docker backend (``unix://…`` or ``tcp://…``); empty: the
    Docker client's own ``DOCKER_HOST``, else its default socket."""
    docker_runtime: str = DOCKER_RUNTIME
    """``AF_DOCKER_RUNTIME``: the engine's runtime for the containers; it must run runsc with
    ``--network=none``."""
