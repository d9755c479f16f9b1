"""Where the API is and how to authenticate: resolved once, then passed down as a frozen `Settings`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ._errors import FileError
from ._files import parse_json
from ._login import Login, forget_login, load_login

DEFAULT_API_URL = "http://127.0.0.1:8080"


def default_home(uid: int | None = None) -> Path:
    """The embedded stack's state directory when `AF_HOME` is unset.

    `uid` defaults to the effective user: root keeps the stack under /var/lib like a system service,
    anyone else under their XDG state directory.
    """
    if (os.geteuid() if uid is None else uid) == 0:
        return Path("/var/lib/agentflow")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "agentflow"


@dataclass(frozen=True)
class Settings:
    """How a client reaches the API."""

    api_url: str
    """Base URL of the HTTP API, without a trailing slash."""
    token: str | None
    """Bearer token sent on every request; None sends no `Authorization` header (or the login's)."""
    login: Login | None = None
    """The tokens `af login` stored for this API, used (and refreshed) when no token is given."""
    forgot_login: bool = False
    """A login stored for this URL was issued by another stack than the local one now serving it: it was
    removed, and the local stack's key is used instead."""

    @classmethod
    def load(cls, api_url: str | None = None, token: str | None = None, *, use_login: bool = True) -> Settings:
        """Resolve each setting from, strongest first: the arguments, `AF_API_URL` / `AF_TOKEN`, the
        login stored by `af login` for the URL (unless `use_login` is false), the embedded stack's files under
        `AF_HOME`, the default URL."""
        home = Path(os.environ.get("AF_HOME") or default_home())
        chosen_url = api_url or os.environ.get("AF_API_URL") or None
        token = token or os.environ.get("AF_TOKEN") or None
        stack_url, stack_id = _local_stack(home) if chosen_url is None or token is None else (None, "")
        url = (chosen_url or stack_url or DEFAULT_API_URL).rstrip("/")
        forgot = False
        if token is None and use_login and (login := load_login(url)) is not None:
            if url != stack_url or not stack_id or login.stack_id == stack_id:
                return cls(api_url=url, token=None, login=login)
            # The stack that issued it is gone (its successor knows none of its tokens): only `af login`
            # could make it useful again, and that replaces it anyway.
            forgot = forget_login(url)
        if token is None and url == stack_url:
            # The local admin key only ever goes to the local stack, never to another server the user
            # pointed us at.
            token = _admin_key(home)
        return cls(api_url=url, token=token, forgot_login=forgot)


def _local_stack(home: Path) -> tuple[str | None, str]:
    """The local stack's API URL (None without one) and its installation's id (empty until known)."""
    path = home / "stack.json"
    text = _read_if_present(path)
    if text is None:
        return None, ""
    stack = parse_json(text, str(path))
    if not isinstance(stack, dict) or not all(isinstance(stack.get(k, ""), str) for k in ("api_url", "stack_id")):
        raise FileError(f"{path}: expected an object with api_url and stack_id strings")
    # `af up` writes the file before the API listens, with an empty URL until then.
    return stack.get("api_url", "").rstrip("/") or None, stack.get("stack_id", "")


def _admin_key(home: Path) -> str | None:
    return (_read_if_present(home / "admin.key") or "").strip() or None


def _read_if_present(path: Path) -> str | None:
    """The file's text; None when there is no such file (no embedded stack here)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FileError(f"cannot read {path}: {exc.strerror}") from exc
