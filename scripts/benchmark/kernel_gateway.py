"""The Jupyter Kernel Gateway baseline: its REST API, and a minimal websocket
client for print(1) on a kernel's channels."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import time
import uuid

import httpx

from .checks import expect
from .figures import BWRAP, KERNEL_GATEWAY, Figure, ms_since
from .services import free_port, service

GATEWAY = "jupyter-kernelgateway"


def ws_frame(payload: bytes) -> bytes:
    """One masked text frame (RFC 6455 §5.2), as a client must send it."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        size = bytes([0x80 | n])
    elif n < 1 << 16:
        size = bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        size = bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return bytes([0x81]) + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def ws_message(reader: asyncio.StreamReader) -> bytes:
    """The next data message from a server (unmasked frames); control frames skipped."""
    message = b""
    while True:
        head = await reader.readexactly(2)
        n = head[1] & 0x7F
        if n >= 126:
            n = int.from_bytes(await reader.readexactly(2 if n == 126 else 8), "big")
        payload = await reader.readexactly(n)
        opcode = head[0] & 0x0F
        if opcode == 0x8:
            raise ConnectionError("the kernel gateway closed the websocket")
        if opcode in (0x0, 0x1, 0x2):
            message += payload
            if head[0] & 0x80:
                return message


def execute_request(msg_id: str, code: str) -> dict:
    """A Jupyter messaging protocol (5.3) execute_request for the shell channel."""
    return {
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "bench",
                   "session": msg_id, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }  # fmt: skip


async def jupyter_execute(port: int, kernel_id: str, code: str) -> None:
    """Run `code` over the kernel's channels websocket until its execute_reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /api/kernels/{kernel_id}/channels HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        status = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0]
        expect(status.split()[1:2] == [b"101"], f"websocket refused: {status!r}")
        msg_id = uuid.uuid4().hex
        writer.write(ws_frame(json.dumps(execute_request(msg_id, code)).encode()))
        while True:
            msg = json.loads(await ws_message(reader))
            ours = msg["parent_header"].get("msg_id") == msg_id
            if ours and msg["header"]["msg_type"] == "execute_reply":
                expect(msg["content"]["status"] == "ok", f"execute_reply: {msg['content']}")
                return
    finally:
        writer.close()


async def gateway_start_execute(port: int, runs: int) -> list[float]:
    samples = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
        for _ in range(runs):
            t = time.perf_counter()
            kernel_id = (await http.post("/api/kernels", json={})).raise_for_status().json()["id"]
            await jupyter_execute(port, kernel_id, "print(1)")
            samples.append(ms_since(t))
            (await http.delete(f"/api/kernels/{kernel_id}")).raise_for_status()
    return samples


def gateway_baseline(runs: int, tmp: str) -> Figure | None:
    """Kernel start + print(1) through Jupyter Kernel Gateway; None if it is not installed."""
    gateway = shutil.which(GATEWAY)
    if gateway is None:
        return None
    port = free_port()
    argv = [gateway, "--KernelGatewayApp.ip=127.0.0.1", f"--KernelGatewayApp.port={port}"]
    with service(argv, f"http://127.0.0.1:{port}/api", os.path.join(tmp, "gateway.log")):
        samples = asyncio.run(gateway_start_execute(port, runs))
    return Figure(KERNEL_GATEWAY, samples, baseline=BWRAP)
