"""Runs one tool call in isolation, under limits, through the backend a worker's SandboxSettings choose.

protocol: what a backend is (Backend, SandboxCall, Limits, Outcome, SandboxError); settings: SandboxSettings;
opener: open_backend. The backends: process (development, no isolation), runsc (gVisor, a bundle per call,
warm pools) and docker (gVisor through a Docker Engine), built on processes (process plumbing), output (a
tool's output and its init's report), files (a call's files), workdirs (whose leftovers are a dead worker's)
and gvisor (what the gVisor backends share).
"""

from .opener import BACKENDS, open_backend
from .process import ProcessBackend
from .protocol import Backend, Limits, Outcome, SandboxCall, SandboxError
from .runsc import RunscBackend
from .settings import SandboxSettings

__all__ = [
    "BACKENDS",
    "Backend",
    "Limits",
    "Outcome",
    "ProcessBackend",
    "RunscBackend",
    "SandboxCall",
    "SandboxError",
    "SandboxSettings",
    "open_backend",
]
