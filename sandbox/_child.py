"""The init of every runsc or docker sandbox: it runs inside the sandbox, started before its call is known.

It blocks on stdin until the backend sends the call: a 4-byte big-endian length and a JSON document
{"argv": [...], "env": {...}, "nonce": "...", "files": {...}}; it writes the files (relative paths the
backend has checked; runsc puts them in place itself) into its working dir, then starts the tool as its
child, with stdin, stdout and stderr its own (whatever follows the call on stdin is the tool's input),
waits for it with wait4 and writes on stderr one line: a newline, the nonce, and {"exit_code",
"run_seconds", "cpu_seconds", "max_rss_kb"}. The nonce is a secret of the call that the tool never sees, so
the tool cannot forge the report; the backend takes the line out of stderr. With the report the backend has
the call's end without waiting for the sandbox's teardown. EOF before a whole call (the pool is being
emptied) ends it quietly.

The backend passes this file's source to `python3 -I -S -c`: standard library only, and nothing here may
write to stdout, which is the tool's.
"""

import json
import os
import time

START_FAILED = 127
START_FAILED_PREFIX = "agentflow launcher: cannot start "


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
    size = int.from_bytes(_read_exactly(4), "big")
    call = json.loads(_read_exactly(size))
    argv = call["argv"]
    for name, content in call.get("files", {}).items():
        os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
        with open(name, "w", encoding="utf-8") as file:
            file.write(content)
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvpe(argv[0], argv, call["env"])
        except OSError as error:
            os.write(2, f"{START_FAILED_PREFIX}{argv[0]!r}: {error.strerror}\n".encode())
        os._exit(START_FAILED)
    os.close(0)
    os.close(1)
    _, status, usage = os.wait4(pid, 0)
    report = {
        "exit_code": os.waitstatus_to_exitcode(status),
        "run_seconds": time.monotonic() - started,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "max_rss_kb": usage.ru_maxrss,
    }
    os.write(2, b"\n" + call["nonce"].encode() + json.dumps(report).encode() + b"\n")


if __name__ == "__main__":
    _main()
