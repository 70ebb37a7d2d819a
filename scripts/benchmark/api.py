"""The server's v2 API as the measurements call it, with every answer checked."""

from __future__ import annotations

import asyncio
import json
import uuid

from .checks import expect
from .connection import Connection
from .services import Server
from .signing import Signer

QUERY = {"mode": "query", "code": "print(1)"}
BATCH = {"mode": "batch", "code": "", "options": {"build": "*", "exec": "*"}}


def encoded(body: dict) -> bytes:
    return json.dumps(body).encode()


NOOP_BODY = encoded({"echo": "bench"})
QUERY_BODY = encoded(QUERY)
CONTINUE_BODY = encoded({"mode": "continue", "code": ""})
BATCH_BODY = encoded(BATCH)
JSON = "application/json"


class Api:
    """The server's API on keep-alive Connections, signed by a Signer (shared by the
    clients of a throughput figure). Requests one after the other use one connection;
    concurrent ones (destroying many kernels at once) open more, kept for reuse."""

    def __init__(self, server: Server, signer: Signer | None = None) -> None:
        self.signer = signer or Signer(server)
        self.address = server.address
        self.idle: list[Connection] = []

    async def close(self) -> None:
        idle, self.idle = self.idle, []
        await asyncio.gather(*(connection.close() for connection in idle))

    async def request(self, method: str, path: str, body: bytes = b"", mime: str = "") -> bytes:
        """The answer's body; an error status raises."""
        request = self.signer.head(method, path, mime, body) + body
        connection = self.idle.pop() if self.idle else Connection(*self.address)
        try:
            async with asyncio.timeout(120):
                status, answer = await connection.exchange(request)
        except BaseException:
            await connection.close()
            raise
        self.idle.append(connection)
        expect(status < 400, f"{method} {path}: {status} {answer[:1000]!r}")
        return answer

    async def warm(self, lang: str = "python3") -> int:
        """How many `lang` kernels wait in the server's pool (a public endpoint)."""
        rows = json.loads(await self.request("GET", "/v2/kernel/languages"))["languages"]
        return next(row["warm"] for row in rows if row["lang"] == lang)

    async def noop(self) -> None:
        await self.request("POST", "/v2/authorize", NOOP_BODY, JSON)

    async def create(self, lang: str = "python3") -> str:
        body = encoded({"lang": lang, "clientSessionToken": f"bench-{uuid.uuid4().hex}"})
        return json.loads(await self.request("POST", "/v2/kernel/create", body, JSON))["kernelId"]

    async def destroy(self, kernel_id: str) -> None:
        await self.request("DELETE", f"/v2/kernel/{kernel_id}")

    async def destroy_all(self, kernel_ids: list[str], at_once: int = 32) -> None:
        """Destroy them, `at_once` at a time: each concurrent request opens a
        connection, and the server closes those past its max_connections (all of
        5,000 kernels at once got 503s)."""
        gate = asyncio.Semaphore(at_once)

        async def one(kernel_id: str) -> None:
            async with gate:
                await self.destroy(kernel_id)

        await asyncio.gather(*(one(k) for k in kernel_ids))

    async def upload(self, kernel_id: str, name: str, data: bytes) -> None:
        """multipart/form-data built here; the v2 face signs its body as empty."""
        boundary = uuid.uuid4().hex
        part = f'Content-Disposition: form-data; name="src"; filename="{name}"\r\n'
        body = f"--{boundary}\r\n{part}\r\n".encode() + data + f"\r\n--{boundary}--\r\n".encode()
        mime = f"multipart/form-data; boundary={boundary}"
        await self.request("POST", f"/v2/kernel/{kernel_id}/upload", body, mime)

    async def execute(self, kernel_id: str, body: bytes) -> str:
        """Run to "finished", continuing while the server holds the run; its stdout."""
        stdout = []
        path = f"/v2/kernel/{kernel_id}"
        while True:
            result = json.loads(await self.request("POST", path, body, JSON))["result"]
            stdout += [text for kind, text in result["console"] if kind == "stdout"]
            if result["status"] == "finished":
                return "".join(stdout)
            expect(result["status"] != "waiting-input", f"unexpected waiting-input: {result}")
            body = CONTINUE_BODY

    async def query(self, kernel_id: str) -> None:
        stdout = await self.execute(kernel_id, QUERY_BODY)
        expect(stdout == "1\n", f"print(1) printed {stdout!r}")
