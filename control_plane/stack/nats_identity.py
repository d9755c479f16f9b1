"""Who may do what on the embedded stack's NATS server: one user per role, each with its own password.

- ``control-plane``: the platform itself: every ``af.`` subject, the JetStream API, acknowledgements.
- ``worker-<tenant>``: the workers of one tenant. They pull and acknowledge that tenant's task consumers
  only (named one by one: a consumer per queue granted), publish that tenant's results and its tools' live
  stderr, hear that tenant's cancel notices and keep their heartbeats under that tenant in the worker
  bucket. Another tenant's tasks are out of reach: the server refuses the pull, the subscription and the
  publish.
- ``admin``: everything, for operators' tools and the benchmark; no AgentFlow process uses it.

Every user reads replies under its own inbox prefix (``_INBOX.<user>``), so no one but the admin can read
another's replies. The passwords are random, made when the stack starts; they are stored in clear in
``identities.json`` and the generated ``nats.conf`` (what nats-server reads), both readable by their
owner only, and each process is given its own through ``AF_NATS_USER`` and ``AF_NATS_PASSWORD``.
"""

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from bus import subjects
from bus.connection import inbox_prefix

CONTROL_PLANE = "control-plane"
ADMIN = "admin"
IDENTITIES_FILE = "identities.json"
CONFIG_FILE = "nats.conf"


def worker_user(tenant: str) -> str:
    return f"worker-{subjects.check_name('tenant', tenant)}"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, never briefly readable by others."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


@dataclass
class Identities:
    """The users of one stack's NATS server and the queues granted to each tenant's workers."""

    directory: Path
    passwords: dict[str, str] = field(default_factory=dict)
    queues: dict[str, list[str]] = field(default_factory=dict)
    """Tenant → the queues its workers may pull."""

    @classmethod
    def create(cls, directory: Path) -> "Identities":
        """Fresh passwords for the control plane, the admin and the workers of tenant ``default``, which may
        pull its ``default`` queue."""
        identities = cls(directory, {user: secrets.token_urlsafe(32) for user in (CONTROL_PLANE, ADMIN)})
        identities.grant("default", "default")
        return identities

    @classmethod
    def load(cls, directory: Path) -> "Identities":
        raw = json.loads((directory / IDENTITIES_FILE).read_text())
        return cls(directory, raw["passwords"], raw["queues"])

    @property
    def config(self) -> Path:
        return self.directory / CONFIG_FILE

    def grant(self, tenant: str, queue: str) -> bool:
        """Let ``tenant``'s workers pull ``queue`` (creating their user); True if that changed the config."""
        user = worker_user(tenant)
        queues = self.queues.setdefault(tenant, [])
        if subjects.check_name("queue", queue) in queues and user in self.passwords:
            return False
        self.passwords.setdefault(user, secrets.token_urlsafe(32))
        queues.append(queue)
        self.save()
        return True

    def env(self, user: str) -> dict[str, str]:
        """The settings that give a process the identity ``user``."""
        return {"AF_NATS_USER": user, "AF_NATS_PASSWORD": self.passwords[user]}

    def url(self, server_url: str, user: str = ADMIN) -> str:
        """``server_url`` with ``user``'s credentials in it, for clients that take nothing but a URL."""
        parts = urlsplit(server_url)
        netloc = f"{quote(user, safe='')}:{quote(self.passwords[user], safe='')}@{parts.netloc}"
        return urlunsplit(parts._replace(netloc=netloc))

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        _write_private(
            self.directory / IDENTITIES_FILE, json.dumps({"passwords": self.passwords, "queues": self.queues})
        )
        _write_private(self.config, render(self))


RESPONSES_PER_REQUEST = 1000
"""Replies the control plane may send to one request: a model turn's progress words, then its answer."""


def _user(
    name: str, password: str, publish: list[str] | None, subscribe: list[str] | None, *, responds: bool = False
) -> dict[str, Any]:
    """``responds``: the user may answer the requests it receives (and only those) on their reply subjects."""
    user: dict[str, Any] = {"user": name, "password": password}
    if publish is not None and subscribe is not None:
        user["permissions"] = {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}
        if responds:
            # A turn's answer comes after a word every two seconds that the call goes on (bus.model_turns).
            user["permissions"]["allow_responses"] = {"max": RESPONSES_PER_REQUEST, "expires": "10m"}
    return user


def control_plane_permissions() -> tuple[list[str], list[str]]:
    publish = [
        "af.>",
        "$JS.API.>",
        "$JS.ACK.>",
        "$JS.FC.>",
        f"$KV.{subjects.WORKERS_BUCKET}.>",
        f"$KV.{subjects.MODELS_BUCKET}.>",
    ]
    subscribe = ["af.>", f"{inbox_prefix(CONTROL_PLANE)}.>"]
    return publish, subscribe


def worker_permissions(tenant: str, queues: list[str]) -> tuple[list[str], list[str]]:
    """What the workers of ``tenant`` need, and nothing of another tenant's."""
    stream = subjects.TASKS_STREAM
    publish = [
        f"af.{tenant}.results.*",
        subjects.model_turns(tenant),
        f"af.{tenant}.logs.*",
        f"$JS.API.STREAM.INFO.KV_{subjects.WORKERS_BUCKET}",
        f"$KV.{subjects.WORKERS_BUCKET}.{tenant}.*",
    ]
    for queue in queues:
        consumer = subjects.task_consumer(tenant, queue)
        publish += [
            f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
            # The filter is part of the subject, so a worker can create its consumer for its own subject only.
            f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}.{subjects.tasks(tenant, queue)}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
            f"$JS.ACK.{stream}.{consumer}.>",
        ]
    subscribe = [subjects.cancels(tenant), f"{inbox_prefix(worker_user(tenant))}.>"]
    return publish, subscribe


def render(identities: Identities) -> str:
    """nats-server's configuration (its format reads JSON) for these users."""
    passwords = identities.passwords
    users = [
        # The control plane answers workers' model turns (bus.model_turns) on their own inboxes.
        _user(CONTROL_PLANE, passwords[CONTROL_PLANE], *control_plane_permissions(), responds=True),
        _user(ADMIN, passwords[ADMIN], None, None),
    ]
    for tenant, queues in sorted(identities.queues.items()):
        users.append(_user(worker_user(tenant), passwords[worker_user(tenant)], *worker_permissions(tenant, queues)))
    return json.dumps({"authorization": {"users": users}}, indent=2) + "\n"
