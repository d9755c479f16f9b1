"""The wire: subject names, message types, stream setup, publish and consume helpers, the fleet.

The only package of AgentFlow that imports ``nats``; every other package speaks to NATS through it, with
the types exported here: a ``Bus`` (the connection), the ``Delivery`` of a JetStream message, the ``Fleet``
of workers' heartbeats and the ``Notice`` of a live message. Modules by concern: ``connection``,
``subjects``, ``messages``, ``streams``, ``publish``, ``consume``, ``watch``, ``fleet``.
"""

from bus.connection import Bus, NotAuthorized, connect
from bus.consume import Consumer, Delivery
from bus.fleet import Fleet
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
from bus.watch import Notice, WatchLost

__all__ = [
    "Bus",
    "Consumer",
    "Delivery",
    "Fleet",
    "Heartbeat",
    "InvalidName",
    "NotAuthorized",
    "Notice",
    "Result",
    "RunEvent",
    "RunEvents",
    "Started",
    "Task",
    "ToolLimits",
    "ToolRuntime",
    "WatchLost",
    "check_name",
    "connect",
    "decode",
    "decode_report",
    "encode",
]
