"""`sign`: the headers of one signed request, for curl."""

from __future__ import annotations

import argparse
import datetime
import shlex
import urllib.parse

from ..engine.store import Keypair
from ..faces.v2 import signing as auth
from .common import config, fail, open_store

# The version string v2 clients send in the version header (spec §2.2).
CLIENT_VERSION = "v2.20170315"
DIALECTS = {  # dialect -> (version header, Authorization type)
    "sorna": ("X-Sorna-Version", "Sorna"),
    "backendai": ("X-BackendAI-Version", "BackendAI"),
}

SIGN_HELP = """\
Print the headers of a signed request, one curl argument pair per line:

  -H 'Date: ...'
  -H 'X-Sorna-Version: v2.20170315'
  -H 'Content-Type: ...'
  -H 'Authorization: Sorna signMethod=HMAC-SHA256, credential=...'

The values are shell-quoted, so let the shell read the lines again with eval:

  API=http://127.0.0.1:8080
  eval curl $(sandbox-admin sign GET $API/v2/kernel/ID) $API/v2/kernel/ID

  BODY='{"lang": "python3", "clientSessionToken": "my-session"}'
  eval curl $(sandbox-admin sign --data "$BODY" POST $API/v2/kernel/create) \\
       --data-binary '"$BODY"' $API/v2/kernel/create

Send exactly the signed body (--data-binary; -d would strip newlines from a
file), and add -X METHOD for anything but GET, or POST with a body. The
signature is valid for 15 minutes. Without --access-key and --secret-key, the
first active keypair of --data-dir signs.
"""


def _signing_keypair(args: argparse.Namespace) -> tuple[str, str]:
    if args.access_key and args.secret_key:
        return args.access_key, args.secret_key
    if args.access_key or args.secret_key:
        args.parser.error("give both --access-key and --secret-key, or neither")
    store = open_store(args)
    active: list[Keypair] = [k for k in store.keys.list() if k.is_active]
    store.close()
    if not active:
        data_dir = config(args).server.data_dir
        fail(f"no active keypair in {data_dir}; create one with: sandbox-admin keys create")
    return active[0].access_key, active[0].secret_key


def sign_request(args: argparse.Namespace) -> None:
    parser = args.parser
    url = urllib.parse.urlsplit(args.url)
    if url.scheme not in ("http", "https") or not url.netloc:
        parser.error(f"URL must be http://HOST[:PORT]/PATH, not {args.url!r}")
    method = args.method.upper()
    if not method.isalpha():
        parser.error(f"METHOD must be a word such as GET or POST, not {args.method!r}")
    content_type = args.content_type or ("application/json" if args.data else "")
    content_type = content_type or auth.DEFAULT_CONTENT_TYPE
    if not content_type.isprintable():
        parser.error("--content-type must be printable")
    access_key, secret_key = _signing_keypair(args)

    version_header, auth_type = DIALECTS[args.dialect]
    headers = {
        "Date": datetime.datetime.now(datetime.UTC).isoformat(),
        version_header: CLIENT_VERSION,
        "Content-Type": content_type,
    }
    path = url.path or "/"
    if url.query:
        path += "?" + url.query
    host = url.netloc.rpartition("@")[2]  # curl sends no user info in Host
    headers["Authorization"] = auth.sign(
        method,
        path,
        {**headers, "Host": host},
        args.data.encode(),
        access_key,
        secret_key,
        auth_type=auth_type,
    )
    for name, value in headers.items():
        print("-H", shlex.quote(f"{name}: {value}"))
