"""Agent documents (``af agent apply FILE``, ``POST /v1/agents``): a model with instructions and tools,
versioned and immutable like tools and workflows, and checked the same way — every problem at its field, in
one answer.

An agent names its model (a tier or a deployment's name) with its sampling settings; the tools it may call
(``name[@version]``, pinned to a version when it is applied, each offered to the model as a function with
the tool's input schema); the agents it may call as tools (``agents``) or hand the conversation to
(``handoffs``); its limits (turns, tokens per step, wall clock); the schema its final answer must match; and
the tools whose calls wait for a human's approval. ``instructions`` is a template: ``{{$.input.topic}}``
reads the step's input with the planners' path language, compiled once (``planning.agent``) and rendered per turn.
"""

from typing import Annotated, Any, Literal

import msgspec

from control_plane.catalog.documents import check_name_field, check_version, version_as_text
from control_plane.errors import Invalid, field_from_msgspec
from control_plane.planning.agent import compile_instructions
from control_plane.planning.problems import WorkflowInvalid

Turns = Annotated[int, msgspec.Meta(ge=1, le=200)]


class LimitsSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    max_turns: Turns = 10
    """Model turns in one step; the step fails with ``max-turns`` when the last one still asks for tools."""
    last_turn: Literal["tools", "answer"] = "tools"
    """``answer``: the last turn ``max_turns`` allows is asked for the final answer (``tool_choice: none``),
    as CrewAI's agents give their best answer at their iteration limit; ``tools``: it is offered the tools
    like any turn. Either way a last turn that still calls a tool fails the step with ``max-turns``."""
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)] | None = None
    """Input and output tokens of all the step's turns together; null: only the tenant's budgets."""
    wall_seconds: Annotated[float, msgspec.Meta(gt=0, le=7 * 24 * 3600)] = 600.0


class AgentSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    version: str
    instructions: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
    model: str
    """A tier (``tier1`` … ``tier4``) or a model deployment's name."""
    description: str = ""
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    max_output_tokens: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    tools: list[str] = []
    agents: list[str] = []
    """Agents this one may call as tools: each answers one question and returns its final answer."""
    handoffs: list[str] = []
    """Agents this one may hand the conversation to: the one handed to carries on with the transcript."""
    limits: LimitsSpec = LimitsSpec()
    output_schema: dict[str, Any] | None = None
    approval: list[str] = []
    """Tools (names from ``tools``) whose every call waits for a human's approval."""


def decode(document: Any) -> tuple[AgentSpec | None, list[Invalid]]:
    """The document as an AgentSpec, or the problem that stops it from being one."""
    try:
        document = version_as_text(document)
    except Invalid as problem:
        return None, [problem]
    try:
        return msgspec.convert(document, type=AgentSpec), []
    except msgspec.ValidationError as error:
        detail, field = field_from_msgspec(str(error))
        return None, [Invalid("validation-error", detail, field)]


def problems(spec: AgentSpec) -> list[Invalid]:
    """What is wrong with the document on its own, each at its field (references are checked by the catalog)."""
    found: list[Invalid] = []
    for check in (
        lambda: check_name_field("agent name", spec.name, "name"),
        lambda: check_version(spec.version),
        lambda: compile_instructions(spec.instructions),
    ):
        try:
            check()
        except Invalid as problem:
            found.append(problem)
        except WorkflowInvalid as invalid:
            found.extend(Invalid("validation-error", p.detail, p.field) for p in invalid.problems)
    for key in ("tools", "agents", "handoffs"):
        refs: list[str] = getattr(spec, key)
        seen: set[str] = set()
        for index, ref in enumerate(refs):
            name = ref.partition("@")[0]
            if name in seen:
                found.append(Invalid("validation-error", f"{name} is listed twice", f"{key}[{index}]"))
            seen.add(name)
    if spec.name in {ref.partition("@")[0] for ref in (*spec.agents, *spec.handoffs)}:
        found.append(Invalid("validation-error", "an agent cannot call or hand off to itself", "agents"))
    offered = {ref.partition("@")[0] for ref in spec.tools}
    for index, ref in enumerate(spec.agents):
        if ref.partition("@")[0] in offered:
            # Both would be offered to the model as one function name.
            found.append(Invalid("validation-error", f"{ref} is both a tool and an agent", f"agents[{index}]"))
    for index, tool in enumerate(spec.approval):
        if tool not in offered:
            found.append(
                Invalid(
                    "validation-error",
                    f"{tool} needs approval but is not one of the agent's tools",
                    f"approval[{index}]",
                )
            )
    return found
