"""The launcher of a warm runsc sandbox: it runs inside the sandbox, started before its call is known.

It blocks on stdin until the backend sends the call: a 4-byte big-endian length and a JSON document
{"argv": [...], "env": {...}}; then it becomes the tool with execvpe, so whatever follows on stdin is the
tool's input and the tool's exit is the sandbox's. EOF before a whole call (the pool is being emptied) ends
it quietly. The backend passes this file's source to `python3 -I -S -c`: standard library only, and nothing
here may write to stdout, which is the tool's.
"""

import json
import os

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
    try:
        os.execvpe(argv[0], argv, call["env"])
    except OSError as error:
        os.write(2, f"{START_FAILED_PREFIX}{argv[0]!r}: {error.strerror}\n".encode())
        os._exit(START_FAILED)


if __name__ == "__main__":
    _main()
