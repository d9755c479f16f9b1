"""A PostgreSQL cluster of the machine's own binaries, under a directory of ours.

PostgreSQL refuses to run as root, so when we are root the cluster belongs to, and runs as, the
unprivileged user ``nobody``, who may be unable to enter the directory meant for it (a private ``mktemp -d``
folder, anything under /root): then the cluster lives in a temporary directory of its own (``scratch_dir``).
"""

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from control_plane.stack.processes import StackError, free_port, spawn, tcp_open, wait_until

SUPERUSER = "agentflow"
DATABASE = "agentflow"
_SEARCH = ("/usr/lib/postgresql", "/usr/local/pgsql/bin", "/opt/homebrew/bin")


@dataclass(frozen=True, slots=True)
class RunAs:
    uid: int | None
    gid: int | None
    name: str = ""
    """The user's name, when it is not us."""

    @staticmethod
    def for_postgres() -> "RunAs":
        if os.geteuid() != 0:
            return RunAs(None, None)
        nobody = pwd.getpwnam("nobody")
        return RunAs(nobody.pw_uid, nobody.pw_gid, nobody.pw_name)

    def can_enter(self, path: Path) -> bool:
        """Whether this user may enter the directory ``path`` (and so every directory above it)."""
        if self.uid is None:
            return True
        # The system's test, not PATH's: a PATH directory of ours may be closed to this user.
        test = shutil.which("test", path=os.defpath) or "test"
        result = subprocess.run(
            [test, "-x", str(path)], user=self.uid, group=self.gid, extra_groups=[], cwd="/", check=False
        )
        return result.returncode == 0


@dataclass(frozen=True, slots=True)
class PostgresServer:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"


def bin_path(name: str) -> str:
    """A PostgreSQL program: from PATH, else the newest of Debian's /usr/lib/postgresql/<major>/bin."""
    found = shutil.which(name)
    if found:
        return found
    root = Path(_SEARCH[0])
    if root.is_dir():
        for major in sorted(root.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0, reverse=True):
            candidate = major / "bin" / name
            if candidate.exists():
                return str(candidate)
    raise StackError(
        f"PostgreSQL's {name} not found: install PostgreSQL (`apt-get install postgresql`) or set AF_DATABASE_URL"
    )


def _own(path: Path, run_as: RunAs) -> None:
    if run_as.uid is not None and run_as.gid is not None:
        os.chown(path, run_as.uid, run_as.gid)


def scratch_dir(run_as: RunAs) -> Path:
    """A new empty directory of ``run_as`` under the system's temp dir (which every user may enter), for a
    cluster that cannot live where it was meant to; whoever asked for it deletes it."""
    path = Path(tempfile.mkdtemp(prefix="agentflow-postgres-"))
    _own(path, run_as)
    return path


def init_cluster(data_dir: Path, log: Path, run_as: RunAs) -> None:
    """Create the cluster in ``data_dir`` unless one is already there."""
    if (data_dir / "PG_VERSION").exists():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    _own(data_dir, run_as)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        result = subprocess.run(
            [
                bin_path("initdb"),
                "-D",
                str(data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            user=run_as.uid,
            group=run_as.gid,
            extra_groups=[] if run_as.uid is not None else None,
            cwd="/",
            check=False,
        )
    if result.returncode != 0:
        raise StackError(f"initdb failed with code {result.returncode}; see {log}")


def start(
    data_dir: Path, log: Path, *, port: int | None = None, durable: bool = True, timeout: float = 60.0
) -> PostgresServer:
    """Start ``postgres`` on 127.0.0.1 only (no Unix socket); return once it accepts connections.

    ``durable=False`` turns off fsync: only for throw-away clusters in tests.
    """
    run_as = RunAs.for_postgres()
    init_cluster(data_dir, log, run_as)
    port = port or free_port()
    argv = [
        bin_path("postgres"),
        "-D",
        str(data_dir),
        "-p",
        str(port),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=200",
        "-c",
        "shared_buffers=256MB",
    ]
    if not durable:
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    process = spawn("postgres", argv, log, user=run_as.uid, group=run_as.gid, cwd=Path("/"))
    wait_until("postgres", lambda: _accepts(port), timeout=timeout, process=process, log=log)
    return PostgresServer(process, port, log)


def _accepts(port: int) -> bool:
    if not tcp_open(port):
        return False
    result = subprocess.run(
        [bin_path("pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER, "-q"], check=False
    )
    return result.returncode == 0
