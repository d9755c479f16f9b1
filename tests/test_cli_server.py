"""Server commands hand every argument, --help included, to the server package's modules via execv; their
own parsers' help reads like every other af command's."""

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from agentflow import cli as cli_module
from agentflow.cli import cli
from click.testing import CliRunner

from bench.__main__ import main as bench_main
from control_plane.__main__ import main as control_plane_main
from control_plane.stack.launcher import main as stack_main
from sandbox import BACKENDS
from worker.__main__ import main as worker_main


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


# --- one help style: the server commands' own parsers read like every other af command ----------------

Main = Callable[[list[str]], None]


def _help_of(main: Main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


SERVER_COMMANDS: list[tuple[str, Main, list[str]]] = [
    ("af up", stack_main, ["up"]),
    ("af down", stack_main, ["down"]),
    ("af status", stack_main, ["status"]),
    ("af worker start", worker_main, ["start"]),
    ("af control-plane start", control_plane_main, []),
    ("af bench", bench_main, []),
]


@pytest.mark.parametrize(("command", "main", "argv"), SERVER_COMMANDS, ids=[c[0] for c in SERVER_COMMANDS])
def test_every_server_command_has_clean_usage_a_description_and_options(
    capsys: pytest.CaptureFixture[str], command: str, main: Main, argv: list[str]
) -> None:
    lines = _help_of(main, argv, capsys).splitlines()

    assert lines[:2] == [f"Usage: {command} [OPTIONS]", ""]
    assert lines[2].startswith("  ") and len(lines[2].split()) > 3  # a sentence, indented like click's
    assert "Options:" in lines
    assert lines[-1].split() == ["-h,", "--help", "Show", "this", "message", "and", "exit."]
    assert not any("{" in line for line in lines)  # no stray [{start}] nor {a,b} choices


def test_worker_start_help_lists_every_sandbox_backend(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help_of(worker_main, ["start"], capsys)

    assert f"--sandbox [{'|'.join(BACKENDS)}]" in text
    assert "docker" in BACKENDS


@pytest.mark.parametrize(("main", "argv"), [(stack_main, ["status"]), (bench_main, [])], ids=["status", "bench"])
def test_output_has_its_short_flag(capsys: pytest.CaptureFixture[str], main: Main, argv: list[str]) -> None:
    assert "-o, --output [table|json]" in _help_of(main, argv, capsys)


def test_af_status_o_json_reports_no_stack(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AF_HOME", str(tmp_path))

    stack_main(["status", "-o", "json"])

    assert json.loads(capsys.readouterr().out) == {"home": str(tmp_path), "running": False, "parts": []}


def test_an_unknown_server_flag_is_one_line_naming_the_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AF_HOME", str(tmp_path))

    with pytest.raises(SystemExit) as exited:
        stack_main(["up", "--bogus"])

    assert exited.value.code == 2
    assert capsys.readouterr().err == "af up: unrecognized arguments: --bogus (see 'af up --help')\n"


def test_every_af_command_takes_h_for_help() -> None:
    result = CliRunner().invoke(cli, ["runs", "ls", "-h"])

    assert result.exit_code == 0
    assert result.output.startswith("Usage: af runs ls [OPTIONS]")
