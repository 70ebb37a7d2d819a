"""The server's log lines, for a person at a terminal or for a log pipeline.

Three formats ([server] log_format): "text" (the message, then its fields as
key=value), "logfmt" (every part as key=value) and "json" (one object per
line). Fields come from a record's `extra` (a kernel's lifecycle logs its id,
its owner's access key, the event and the reason) and from the HTTP request
being served: each gets an id (the client's `X-Request-Id` when it is a short
token, else a new one), echoed in the response's `X-Request-Id` header and put
on every line logged while serving it. Under systemd (`JOURNAL_STREAM` set) no
timestamp is written: the journal stamps each line itself.

What is logged is ids, keys' access halves, reasons and counts: never a secret
key, a signature or a client's code (the loggers are only given those fields).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

FORMATS = ("text", "logfmt", "json")
# record attributes that are not fields (logging.LogRecord's own)
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's message with terminal colours
}
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def fields(record: logging.LogRecord) -> dict[str, object]:
    """The record's fields: the request being served, then its `extra`."""
    found: dict[str, object] = {}
    rid = request_id.get()
    if rid is not None:
        found["request_id"] = rid
    found.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
    return found


_QUOTED = re.compile(r'[ ="\\\n\t]')  # a value with any of these is written as a JSON string


def _logfmt_value(value: object) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if text and not _QUOTED.search(text):
        return text
    return json.dumps(text)


class _Formatter(logging.Formatter):
    def __init__(self, timestamps: bool) -> None:
        super().__init__()
        self.timestamps = timestamps

    def stamp(self, record: logging.LogRecord) -> str:
        moment = time.gmtime(record.created)
        return time.strftime("%Y-%m-%dT%H:%M:%S", moment) + f".{int(record.msecs):03d}Z"


class TextFormatter(_Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [self.stamp(record)] if self.timestamps else []
        parts += [record.levelname, record.name, record.getMessage()]
        parts += [f"{k}={_logfmt_value(v)}" for k, v in fields(record).items()]
        line = " ".join(parts)
        return line + ("\n" + self.formatException(record.exc_info) if record.exc_info else "")


class LogfmtFormatter(_Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = {"time": self.stamp(record)} if self.timestamps else {}
        parts |= {"level": record.levelname.lower(), "logger": record.name,
                  "msg": record.getMessage(), **fields(record)}  # fmt: skip
        if record.exc_info:
            parts["error"] = self.formatException(record.exc_info)
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in parts.items())


class JsonFormatter(_Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {"time": self.stamp(record)} if self.timestamps else {}
        line |= {"level": record.levelname.lower(), "logger": record.name,
                 "msg": record.getMessage(), **fields(record)}  # fmt: skip
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def formatter(kind: str) -> logging.Formatter:
    timestamps = "JOURNAL_STREAM" not in os.environ
    return {"text": TextFormatter, "logfmt": LogfmtFormatter, "json": JsonFormatter}[kind](
        timestamps
    )


def configure(kind: str) -> dict:
    """Route the server's and uvicorn's loggers through one handler in `kind`; the
    dictConfig uvicorn is given (so it does not install its own)."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(kind))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    return {"version": 1, "disable_existing_loggers": False}


class RequestIds:
    """ASGI layer: an id for each HTTP request and WebSocket, in the logs of
    everything done while serving it and in the response's X-Request-Id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)
        token = request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-request-id", rid.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
