"""Letting a stream in, keeping count of the open ones, and ending them.

A handshake is refused before the upgrade, with a problem document as for any
request: a bad or missing signature (401), someone else's or an unknown kernel
(404), more streams than the kernel or the key may have open (412), a key over
its rate limit (429). Only the terminal may be opened unsigned, as the 0.9.8
manager allowed (sorna-client 0.9.8 sends no signature on it), and only where
`[v2] unsigned_terminal` lets the client's address in; the kernel's id (128
random bits) is then the capability.

Every open stream is counted per kernel and per key, and its task is kept, so
that a server that stops can tell each client first (`server-restarting`, spec
§7.3) and close it with 1012, before uvicorn drops the connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from starlette.websockets import WebSocket

from ....engine.errors import EngineError, InvalidRequest, KernelNotFound, QuotaExceeded
from ....engine.session import Session
from ..problems import Problem, from_engine, problem_response
from ..settings import V2Settings
from ..signed import authenticated, checked_date, engine_of, verified_handshake
from .socket import NORMAL, POLICY, RESTARTING, SERVER_ERROR, Gone, StreamEnd, StreamSocket

log = logging.getLogger("sandbox.server")
STOP_SECONDS = 3.0  # how long a stopping server waits for streams to say goodbye
RESTARTING_MESSAGE = "The server is restarting. Connect again in a moment."


@dataclass(frozen=True)
class Kind:
    """One kind of stream: how it serves, and its dialect's error message."""

    name: str  # "execute", "pty", "events"
    serve: Callable[[StreamSocket, Session, WebSocket], Awaitable[None]]
    error_frame: Callable[[str], dict]
    restarting_frame: Callable[[str], dict]
    unsigned: bool = False  # may be opened without a signature (the terminal)


class OpenStreams:
    """The open streams of a server, counted per kernel and per key."""

    def __init__(self, settings: V2Settings) -> None:
        self.settings = settings
        self.per_kernel: Counter[str] = Counter()
        self.per_key: Counter[str] = Counter()
        self.tasks: set[asyncio.Task] = set()
        self.stopping = False

    @contextlib.contextmanager
    def held(self, session: Session, access_key: str) -> Iterator[None]:
        """One stream's slot (Problem quota-exceeded past a limit), given back at the
        end; the current task is ended by `stop_all`."""
        if self.stopping:
            raise Problem("service-unavailable", "the server is stopping")
        most_kernel, most_key = (
            self.settings.max_streams_per_kernel,
            self.settings.max_streams_per_key,
        )
        if self.per_kernel[session.id] >= most_kernel:
            raise Problem("quota-exceeded", f"at most {most_kernel} streams per kernel")
        if access_key and self.per_key[access_key] >= most_key:
            raise Problem("quota-exceeded", f"at most {most_key} streams per key")
        task = asyncio.current_task()
        assert task is not None
        self.per_kernel[session.id] += 1
        self.per_key[access_key] += 1
        self.tasks.add(task)
        try:
            yield
        finally:
            self.tasks.discard(task)
            for counter, name in ((self.per_kernel, session.id), (self.per_key, access_key)):
                counter[name] -= 1
                if counter[name] <= 0:
                    del counter[name]

    async def stop_all(self) -> None:
        """Tell every stream the server is restarting and wait (a little) for them."""
        self.stopping = True
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_SECONDS)


def _client_may_skip_signing(websocket: WebSocket, settings: V2Settings) -> bool:
    if settings.unsigned_terminal == "any":
        return True
    if settings.unsigned_terminal == "off" or websocket.client is None:
        return False
    try:
        return ipaddress.ip_address(websocket.client.host).is_loopback
    except ValueError:
        return False


def _admit(websocket: WebSocket, kind: Kind) -> tuple[Session, str]:
    """The stream's kernel and its caller's access key ("" unsigned). Problem if not."""
    engine = engine_of(websocket)
    settings: V2Settings = websocket.app.state.v2
    kernel_id = websocket.path_params["kernel_id"]
    unsigned = "authorization" not in websocket.headers and authenticated(websocket) is None
    try:
        if unsigned and kind.unsigned and _client_may_skip_signing(websocket, settings):
            checked_date(websocket)
            session = engine.session_by_id(kernel_id)
            session.keep_alive()
            return session, ""
        keypair = verified_handshake(websocket)
        return engine.session(keypair, kernel_id), keypair.access_key
    except EngineError as e:
        raise from_engine(e) from e


def endpoint(kind: Kind) -> Callable[[WebSocket], Awaitable[None]]:
    """The ASGI endpoint of a kind of stream: admission, the slot, the socket, and
    how the stream ends (a StreamEnd's code, the kernel gone, the server stopping)."""

    async def serve(websocket: WebSocket) -> None:
        streams: OpenStreams = websocket.app.state.streams
        settings: V2Settings = websocket.app.state.v2
        try:
            session, access_key = _admit(websocket, kind)
            with streams.held(session, access_key):
                await websocket.accept()
                sock = StreamSocket(
                    websocket, settings.max_frame_bytes, settings.stream_send_seconds,
                    on_message=session.keep_alive,
                )  # fmt: skip
                sock.start()
                try:
                    await _run(kind, sock, session, websocket)
                finally:
                    await sock.stop_reading()
        except Problem as problem:
            await websocket.send_denial_response(problem_response(websocket, problem))

    return serve


async def _run(kind: Kind, sock: StreamSocket, session: Session, websocket: WebSocket) -> None:
    try:
        await kind.serve(sock, session, websocket)
        await sock.close(NORMAL, "")
    except Gone:
        pass
    except StreamEnd as end:
        frame = end.frame
        if frame is None and end.code != NORMAL:
            frame = kind.error_frame(end.reason)
        await sock.close(end.code, end.reason, frame)
    except KernelNotFound as e:
        reason = f"the kernel is gone: {e.detail}" if e.detail else "the kernel is gone"
        await sock.close(NORMAL, reason, kind.error_frame(reason))
    except (InvalidRequest, QuotaExceeded) as e:  # what the stream asked for: refused
        reason = e.detail or str(e)
        await sock.close(POLICY, reason, kind.error_frame(reason))
    except EngineError as e:
        title = from_engine(e).title
        await sock.close(SERVER_ERROR, title, kind.error_frame(title))
    except asyncio.CancelledError:  # the server is stopping (OpenStreams.stop_all)
        frame = kind.restarting_frame(RESTARTING_MESSAGE)
        await sock.close(RESTARTING, "server restarting", frame)
        raise
    except Exception:
        log.exception("stream %s on kernel %s", kind.name, session.id)
        await sock.close(SERVER_ERROR, "server error", kind.error_frame("internal server error"))
