"""Runs one tool call in isolation, under limits, through a backend chosen by name (AF_SANDBOX)."""

from .backend import Backend, open_backend
from .process import ProcessBackend
from .runsc import RunscBackend
from .types import Limits, Outcome, SandboxCall, SandboxError

__all__ = [
    "Backend",
    "Limits",
    "Outcome",
    "ProcessBackend",
    "RunscBackend",
    "SandboxCall",
    "SandboxError",
    "open_backend",
]
