"""The face's HTML: the playground page (a static file the front end owns) and the
small server-rendered sign-in pages, all under one strict Content-Security-Policy.

The policy allows scripts, styles and fonts from this server only (no inline
script or style, no eval), images from here or data: URIs (plots), and
connections to this origin (fetch and the streams). Kernel html is shown in an
`<iframe sandbox>` whose srcdoc inherits this policy, so markup from a kernel can
neither run a script nor load anything from elsewhere. Every value put into a
server-rendered page goes through html.escape.
"""

from __future__ import annotations

import html
import os

from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; font-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",  # a sign-in link's token never leaves for another site
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


def secured(response: Response, cache: bool = False) -> Response:
    response.headers.update(SECURITY_HEADERS)
    if not cache:
        response.headers["cache-control"] = "no-store"
    return response


class Static:
    """The front end's files (static/, and the npm libraries scripts/setup-web copies
    into static/vendor/), with the security headers; no directory listings."""

    def __init__(self) -> None:
        self.files = StaticFiles(directory=STATIC_DIR, check_dir=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                headers.append((b"cache-control", b"no-cache"))  # revalidate: ETag
                message = {**message, "headers": headers}
            await send(message)

        await self.files(scope, receive, send_secured)


def playground(prefix: str) -> Response:
    """The page itself (static/index.html): its URLs are relative to <prefix>/."""
    try:
        with open(os.path.join(STATIC_DIR, "index.html"), "rb") as f:
            body = f.read()
    except OSError:
        return info_page(prefix, "Not installed", "The page's files are missing.", 500)
    return secured(HTMLResponse(body))


def _page(prefix: str, title: str, body: str, status: int = 200) -> Response:
    style = html.escape(f"{prefix}/static/signin.css")
    document = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)} · sandbox</title>\n"
        f'<link rel="stylesheet" href="{style}">\n</head>\n'
        f'<body>\n<main class="card">\n<h1>{html.escape(title)}</h1>\n{body}\n</main>\n'
        "</body>\n</html>\n"
    )
    return secured(HTMLResponse(document, status_code=status))


def signin_form(prefix: str, error: str = "", status: int = 200) -> Response:
    """Sign-in with a keypair, for people who have one (teachers, API users)."""
    alert = f'<p class="error" role="alert">{html.escape(error)}</p>\n' if error else ""
    action = html.escape(f"{prefix}/signin")
    body = (
        f"{alert}<p>Open the sign-in link your teacher gave you, or sign in with an "
        "access key and secret key.</p>\n"
        f'<form method="post" action="{action}">\n'
        '<label for="access-key">Access key</label>\n'
        '<input id="access-key" name="access_key" autocomplete="username" required '
        'spellcheck="false" autocapitalize="off">\n'
        '<label for="secret-key">Secret key</label>\n'
        '<input id="secret-key" name="secret_key" type="password" '
        'autocomplete="current-password" required>\n'
        '<button type="submit" id="signin-button">Sign in</button>\n</form>'
    )
    return _page(prefix, "Sign in", body, status)


def link_page(prefix: str, access_key: str) -> Response:
    """What a sign-in link opens: a button, so that a link preview or a mail
    scanner fetching the link does not use it up (only the POST does)."""
    body = (
        f"<p>Sign in as <strong>{html.escape(access_key)}</strong>. The link works "
        "once; this browser stays signed in.</p>\n"
        '<form method="post">\n<button type="submit" id="signin-button" autofocus>'
        "Sign in</button>\n</form>"
    )
    return _page(prefix, "Sign in", body)


def info_page(prefix: str, title: str, message: str, status: int) -> Response:
    home = html.escape(f"{prefix}/signin")
    body = f'<p>{html.escape(message)}</p>\n<p><a href="{home}">Sign in</a></p>'
    return _page(prefix, title, body, status)
