"""Settings resolution: explicit arguments > AF_API_URL / AF_TOKEN > the embedded stack's files > default."""

import json
from pathlib import Path

import pytest
from agentflow import FileError, Settings, default_home

STACK_URL = "http://127.0.0.1:45123"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AF_HOME", str(tmp_path))
    monkeypatch.delenv("AF_API_URL", raising=False)
    monkeypatch.delenv("AF_TOKEN", raising=False)
    return tmp_path


@pytest.fixture
def stack(home: Path) -> Path:
    (home / "stack.json").write_text(json.dumps({"api_url": STACK_URL + "/", "nats_url": "nats://x"}))
    (home / "admin.key").write_text("af_admin_key\n")
    return home


def test_defaults_without_env_or_stack(home: Path) -> None:
    assert Settings.load() == Settings(api_url="http://127.0.0.1:8080", token=None)


def test_embedded_stack_files_give_url_and_admin_key(stack: Path) -> None:
    assert Settings.load() == Settings(api_url=STACK_URL, token="af_admin_key")


def test_env_beats_stack_files(stack: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AF_API_URL", "https://af.example.org/")
    monkeypatch.setenv("AF_TOKEN", "env-token")

    assert Settings.load() == Settings(api_url="https://af.example.org", token="env-token")


def test_arguments_beat_env(stack: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AF_API_URL", "https://env.example.org")
    monkeypatch.setenv("AF_TOKEN", "env-token")

    assert Settings.load("https://arg.example.org", "arg-token") == Settings("https://arg.example.org", "arg-token")


def test_empty_env_counts_as_unset(stack: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AF_API_URL", "")
    monkeypatch.setenv("AF_TOKEN", "")

    assert Settings.load() == Settings(api_url=STACK_URL, token="af_admin_key")


def test_admin_key_goes_to_the_local_stack_only(stack: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AF_API_URL", "https://elsewhere.example.org")
    assert Settings.load().token is None

    monkeypatch.setenv("AF_API_URL", STACK_URL)
    assert Settings.load().token == "af_admin_key"


def test_stack_still_starting_has_no_url_yet(home: Path) -> None:
    (home / "stack.json").write_text(json.dumps({"api_url": ""}))
    (home / "admin.key").write_text("af_admin_key")

    assert Settings.load() == Settings(api_url="http://127.0.0.1:8080", token=None)


@pytest.mark.parametrize("content", ["{not json", "[]", '{"api_url": 8080}'])
def test_malformed_stack_file_is_named(home: Path, content: str) -> None:
    (home / "stack.json").write_text(content)

    with pytest.raises(FileError, match=r"stack\.json: ") as caught:
        Settings.load()
    assert str(home) in str(caught.value)


def test_malformed_stack_file_is_not_read_when_not_needed(home: Path) -> None:
    (home / "stack.json").write_text("{not json")

    assert Settings.load("http://h:1", "t") == Settings("http://h:1", "t")


def test_default_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_home(uid=0) == Path("/var/lib/agentflow")
    assert default_home(uid=1000) == tmp_path / "state" / "agentflow"

    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_home(uid=1000) == tmp_path / ".local" / "state" / "agentflow"
