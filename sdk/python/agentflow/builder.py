"""Building a DAG workflow in Python: the same document a workflow file holds, for `apply_workflow`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class Workflow:
    """A DAG workflow under construction.

    >>> wf = Workflow("triage", "1.0.0").step("fetch", "http-get@1.0.0", input={"url": "$.input.url"})
    >>> wf.step("summarize", "llm@2", needs=["fetch"]).to_dict()["steps"][1]["needs"]
    ['fetch']
    """

    def __init__(self, name: str, version: str, *, output: Any = None) -> None:
        self.name = name
        self.version = version
        self.output = output
        self._steps: dict[str, dict[str, Any]] = {}

    def step(
        self,
        name: str,
        tool: str,
        *,
        input: Any = None,
        needs: Iterable[str] = (),
        queue: str | None = None,
    ) -> Workflow:
        """Add a step running `tool` (`name@version`) after the steps it `needs`; returns the workflow
        so that steps chain."""
        if name in self._steps:
            raise ValueError(f"workflow {self.name}: a step named {name!r} already exists")
        step: dict[str, Any] = {"name": name, "tool": tool}
        if input is not None:
            step["input"] = input
        if needs := list(needs):
            step["needs"] = needs
        if queue is not None:
            step["queue"] = queue
        self._steps[name] = step
        return self

    def to_dict(self) -> dict[str, Any]:
        """The workflow document, as a file would hold it."""
        document: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "kind": "dag",
            "steps": [dict(step) for step in self._steps.values()],
        }
        if self.output is not None:
            document["output"] = self.output
        return document
