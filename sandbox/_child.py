"""The Python init of docker sandboxes, and of runsc ones where init.c cannot be built; started before its call
is known.

It forks at once; the child blocks on stdin until the backend sends the call (see `request`): the nonce, the
argv, the environment and the files, which it writes into its working dir (relative paths the backend has
checked; runsc puts them in place itself). Then it execs the tool, with stdin, stdout and stderr its own
(whatever follows the call on stdin is the tool's input). The parent waits for it with wait4 and writes on
stderr one line: a newline, the nonce, and {"exit_code", "run_seconds", "cpu_seconds", "max_rss_kb"} in
JSON. The nonce is a secret of the call that the tool never sees, so the tool cannot forge the report; the
backend takes the line out of stderr. With the report the backend has the call's end without waiting for
the sandbox's teardown. EOF before a whole call (the pool is being emptied) ends it quietly.

The backend passes this file's source to `python3 -I -S -c`: built-in modules only (importing json alone
costs about 17 ms in a sandbox), and nothing here may write to stdout, which is the tool's.
"""

import os
import time

START_FAILED = 127
START_FAILED_PREFIX = "agentflow launcher: cannot start "


def request(nonce: str, argv: list[str], env: dict[str, str], files: dict[str, str]) -> bytes:
    """A call as the init reads it: a 4-byte big-endian length, then fields of a 4-byte length and UTF-8
    bytes each: the nonce, the number of arguments, the arguments, the number of variables, NAME=value for
    each, then name and content of each file."""
    fields = [nonce, str(len(argv)), *argv, str(len(env)), *(f"{k}={v}" for k, v in env.items())]
    for name, content in files.items():
        fields += [name, content]
    body = b"".join(len(data).to_bytes(4, "big") + data for data in (field.encode() for field in fields))
    return len(body).to_bytes(4, "big") + body


def _fields(body: bytes) -> list[str]:
    found, at = [], 0
    while at < len(body):
        size = int.from_bytes(body[at : at + 4], "big")
        found.append(body[at + 4 : at + 4 + size].decode())
        at += 4 + size
    return found


def _read_exactly(size: int) -> bytes:
    # os.read, not sys.stdin: a buffered reader could swallow the start of the tool's input.
    data = b""
    while len(data) < size:
        chunk = os.read(0, size - len(data))
        if not chunk:
            os._exit(0)
        data += chunk
    return data


def _main() -> None:
    # Forked before the call comes: a fork costs about 10 ms under gVisor's ptrace platform, which the call
    # then does not wait for. The child takes the call and execs the tool; it hands the nonce over on a pipe
    # that closes with the exec (close-on-exec), which starts the run's clock.
    nonce_out, nonce_in = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(nonce_out)
        _become_tool(nonce_in)
    os.close(nonce_in)
    os.close(0)
    os.close(1)
    nonce = b""
    while chunk := os.read(nonce_out, 64):
        nonce += chunk
    started = time.monotonic()
    _, status, usage = os.wait4(pid, 0)
    if not nonce:  # no call came (the pool is being emptied)
        return
    report = (
        f'{{"exit_code": {os.waitstatus_to_exitcode(status)}, "run_seconds": {time.monotonic() - started!r}, '
        f'"cpu_seconds": {usage.ru_utime + usage.ru_stime!r}, "max_rss_kb": {usage.ru_maxrss}}}'
    )
    os.write(2, b"\n" + nonce + report.encode() + b"\n")


def _become_tool(nonce_in: int) -> None:
    fields = _fields(_read_exactly(int.from_bytes(_read_exactly(4), "big")))
    nonce, argc = fields[0], int(fields[1])
    argv = fields[2 : 2 + argc]
    envc = int(fields[2 + argc])
    env = dict(item.split("=", 1) for item in fields[3 + argc : 3 + argc + envc])
    files = fields[3 + argc + envc :]
    for name, content in zip(files[::2], files[1::2], strict=True):
        os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
        with open(name, "w", encoding="utf-8") as file:
            file.write(content)
    os.write(nonce_in, nonce.encode())
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as error:
        os.write(2, f"{START_FAILED_PREFIX}{argv[0]!r}: {error.strerror}\n".encode())
    os._exit(START_FAILED)


if __name__ == "__main__":
    _main()
