"""`[web]`: the playground page for students: where it is served and how long its
sign-in links and sessions last."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sandbox.settings import check, setting

PREFIX_RE = re.compile(r"(/[A-Za-z0-9_-]+)*")


@dataclass(frozen=True)
class WebSettings:
    """`[web]`: the web playground (the `web` face): a page with an editor, the
    execute stream, a terminal and files, signed in with a one-time link from
    `sandbox-admin web-link` or a keypair."""

    page_prefix: str = setting("", 'the page is served at <prefix>/ ("" : at /; else like "/play")')
    public_url: str = setting(
        "",
        "the address students open, for the links sandbox-admin prints "
        "(empty: http://<[server] host>:<[server] port>)",
    )
    link_hours: float = setting(
        168.0, "a sign-in link works once, within this many hours", above=0, maximum=24 * 365
    )
    session_hours: float = setting(
        12.0, "a signed-in browser stays signed in this long", above=0, maximum=24 * 90
    )

    def __post_init__(self) -> None:
        check(self)
        if not PREFIX_RE.fullmatch(self.page_prefix):
            raise ValueError(
                'page_prefix: "" or a path like "/play" (letters, digits, - and _ between /)'
            )
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ValueError("public_url: an http:// or https:// address")
