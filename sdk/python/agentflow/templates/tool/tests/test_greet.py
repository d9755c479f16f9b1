"""The greet tool as AgentFlow runs it: JSON on stdin, JSON on stdout, exit 2 on bad input."""

import json
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "greet.py"


def run(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL)], input=stdin, capture_output=True, text=True, check=False)


def test_a_name_is_greeted() -> None:
    done = run('{"name": "Ada"}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"greeting": "Hello, Ada!"}


def test_input_without_a_name_exits_2() -> None:
    done = run("{}")
    assert done.returncode == 2
    assert "name" in done.stderr
