"""`[v2]`: the Backend.AI / Sorna v2 API's own settings (the limits of what a
kernel and its owner may use are the engine's `[limits]`)."""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.settings import check, setting
from sandbox.spec import MiB


@dataclass(frozen=True)
class V2Settings:
    """`[v2]`: the v2 API face: how long an execute call holds, request bodies,
    signing, the rate-limit window, uploads and downloads, and streams."""

    hold_seconds: float = setting(
        2.0, 'how long an execute call waits for output before answering "continued"', above=0
    )
    max_body_bytes: int = setting(1 * MiB, "a JSON request body", minimum=1024)
    allow_md5_signatures: bool = setting(
        False, "accept HMAC-MD5 signatures; no known client uses them"
    )
    rate_window_seconds: int = setting(
        900, "the window of each key's request rate limit (its requests per window)", minimum=1
    )
    max_upload_files: int = setting(20, "files in one upload", minimum=1)
    max_file_bytes: int = setting(1 * MiB, "one uploaded file", minimum=1)
    max_download_files: int = setting(5, "files in one download", minimum=1)
    max_streams_per_kernel: int = setting(
        8, "WebSocket streams (execute, terminal, events) open on one kernel", minimum=1
    )
    max_streams_per_key: int = setting(32, "WebSocket streams open for one key", minimum=1)
    max_frame_bytes: int = setting(
        1 * MiB, "a WebSocket message from a client; larger closes it (1009)", minimum=4096
    )
    stream_send_seconds: float = setting(
        30.0, "a stream whose client takes no message for this long is closed", above=0
    )
    unsigned_terminal: str = setting(
        "loopback",
        "who may open a terminal without signing (sorna-client 0.9.8 does not sign it): "
        "off, loopback (clients on this machine), or any",
        choices=("off", "loopback", "any"),
    )

    def __post_init__(self) -> None:
        check(self)

    @property
    def max_upload_bytes(self) -> int:
        """An upload's whole body: multipart framing per part is small; anything far
        beyond the files at their largest is not an upload."""
        return self.max_upload_files * (self.max_file_bytes + 64 * 1024)
