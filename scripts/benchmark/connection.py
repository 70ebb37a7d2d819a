"""The benchmark's HTTP client: lean, so that it weighs on the figures as little as
it can while it shares the machine's cores with the server."""

from __future__ import annotations

import asyncio
import contextlib


class Connection:
    """A minimal HTTP/1.1 client on one keep-alive loopback connection.

    A request is written whole, in one write; of the answer only the status code and
    the body are read (the server always sends Content-Length). After a `Connection:
    close` answer, or once the server has closed the idle connection (its keep-alive
    timeout), the next request opens a new one; a request that met such a close before
    any answer is sent once more on a new connection: the server never read it."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """(status code, body) of the answer to one complete request."""
        while True:
            reused = self.reader is not None and not self.reader.at_eof()
            if not reused:
                await self.close()
                self.reader, self.writer = await asyncio.open_connection(*self.address)
            reader, writer = self.reader, self.writer
            assert reader is not None and writer is not None
            writer.write(request)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as e:
                await self.close()
                if reused and not getattr(e, "partial", b""):
                    continue  # closed while idle, before our request
                raise
            return await self._rest(reader, head)

    async def _rest(self, reader: asyncio.StreamReader, head: bytes) -> tuple[int, bytes]:
        lines = head.split(b"\r\n")
        status, length, close = int(lines[0].split(b" ", 2)[1]), -1, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        if length < 0:
            await self.close()
            raise RuntimeError(f"an answer without Content-Length: {lines[0]!r}")
        body = await reader.readexactly(length)
        if close:
            await self.close()
        return status, body
