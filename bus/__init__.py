"""The wire: subject names, message types, stream setup, publish and consume helpers.

The only package of AgentFlow that imports ``nats``; every other package speaks to NATS through it.
"""

from bus.messages import (
    Heartbeat,
    Result,
    RunEvent,
    RunEvents,
    Started,
    Task,
    ToolLimits,
    ToolRuntime,
    decode,
    decode_report,
    encode,
)
from bus.subjects import InvalidName, check_name

__all__ = [
    "Heartbeat",
    "InvalidName",
    "Result",
    "RunEvent",
    "RunEvents",
    "Started",
    "Task",
    "ToolLimits",
    "ToolRuntime",
    "check_name",
    "decode",
    "decode_report",
    "encode",
]
