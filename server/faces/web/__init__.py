"""The web face: a playground page for students, served by the server itself.

Routes under `[web] page_prefix` (P, "" by default):

    GET  P/                 the page (signed in), else a redirect to P/signin
    GET  P/static/...       its scripts, styles and the npm libraries it uses
    GET  P/signin           the keypair sign-in form; POST it to sign in
    GET  P/signin/TOKEN     a one-time link's page (a button); POST uses the link up
    POST P/signout          ends the session (X-CSRF-Token)
    GET  P/session          the signed-in key and the CSRF token, for the page
    GET  P/download/ID      one file of a kernel, as an attachment (?path=)
         P/web/v2/...       the v2 API as the session's key (gate.ApiGate)

sessions.py holds how a browser is known; gate.py how the page reaches the API;
pages.py the HTML and its Content-Security-Policy.
"""

from __future__ import annotations

import hmac
import os
import time
import urllib.parse

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from ...engine.errors import EngineError, InvalidRequest, KernelNotFound
from ...engine.kernel_files import check_path
from ...engine.store import hash_web_token
from ..http import BodyTooLarge, read_body
from . import pages, sessions
from .gate import ApiGate
from .problems import forbidden, not_signed_in, problem
from .settings import WebSettings

__all__ = ["ApiGate", "WebSettings", "routes"]

FORM_BYTES = 4096  # a sign-in form's body
LINK_GONE = "This sign-in link has been used or has expired. Ask for a new one."


def _prefix(request: Request) -> str:
    return sessions.settings_of(request).page_prefix


def _home(request: Request, token: str | None = None) -> Response:
    response = RedirectResponse(f"{_prefix(request)}/", status_code=303)
    if token is not None:
        sessions.set_cookie(response, request, token)
    return response


async def page(request: Request) -> Response:
    if sessions.signed_in(request) is None:
        return RedirectResponse(f"{_prefix(request)}/signin", status_code=303)
    return pages.playground(_prefix(request))


async def bare_prefix(request: Request) -> Response:
    """P without its slash: the page's relative URLs need P/."""
    return RedirectResponse(f"{_prefix(request)}/", status_code=308)


async def signin_form(request: Request) -> Response:
    return pages.signin_form(_prefix(request))


async def _form(request: Request) -> dict[str, str] | None:
    """A small urlencoded form, or None if it is not one."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    try:
        body = await read_body(request, FORM_BYTES)
        fields = urllib.parse.parse_qs(body.decode(), max_num_fields=8)
    except (BodyTooLarge, UnicodeDecodeError, ValueError):
        return None
    return {name: values[0] for name, values in fields.items()}


async def signin_with_keys(request: Request) -> Response:
    prefix = _prefix(request)
    if not sessions.same_origin(request, required=False):
        return pages.info_page(prefix, "Forbidden", "Sign in from this server's own page.", 403)
    form = await _form(request)
    if form is None:
        return pages.signin_form(prefix, "Send the form from the sign-in page.", 400)
    access_key, secret_key = form.get("access_key", ""), form.get("secret_key", "")
    keypair = sessions.store_of(request).keys.get(access_key) if access_key else None
    # compared even for an unknown key, so the time taken does not tell which it was
    expected = keypair.secret_key if keypair is not None else "-" * 40
    matches = hmac.compare_digest(secret_key.encode(), expected.encode())
    if keypair is None or not keypair.is_active or not matches:
        return pages.signin_form(prefix, "The access key or the secret key is wrong.", 401)
    return _home(request, sessions.start(request, keypair.access_key))


async def link(request: Request) -> Response:
    store, prefix = sessions.store_of(request), _prefix(request)
    token = request.path_params["token"]
    access_key = store.web.link_key(hash_web_token(token), time.time())
    if access_key is None:
        return pages.info_page(prefix, "Link used", LINK_GONE, 410)
    return pages.link_page(prefix, access_key)


async def use_link(request: Request) -> Response:
    store, prefix = sessions.store_of(request), _prefix(request)
    if not sessions.same_origin(request, required=False):
        return pages.info_page(prefix, "Forbidden", "Sign in from the link's own page.", 403)
    access_key = store.web.redeem_link(hash_web_token(request.path_params["token"]), time.time())
    keypair = store.keys.get(access_key) if access_key else None
    if keypair is None or not keypair.is_active:
        return pages.info_page(prefix, "Link used", LINK_GONE, 410)
    return _home(request, sessions.start(request, keypair.access_key))


async def signout(request: Request) -> Response:
    who = sessions.signed_in(request)
    if who is not None:
        if not (sessions.same_origin(request, required=False) and sessions.csrf_ok(request, who)):
            return forbidden("missing or wrong X-CSRF-Token (reload the page)")
        sessions.store_of(request).web.end(who.token_hash)
    response = Response(status_code=204)
    sessions.clear_cookie(response, request)
    return response


async def session(request: Request) -> Response:
    who = sessions.signed_in(request)
    if who is None:
        return pages.secured(not_signed_in())
    body = {
        "accessKey": who.keypair.access_key,
        "csrfToken": who.session.csrf_token,
        "expires": int(who.session.expires),
    }
    return pages.secured(JSONResponse(body))


def _download_error(error: EngineError) -> Response:
    if isinstance(error, KernelNotFound):
        return problem(404, "kernel-not-found", "No such kernel", error.detail)
    if isinstance(error, InvalidRequest):
        return problem(400, "invalid-api-params", "Invalid request", error.detail)
    return problem(500, "internal-server-error", "The download failed", error.detail)


async def download(request: Request) -> Response:
    """One file of the session's kernel, as the browser saves it."""
    who = sessions.signed_in(request)
    if who is None:
        return pages.secured(not_signed_in())
    engine = request.app.state.engine
    allowed, _headers = request.app.state.limiter.hit(
        who.keypair.access_key, who.keypair.rate_limit
    )
    if not allowed:  # a download is an API request: it counts as one
        return problem(429, "too-many-requests", "Rate limit exceeded")
    try:
        kernel = engine.session(who.keypair, request.path_params["kernel_id"])
        path = check_path(request.query_params.get("path", ""), "path", absolute=True)
        [(_name, content)] = await engine.download(kernel, [path])
    except EngineError as e:
        return pages.secured(_download_error(e))
    name = os.path.basename(path) or "download"
    response = Response(content, media_type="application/octet-stream")
    quoted = urllib.parse.quote(name, safe="")
    response.headers["content-disposition"] = f"attachment; filename*=UTF-8''{quoted}"
    pages.secured(response)
    response.headers["content-security-policy"] = "sandbox; default-src 'none'"
    return response


def routes(settings: WebSettings) -> list[BaseRoute]:
    p = settings.page_prefix
    found: list[BaseRoute] = [
        Route(f"{p}/", page, methods=["GET"]),
        Mount(f"{p}/static", app=pages.Static()),
        Route(f"{p}/signin", signin_form, methods=["GET"]),
        Route(f"{p}/signin", signin_with_keys, methods=["POST"]),
        Route(f"{p}/signin/{{token}}", link, methods=["GET"]),
        Route(f"{p}/signin/{{token}}", use_link, methods=["POST"]),
        Route(f"{p}/signout", signout, methods=["POST"]),
        Route(f"{p}/session", session, methods=["GET"]),
        Route(f"{p}/download/{{kernel_id}}", download, methods=["GET"]),
    ]
    if p:
        found.append(Route(p, bare_prefix, methods=["GET"]))
    return found
