"""A lean keep-alive HTTP/1.1 client for load generation.

A general client (httpx) spends about a millisecond of CPU per request, which on a 2-core machine would
be charged to the system under test; this one writes the request bytes and reads one response.
"""

import asyncio


class LeanHTTP:
    def __init__(self, host: str, port: int, token: str) -> None:
        self._host = host
        self._port = port
        self._auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self._host, self._port)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        return await self.request("POST", path, body)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """One request and its answer, whose body must come with a Content-Length (no chunked encoding)."""
        assert self._reader is not None and self._writer is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self._host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode()
        self._writer.write(head + self._auth + b"\r\n" + body)
        status_line = await self._reader.readline()
        length = 0
        while True:
            line = await self._reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
            elif name.strip().lower() == b"transfer-encoding":
                raise RuntimeError(f"{method} {path}: a {value.strip().decode()} answer, which this client cannot read")
        return int(status_line.split()[1]), await self._reader.readexactly(length)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()
