"""Loading tool and workflow files: YAML or JSON by content, runtime.files inlined, one-line errors."""

from pathlib import Path

import pytest
from agentflow import FileError, load_tool_file, load_workflow_file


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_tool_yaml_inlines_runtime_files_relative_to_the_tool_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "tools" / "src" / "main.py", "print('hi')\n")
    write(
        tmp_path / "tools" / "echo.yaml",
        "name: echo\nversion: 1.0.0\nruntime:\n  command: [python, main.py]\n  files:\n    main.py: src/main.py\n",
    )
    monkeypatch.chdir(tmp_path)  # relative to the tool file, not to the working directory

    spec = load_tool_file("tools/echo.yaml")

    assert spec == {
        "name": "echo",
        "version": "1.0.0",
        "runtime": {"command": ["python", "main.py"], "files": {"main.py": "print('hi')\n"}},
    }


def test_tool_json_is_told_by_content_not_by_extension(tmp_path: Path) -> None:
    write(tmp_path / "run.sh", "echo ok\n")
    path = write(
        tmp_path / "tool.yaml",
        '{"name": "sh", "version": "1", "runtime": {"command": ["sh", "run.sh"], "files": {"run.sh": "run.sh"}}}',
    )

    assert load_tool_file(path)["runtime"]["files"] == {"run.sh": "echo ok\n"}


def test_tool_without_files_is_returned_as_is(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yml", "name: t\nversion: '2'\nruntime: {command: [cat]}\n")

    assert load_tool_file(path) == {"name": "t", "version": "2", "runtime": {"command": ["cat"]}}


def test_missing_runtime_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", "name: t\nruntime:\n  files:\n    main.py: nope.py\n")

    with pytest.raises(FileError) as caught:
        load_tool_file(path)

    message = str(caught.value)
    assert message.startswith(f"{path}: runtime.files.main.py: cannot read {tmp_path / 'nope.py'}")
    assert "No such file" in message
    assert "\n" not in message


def test_runtime_files_must_map_names_to_paths(tmp_path: Path) -> None:
    listed = write(tmp_path / "a.yaml", "runtime:\n  files: [main.py]\n")
    numbered = write(tmp_path / "b.yaml", "runtime:\n  files:\n    main.py: 3\n")

    with pytest.raises(FileError, match=r"runtime.files must map file names to paths"):
        load_tool_file(listed)
    with pytest.raises(FileError, match=r"runtime.files.main.py must be a path"):
        load_tool_file(numbered)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- a\n- b\n", "expected a mapping at the top level, found a list"),
        ("", "expected a mapping at the top level, found an empty document"),
        ("just words\n", "expected a mapping at the top level, found a str"),
        ("name: [unclosed\n", "not valid YAML: "),
        (
            '{"name": "x",}',
            "not valid JSON: Expecting property name enclosed in double quotes (line 1, column 14)",
        ),
    ],
)
def test_malformed_files_fail_with_one_line_naming_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path / "wf.yaml", text)

    with pytest.raises(FileError) as caught:
        load_workflow_file(path)

    assert str(caught.value).startswith(f"{path}: {problem}")
    assert "\n" not in str(caught.value)


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileError, match=r"^cannot read .*absent.yaml: No such file or directory$"):
        load_workflow_file(tmp_path / "absent.yaml")


def test_workflow_file_is_loaded_as_is(tmp_path: Path) -> None:
    path = write(tmp_path / "wf.yaml", "name: w\nversion: 1.0.0\nkind: dag\nsteps:\n  - {name: a, tool: t@1}\n")

    assert load_workflow_file(path) == {
        "name": "w",
        "version": "1.0.0",
        "kind": "dag",
        "steps": [{"name": "a", "tool": "t@1"}],
    }


def test_an_unquoted_whole_version_in_yaml_is_taken_as_its_text(tmp_path: Path) -> None:
    path = write(tmp_path / "wf.yaml", "name: flow\nversion: 1\nkind: dag\nsteps: []\n")
    assert load_workflow_file(path)["version"] == "1"


def test_an_unquoted_decimal_version_in_yaml_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path / "tool.yaml", "name: echo\nversion: 1.10\nruntime:\n  command: [python3, main.py]\n")
    with pytest.raises(FileError, match=r'version 1.1 reads as a number in YAML; quote it, e.g. version: "1.1"'):
        load_tool_file(path)
