"""Server commands hand every argument, --help included, to the server package's modules via execv."""

import os
import sys

import pytest
from agentflow import cli as cli_module
from agentflow.cli import cli
from click.testing import CliRunner


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str]]]:
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(cli_module, "find_spec", lambda name: object())
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append((path, argv)))
    return calls


@pytest.mark.parametrize(
    ("args", "module_args"),
    [
        (["up", "--workers", "2", "--detach"], ["control_plane.stack", "up", "--workers", "2", "--detach"]),
        (["up", "--help"], ["control_plane.stack", "up", "--help"]),
        (["down"], ["control_plane.stack", "down"]),
        (["status", "--output", "json"], ["control_plane.stack", "status", "--output", "json"]),
        (
            ["worker", "start", "--queue", "gpu", "--concurrency", "4"],
            ["control_plane.stack", "worker", "--queue", "gpu", "--concurrency", "4"],
        ),
        (["worker", "start", "--help"], ["control_plane.stack", "worker", "--help"]),
        (["control-plane", "start", "--port", "9000"], ["control_plane", "--port", "9000"]),
        (["bench", "submit", "-n", "100", "--help"], ["bench", "submit", "-n", "100", "--help"]),
    ],
)
def test_server_commands_exec_the_module_with_every_argument(
    execs: list[tuple[str, list[str]]], args: list[str], module_args: list[str]
) -> None:
    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 0, result.output
    assert execs == [(sys.executable, [sys.executable, "-m", *module_args])]


@pytest.mark.parametrize(("args", "command"), [(["up"], "up"), (["worker", "start", "-q", "x"], "worker start")])
def test_missing_server_package_is_one_line(monkeypatch: pytest.MonkeyPatch, args: list[str], command: str) -> None:
    looked_up: list[str] = []
    monkeypatch.setattr(cli_module, "find_spec", lambda name: looked_up.append(name))

    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 1
    assert result.stderr == f"af: {command} needs the AgentFlow server package (pip install agentflow-server)\n"
    assert "." not in looked_up[0]  # looking up a submodule would import the server's package
