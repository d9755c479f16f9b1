"""The AgentFlow client: talk to the AgentFlow HTTP API from Python, synchronously (`Client`) or with
asyncio (`AsyncClient`), load tool, workflow and agent files, and build workflows of each kind in code
(`Workflow`, `StateMachine`, `BehaviorTree`; their transition and node helpers are in `agentflow.builder`) and
agents (`Agent`).

>>> from agentflow import Client
>>> with Client() as af:  # doctest: +SKIP
...     run = af.start_run(workflow="triage@1.0.0", input={"url": "https://example.org"})
...     print(af.wait_run(run["id"])["output"])
"""

from ._api import Registered
from ._client import AsyncClient, Client
from ._config import Settings, default_home
from ._errors import (
    AgentFlowError,
    APIError,
    Conflict,
    FileError,
    Forbidden,
    NotFound,
    RateLimited,
    StaleLogin,
    TransportError,
    Unauthorized,
    ValidationFailed,
    WaitTimeout,
)
from ._files import load_agent_file, load_model_file, load_tool_file, load_workflow_file
from .builder import Agent, BehaviorTree, StateMachine, Steps, ToolCall, Workflow

__all__ = [
    "APIError",
    "Agent",
    "AgentFlowError",
    "AsyncClient",
    "BehaviorTree",
    "Client",
    "Conflict",
    "FileError",
    "Forbidden",
    "NotFound",
    "RateLimited",
    "Registered",
    "Settings",
    "StaleLogin",
    "StateMachine",
    "Steps",
    "ToolCall",
    "TransportError",
    "Unauthorized",
    "ValidationFailed",
    "WaitTimeout",
    "Workflow",
    "default_home",
    "load_agent_file",
    "load_model_file",
    "load_tool_file",
    "load_workflow_file",
]
