"""Opening the backend that a worker's SandboxSettings name, with what those settings say it needs.

The only module that knows every backend; each is imported only when it is chosen, so that its dependencies
(the docker client, say) load only then.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

from .protocol import Backend, SandboxError
from .settings import SandboxSettings


def _open_process(settings: SandboxSettings) -> Backend:
    from .process import ProcessBackend

    return ProcessBackend()


def _open_runsc(settings: SandboxSettings) -> Backend:
    from .runsc import RunscBackend

    return RunscBackend(settings.runsc_root or None, warm=settings.runsc_warm)


def _open_docker(settings: SandboxSettings) -> Backend:
    from .docker import DockerBackend

    return DockerBackend(settings.docker_host or None, runtime=settings.docker_runtime)


_OPENERS: dict[str, Callable[[SandboxSettings], Backend]] = {
    "docker": _open_docker,
    "process": _open_process,
    "runsc": _open_runsc,
}

BACKENDS = tuple(sorted(_OPENERS))
"""The name of every backend, as `AF_SANDBOX` and `af worker start --sandbox` take them."""


def open_backend(settings: SandboxSettings) -> Backend:
    """The backend `settings` name (if none: runsc where it is installed, else process); SandboxError naming
    the choices if none is called so, or saying what the chosen one is missing. Blocking: a backend cleans up
    after dead workers as it opens, so open it before serving calls."""
    name = settings.backend or ("runsc" if shutil.which("runsc") else "process")
    opener = _OPENERS.get(name)
    if opener is None:
        raise SandboxError(f"unknown sandbox backend {name!r}; valid choices: {', '.join(BACKENDS)}")
    return opener(settings)
