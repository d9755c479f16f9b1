"""The example tools read one JSON document on stdin and answer one on stdout, or fail with a reason."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

TOOLS = Path(__file__).resolve().parent.parent / "examples" / "tools"
TOOL_FILES = sorted(TOOLS.glob("*.yaml"))
SAMPLE_INPUTS = {
    "text-stats": {"text": "The cat sat. The dog ran! Did the cat see it?"},
    "json-transform": {"data": {"a": [1, {"b": "x"}]}, "pick": {"b": "a.1.b"}},
    "mock-model": {"prompt": "The upload crashes with an error. Please fix it.", "task": "classify"},
    "mock-editor": {"task": "revise", "text": "A first draft.", "feedback": "cite a source"},
}


def run_tool(script: str, document: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOLS / script)],
        input=json.dumps(document),
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def answer(script: str, document: object) -> Any:
    finished = run_tool(script, document)
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout)


def spec(tool_file: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(tool_file.read_text())
    return loaded


def test_there_is_a_tool_file_for_each_example_tool() -> None:
    assert [path.name for path in TOOL_FILES] == [
        "fail.yaml",
        "json-transform.yaml",
        "mock-editor.yaml",
        "mock-model.yaml",
        "text-stats.yaml",
    ]


@pytest.mark.parametrize("tool_file", TOOL_FILES, ids=lambda path: path.stem)
def test_a_tool_file_names_its_tool_and_program_and_holds_valid_schemas(tool_file: Path) -> None:
    tool = spec(tool_file)

    assert tool["name"] == tool_file.stem
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", tool["name"])
    assert re.fullmatch(r"[0-9]+(\.[0-9]+){0,2}", tool["version"])
    assert tool["runtime"]["command"] == ["python3", "main.py"]
    assert (tool_file.parent / tool["runtime"]["files"]["main.py"]).is_file()
    jsonschema.Draft202012Validator.check_schema(tool["input_schema"])
    jsonschema.Draft202012Validator.check_schema(tool["output_schema"])
    assert tool["network"] == "none"


@pytest.mark.parametrize("name", sorted(SAMPLE_INPUTS))
def test_a_tool_answers_the_same_input_with_the_same_output_its_schemas_allow(name: str) -> None:
    tool = spec(TOOLS / f"{name}.yaml")
    script = tool["runtime"]["files"]["main.py"]
    document = SAMPLE_INPUTS[name]
    jsonschema.validate(document, tool["input_schema"])

    first, second = run_tool(script, document), run_tool(script, document)

    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    jsonschema.validate(json.loads(first.stdout), tool["output_schema"])


def test_text_stats_counts_words_sentences_characters_and_the_most_frequent_words() -> None:
    text = "The cat sat. The dog ran! Did the cat see it? Yes"

    assert answer("text_stats.py", {"text": text}) == {
        "words": 12,
        "sentences": 4,
        "characters": len(text),
        "top_words": [["the", 3], ["cat", 2], ["did", 1], ["dog", 1], ["it", 1]],
    }


def test_text_stats_of_an_empty_text_is_all_zero() -> None:
    assert answer("text_stats.py", {"text": ""}) == {
        "words": 0,
        "sentences": 0,
        "characters": 0,
        "top_words": [],
    }


@pytest.mark.parametrize(
    ("script", "document"),
    [
        ("text_stats.py", {"text": 42}),
        ("json_transform.py", {"data": {}}),
        ("mock_model.py", {"prompt": "hi", "task": "translate"}),
        ("mock_editor.py", {"task": "score", "text": "draft", "pass_mark": "high"}),
    ],
)
def test_a_tool_refuses_malformed_input_with_a_reason(script: str, document: object) -> None:
    finished = run_tool(script, document)

    assert finished.returncode == 2
    assert finished.stdout == ""
    assert finished.stderr.strip()


def test_json_transform_picks_values_by_dotted_paths_through_objects_and_lists() -> None:
    data = {"user": {"name": "ada", "langs": ["en", "fr"]}, "items": [{"id": 7}]}
    pick = {"name": "user.name", "second": "user.langs.1", "first_id": "items.0.id", "user": "user"}

    assert answer("json_transform.py", {"data": data, "pick": pick}) == {
        "name": "ada",
        "second": "fr",
        "first_id": 7,
        "user": data["user"],
    }


@pytest.mark.parametrize("path", ["user.age", "user.langs.2", "user.langs.first", "user.name.x"])
def test_json_transform_fails_on_a_missing_path_and_names_it(path: str) -> None:
    data = {"user": {"name": "ada", "langs": ["en", "fr"]}}

    finished = run_tool("json_transform.py", {"data": data, "pick": {"out": path}})

    assert finished.returncode == 2
    assert finished.stdout == ""
    assert repr(path) in finished.stderr


def test_the_mock_model_summarizes_with_the_first_sentence_and_keywords_by_default() -> None:
    prompt = "Uploads fail on large files. Large uploads time out. Small files work."

    reply = answer("mock_model.py", {"prompt": prompt})

    assert reply == {
        "text": "Uploads fail on large files. Keywords: files, large, uploads, fail, out.",
        "model": "mock-model-1",
        "usage": {"input_tokens": 15, "output_tokens": 18},
    }


@pytest.mark.parametrize(
    ("prompt", "label"),
    [
        ("The app crashes with an error and a traceback.", "bug"),
        ("Please add support for a dark theme option.", "feature"),
        ("How is the schedule computed?", "question"),
        ("Lovely weather today.", "other"),
    ],
)
def test_the_mock_model_classifies_a_prompt_by_its_keywords(prompt: str, label: str) -> None:
    assert answer("mock_model.py", {"prompt": prompt, "task": "classify"})["text"] == label


def test_the_mock_model_critiques_length_and_overused_words() -> None:
    prompt = "Fix the cache. The cache is slow. The cache is big."

    reply = answer("mock_model.py", {"prompt": prompt, "task": "critique"})

    assert reply["text"] == (
        "- Too short (11 words): add context and the expected result.\n- Overused words: cache (3)."
    )


def test_the_fail_tool_gives_its_reason_on_stderr_and_exits_3() -> None:
    finished = run_tool("fail.py", {"reason": "planned failure"})

    assert finished.returncode == 3
    assert finished.stdout == ""
    assert finished.stderr == "fail: planned failure\n"


def test_the_mock_editor_passes_a_gate_of_8_after_two_revisions() -> None:
    draft = "A first draft."
    scores = []
    for _ in range(3):
        scores.append(answer("mock_editor.py", {"task": "score", "text": draft})["score"])
        draft = answer("mock_editor.py", {"task": "revise", "text": draft, "feedback": "more"})["text"]

    assert scores == [4, 6, 8]
    assert answer("mock_editor.py", {"task": "score", "text": draft, "pass_mark": 10})["passed"] is True
