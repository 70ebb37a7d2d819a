"""The wire protocol between the host and a kernel: length-prefixed frames.

A frame is an 8-byte header (two big-endian u32: the JSON length and the blob
length), a UTF-8 JSON object, then an optional binary blob. JSON carries the
message; the blob carries bytes that would be costly to escape (console output,
file contents). Both sides treat the other's frames as untrusted input: lengths
are capped and a malformed frame is a protocol error, never a crash.

Messages, host -> kernel (the key is "op"):
  {"op": "query", "code": str}        run code in the kernel's REPL
  {"op": "input", "data": str}        answer a "waiting-input"; an optional
                                      "eof": true means end of input after
                                      data (sys.stdin.read() and iteration
                                      end; input() raises EOFError if data
                                      is empty)
  {"op": "interrupt"}                 SIGINT the running code (handled by pid 1)
  {"op": "batch", "clean": str, "build": str, "exec": str}
                                      batch mode (spec 6.4): each non-empty
                                      step runs as `/bin/sh -c <cmd>` in
                                      /home/work, stdin /dev/null, output as
                                      stdout/stderr events; "" (or missing,
                                      or null) skips the step. Answered by
                                      [clean-finished] build-finished finished
  {"op": "complete", "rid": int, "code": str, "options": {...}}
                                      completions of the name at the end of
                                      code; send only while the runner is
                                      idle (it is answered when the runner
                                      next reads an op). options is unused

File operations, done by pid 1's file helper even while the runner is busy
(flagged FOR_PID1, see `encode_op` and runner/kernel_init.c). "rid" is chosen by
the host and echoed in the reply. A path is relative to /home/work,
non-empty, without NUL or "..", at most 4096 bytes; a symlink anywhere in it
is refused, never followed:
  {"op": "upload", "rid": int, "path": str} + blob
                                      write blob to the file (intermediate
                                      directories made 0755; an existing
                                      regular file is overwritten, anything
                                      else there is refused)
  {"op": "files", "rid": int, "path": str}
                                      list a directory (path "." is the root)
  {"op": "download", "rid": int, "path": str}
                                      read a regular file of at most 1 MiB

Messages, kernel -> host (the key is "ev"):
  {"ev": "ready"}                     the runner is up and waits for ops
  {"ev": "stdout"} + blob             console output, raw bytes
  {"ev": "stderr"} + blob
  {"ev": "waiting-input", "is_password": bool}
  {"ev": "finished", "exitCode": int} a query or batch run ended. In batch
                                      mode: the exec step's exit code (0 if
                                      skipped), or 127 when the build failed
                                      and exec was not run (after a stderr
                                      line "build failed with exit code N;
                                      not running the program")
  {"ev": "clean-finished", "exitCode": int}
                                      batch: the clean step ended (only sent
                                      if "clean" was not empty)
  {"ev": "build-finished", "exitCode": int}
                                      batch: the build step ended (always
                                      sent; 0 if it was skipped)
  {"ev": "completions", "rid": int, "items": [str, ...]}
                                      answer to "complete": rlcompleter's
                                      matches ("print(" for a callable),
                                      deduplicated, at most 100; [] if none
  {"ev": "reply", "rid": int, "ok": true, ...}
                                      answer to a file operation, from pid 1
                                      (flagged FOR_PID1; the host drops a
                                      "reply" or "exited" without the flag):
                                      upload: no more fields; download: the
                                      file's bytes as the blob; files:
                                      "files": [{"mode": "-rw-r--r--", "size":
                                      int, "ctime": float, "mtime": float,
                                      "atime": float, "filename": str}, ...]
                                      (lstat, sorted by name) and "abspath":
                                      "/home/work/<path>" (normalised; the
                                      root is "/home/work")
  {"ev": "reply", "rid": int, "ok": false, "error": str}
                                      a refused or failed file operation; the
                                      message names the path
  {"ev": "error", "message": str}     the kernel could not understand an op
  {"ev": "exited", "status": int}     sent by pid 1 when the runner died;
                                      status is a wait status as from waitpid

User code can write frames to the runner's fd 3, so the host checks every
event it gets (sandbox/kernel_events.py): a known event with a field of the
wrong type, JSON over 256 KiB from the runner, or a frame that is not a JSON
object ends the kernel with the reason; an event of an unknown kind is dropped.

Exit codes of batch steps are the shell's status, 128 + n if signal n killed
it, and 130 if an interrupt arrived while it ran (the step's processes get the
SIGINT too; a second interrupt SIGKILLs a shell that ignored the first).

Console output is always ahead of the event that follows it: a step's output
comes before its "*-finished" event.

Inside a kernel, between pid 1 and the runner (never seen by the host):
  {"op": "ack"}                       pid 1 -> runner, one per frame the runner
                                      sent, once pid 1 has drained the console
                                      pipes and queued that frame for the host.
                                      The runner waits for it before a write
                                      returns, so fd-level output written after
                                      a print() cannot overtake that print.
  A frame from the runner flagged NO_ACK (the INTERRUPT bit) is one it does not
  wait on: pid 1 sends no ack for it and clears the flag before the host sees
  it. A frame from the runner flagged FOR_PID1 is a protocol violation: only
  pid 1 marks frames FOR_PID1, so user code cannot forge a reply or an "exited".

This module is standard library only: it is imported on both sides.
"""

from __future__ import annotations

import json
import os
import struct

HEADER = struct.Struct(">II")
MAX_JSON = 4 * 1024 * 1024
MAX_BLOB = 16 * 1024 * 1024
# The top two bits of a header's first word are flags, not part of the JSON length.
# Host -> kernel, they say who handles an op: FOR_PID1 marks a file operation,
# INTERRUPT the interrupt, both a terminal op (runner/pty_relay.h); the rest go
# to the runner. Kernel -> host, FOR_PID1
# marks a frame made by pid 1 itself ("reply", "exited"), which only pid 1 can
# set: the host believes those events only with it.
FOR_PID1 = 1 << 31
INTERRUPT = 1 << 30
FLAGS = FOR_PID1 | INTERRUPT
NO_ACK = INTERRUPT  # runner -> pid 1 only: no ack wanted (runner/channel.py)
FILE_OPS = frozenset({"upload", "files", "download", "mkdir", "delete"})


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame."""


def encode(message: dict, blob: bytes = b"", flags: int = 0) -> bytes:
    """Serialise one frame."""
    body = json.dumps(message, separators=(",", ":")).encode()
    return HEADER.pack(len(body) | flags, len(blob)) + body + blob


def encode_op(message: dict, blob: bytes = b"") -> bytes:
    """Serialise a host -> kernel op, flagged for whoever in the kernel handles it."""
    op = message.get("op")
    if op == "interrupt":
        flags = INTERRUPT
    elif op in ("pty", "watch"):  # pid 1's own: a terminal's, the job watch's
        flags = FLAGS
    else:
        flags = FOR_PID1 if isinstance(op, str) and op in FILE_OPS else 0
    return encode(message, blob, flags)


class FrameReader:
    """Incremental frame decoder: feed bytes, take whole frames out.

    Used by event-loop code that reads whatever is available; `read_frame`
    below is the blocking counterpart.
    """

    def __init__(self, max_json: int = MAX_JSON, max_blob: int = MAX_BLOB) -> None:
        self._buf = bytearray()
        self._max_json = max_json
        self._max_blob = max_blob

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet returned as frames (a partial frame)."""
        return len(self._buf)

    def frames(self) -> list[tuple[dict, bytes, bytes]]:
        """Return every complete frame buffered so far as (message, blob, raw bytes)."""
        out = []
        while len(self._buf) >= HEADER.size:
            jlen, blen = HEADER.unpack_from(self._buf)
            if jlen > self._max_json or blen > self._max_blob:
                raise ProtocolError(f"frame too large ({jlen} + {blen} bytes)")
            total = HEADER.size + jlen + blen
            if len(self._buf) < total:
                break
            raw = bytes(self._buf[:total])
            del self._buf[:total]
            out.append(
                (decode_body(raw[HEADER.size : HEADER.size + jlen]), raw[HEADER.size + jlen :], raw)
            )
        return out


def decode_body(body: bytes) -> dict:
    """The JSON part of a frame, checked to be an object."""
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"frame is not JSON: {e}") from None
    except RecursionError:  # json's C decoder stops deep nesting with this
        raise ProtocolError("frame's JSON is nested too deeply") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


def _read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError("peer closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> tuple[dict, bytes]:
    """Read one frame from a blocking fd (a socket). Raises EOFError at end of stream."""
    jlen, blen = HEADER.unpack(_read_exact(fd, HEADER.size))
    if jlen > MAX_JSON or blen > MAX_BLOB:
        raise ProtocolError(f"frame too large ({jlen} + {blen} bytes)")
    message = decode_body(_read_exact(fd, jlen))
    blob = _read_exact(fd, blen) if blen else b""
    return message, blob


def write_all(fd: int, data: bytes) -> None:
    """Write every byte to a blocking fd (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
