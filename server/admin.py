"""`sandbox-admin`: manage API keypairs and sign requests for curl.

    sandbox-admin [--config FILE] [--data-dir D] keys create [--access-key AK] [--secret-key SK]
                                             [--concurrency N] [--rate-limit N] [--json]
    sandbox-admin [--data-dir D] keys list
    sandbox-admin [--data-dir D] keys disable AK
    sandbox-admin [--data-dir D] sign [--access-key AK --secret-key SK] [--dialect sorna|backendai]
                                      [--content-type T] [--data BODY] METHOD URL
    sandbox-admin [--data-dir D] face-keys create --face jobe [--name N] [--key K]
                                                  [--concurrency N] [--rate-limit N] [--json]
    sandbox-admin [--data-dir D] face-keys list
    sandbox-admin [--data-dir D] face-keys disable ID
    sandbox-admin [--config FILE] kernels [--json]        (the running server's)
    sandbox-admin [--config FILE] kernels destroy [--] ID   (-- before an ID that starts with -)
    sandbox-admin [--config FILE] status [--json]
    sandbox-admin install-service [--unit-dir D] [--config-dir D]

`kernels` and `status` ask the running server (its [server] host and port,
from --config; only clients on its own machine are answered). The rest works
on the same store as the server (the data directory of --data-dir, or
of the server's --config file), and the server sees changes at once, without a
restart. New keys' defaults are the config's [limits] default_concurrency and
default_rate_limit.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.resources
import json
import os
import shlex
import sqlite3
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import NoReturn

from .engine.store import DATABASE_NAME, FACES, Keypair, Store
from .engine.store_backends import open_store
from .faces.v2 import signing as auth
from .settings import ServerConfig

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


def _parser() -> argparse.ArgumentParser:
    # --data-dir and --config are accepted before or after the command; SUPPRESS
    # keeps the sub-command's copy from overwriting the top-level one when not given.
    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument("--data-dir", default=argparse.SUPPRESS, help="default ./data")
    data_dir.add_argument("--config", default=argparse.SUPPRESS, help="the server's config file")

    p = argparse.ArgumentParser(
        prog="sandbox-admin", description="Manage the sandbox server's API keypairs."
    )
    p.add_argument("--data-dir", help="the server's data directory (default: the config's)")
    p.add_argument("--config", help="the server's TOML config file (docs/configuration.md)")
    commands = p.add_subparsers(dest="command", required=True)

    keys = commands.add_parser("keys", help="create, list or disable keypairs")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", parents=[data_dir], help="create a keypair")
    create.set_defaults(run=keys_create, parser=create)
    create.add_argument("--access-key", help="4-64 letters or digits (default: generated)")
    create.add_argument(
        "--secret-key", help="8-128 printable characters, no spaces (default: generated)"
    )
    create.add_argument(
        "--concurrency", type=int, help="live kernels (default: [limits] default_concurrency)"
    )
    create.add_argument(
        "--rate-limit",
        type=int,
        help="requests per rate window (default: [limits] default_rate_limit)",
    )
    create.add_argument(
        "--json", action="store_true", help='print only {"accessKey": ..., "secretKey": ...}'
    )
    listing = key_commands.add_parser(
        "list", parents=[data_dir], help="list keypairs (secrets hidden)"
    )
    listing.set_defaults(run=keys_list, parser=listing)
    disable = key_commands.add_parser("disable", parents=[data_dir], help="disable a keypair")
    disable.set_defaults(run=keys_disable, parser=disable)
    disable.add_argument("access_key", metavar="AK")

    face_keys = commands.add_parser(
        "face-keys", help="keys of the Jobe and Piston faces (X-API-KEY, bearer)"
    )
    face_key_commands = face_keys.add_subparsers(dest="face_keys_command", required=True)
    make = face_key_commands.add_parser("create", parents=[data_dir], help="make a key")
    make.set_defaults(run=face_keys_create, parser=make)
    make.add_argument("--face", choices=FACES, required=True)
    make.add_argument("--name", default="", help="whom it is for (shown by list)")
    make.add_argument(
        "--key", help="8-128 printable characters: keep a key clients have (default: generated)"
    )
    make.add_argument("--concurrency", type=int, default=8, help="its runs at once (default 8)")
    make.add_argument(
        "--rate-limit", type=int, default=0, help="its runs per minute (default 0: no limit)"
    )
    make.add_argument("--json", action="store_true", help='print only {"id": ..., "key": ...}')
    shown = face_key_commands.add_parser("list", parents=[data_dir], help="list face keys")
    shown.set_defaults(run=face_keys_list, parser=shown)
    off = face_key_commands.add_parser("disable", parents=[data_dir], help="disable a face key")
    off.set_defaults(run=face_keys_disable, parser=off)
    off.add_argument("key_id", metavar="ID")

    server = argparse.ArgumentParser(add_help=False)
    server.add_argument("--config", default=argparse.SUPPRESS, help="the server's config file")
    server.add_argument("--port", type=int, help="the server's port (default: the config's)")
    server.add_argument("--json", action="store_true", help="print the server's JSON")
    live = commands.add_parser("kernels", parents=[server], help="the running server's kernels")
    live.set_defaults(run=kernels_list, parser=live)
    live_commands = live.add_subparsers(dest="kernels_command")
    kill = live_commands.add_parser("destroy", parents=[server], help="destroy a kernel")
    kill.set_defaults(run=kernels_destroy, parser=kill)
    kill.add_argument("kernel_id", metavar="ID", help="write -- before an ID that starts with -")
    state = commands.add_parser("status", parents=[server], help="the running server's state")
    state.set_defaults(run=server_status, parser=state)

    service = commands.add_parser(
        "install-service", help="write the systemd unit (and a config if there is none)"
    )
    service.set_defaults(run=install_service, parser=service)
    service.add_argument("--unit-dir", default="/etc/systemd/system")
    service.add_argument("--config-dir", default="/etc/sandbox-server")

    sign = commands.add_parser(
        "sign",
        parents=[data_dir],
        help="print curl -H arguments that sign a request",
        description=SIGN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sign.set_defaults(run=sign_request, parser=sign)
    sign.add_argument("--access-key")
    sign.add_argument("--secret-key", help="write --secret-key=SK if it starts with '-'")
    sign.add_argument("--dialect", choices=sorted(DIALECTS), default="sorna")
    sign.add_argument(
        "--content-type",
        help="default application/json with --data, else application/octet-stream",
    )
    sign.add_argument("--data", default="", help="the request body, as curl will send it")
    sign.add_argument("method", metavar="METHOD")
    sign.add_argument("url", metavar="URL")
    return p


def _fail(message: str) -> NoReturn:
    print(f"sandbox-admin: {message}", file=sys.stderr)
    sys.exit(1)


def _config(args: argparse.Namespace) -> ServerConfig:
    """The server's settings: its config file's, with --data-dir over them; read once
    per command."""
    if getattr(args, "settings", None) is None:
        try:
            overrides = {"server": {"data_dir": args.data_dir}}
            args.settings = ServerConfig.load(args.config, overrides)
        except (OSError, ValueError) as e:
            _fail(f"--config: {e}")
    return args.settings


def _open_store(args: argparse.Namespace, create: bool = False) -> Store:
    data_dir = _config(args).server.data_dir
    path = os.path.join(data_dir, DATABASE_NAME)
    if not create and not os.path.exists(path):
        _fail(f"no key store at {path} (wrong --data-dir?)")
    try:
        if create:
            os.makedirs(data_dir, mode=0o700, exist_ok=True)
        return open_store(data_dir)
    except (OSError, sqlite3.Error) as e:
        _fail(f"cannot open {path}: {e}")


def keys_create(args: argparse.Namespace) -> None:
    limits = _config(args).limits
    concurrency = args.concurrency if args.concurrency is not None else limits.default_concurrency
    rate_limit = args.rate_limit if args.rate_limit is not None else limits.default_rate_limit
    store = _open_store(args, create=True)
    try:
        keypair = store.keys.create(args.access_key, args.secret_key, concurrency, rate_limit)
    except ValueError as e:
        args.parser.error(str(e))
    finally:
        store.close()
    seconds = _config(args).v2.rate_window_seconds
    window = f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"
    if args.json:
        print(json.dumps({"accessKey": keypair.access_key, "secretKey": keypair.secret_key}))
        return
    print(
        f"Created a keypair in {_config(args).server.data_dir}:\n"
        f"  access key:  {keypair.access_key}\n"
        f"  secret key:  {keypair.secret_key}\n"
        f"  concurrency: {keypair.concurrency_limit} kernels\n"
        f"  rate limit:  {keypair.rate_limit} requests / {window}\n"
        "\nClient settings (paste into your shell):\n"
        f"SORNA_ACCESS_KEY={keypair.access_key}\n"
        f"SORNA_SECRET_KEY={keypair.secret_key}"
    )


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def keys_list(args: argparse.Namespace) -> None:
    store = _open_store(args)
    keypairs = store.keys.list()
    store.close()
    if not keypairs:
        print("no keypairs")
        return
    rows = [("ACCESS KEY", "ACTIVE", "CONCURRENCY", "RATE LIMIT", "CREATED")]
    rows += [
        (
            k.access_key,
            "yes" if k.is_active else "no",
            str(k.concurrency_limit),
            str(k.rate_limit),
            k.created,
        )
        for k in keypairs
    ]
    _print_table(rows)


def face_keys_create(args: argparse.Namespace) -> None:
    store = _open_store(args, create=True)
    try:
        record, key = store.face_keys.create(
            args.face, args.name, args.concurrency, args.rate_limit, args.key
        )
    except ValueError as e:
        args.parser.error(str(e))
    finally:
        store.close()
    if args.json:
        print(json.dumps({"id": record.id, "key": key}))
        return
    rate = f"{record.rate_limit} runs / min" if record.rate_limit else "no limit"
    header = "X-API-KEY" if record.face == "jobe" else "Authorization"
    print(
        f"Created a {record.face} key in {_config(args).server.data_dir}:\n"
        f"  id:          {record.id}\n"
        f"  key:         {key}   (shown once: only its hash is kept)\n"
        f"  concurrency: {record.concurrency_limit} runs\n"
        f"  rate limit:  {rate}\n"
        f"Clients send it in the {header} header."
    )


def face_keys_list(args: argparse.Namespace) -> None:
    store = _open_store(args)
    records = store.face_keys.list()
    store.close()
    if not records:
        print("no face keys")
        return
    rows = [("ID", "FACE", "NAME", "ACTIVE", "CONCURRENCY", "RATE/MIN", "CREATED")]
    rows += [
        (k.id, k.face, k.name, "yes" if k.is_active else "no", str(k.concurrency_limit),
         str(k.rate_limit), k.created)
        for k in records
    ]  # fmt: skip
    _print_table(rows)


def face_keys_disable(args: argparse.Namespace) -> None:
    store = _open_store(args)
    found = store.face_keys.disable(args.key_id)
    store.close()
    if not found:
        _fail(f"no face key with id {args.key_id}")
    print(f"disabled {args.key_id}")


def keys_disable(args: argparse.Namespace) -> None:
    store = _open_store(args)
    found = store.keys.disable(args.access_key)
    store.close()
    if not found:
        _fail(f"no keypair with access key {args.access_key}")
    print(f"disabled {args.access_key}")


def _ask_server(args: argparse.Namespace, method: str, path: str) -> dict:
    """The running server's JSON answer to an admin request; exits with why not."""
    settings = _config(args).server
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    port = args.port or settings.port
    url = f"http://{host}:{port}{path}"
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read()).get("error", e.reason)
        except ValueError:
            detail = e.reason
        _fail(f"{url}: {e.code} {detail}")
    except (OSError, ValueError) as e:
        _fail(f"cannot reach the server at {url} ({e}); is it running? (--config, --port)")


def _age(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def kernels_list(args: argparse.Namespace) -> None:
    answer = _ask_server(args, "GET", "/admin/kernels")
    if args.json:
        print(json.dumps(answer, indent=2))
        return
    if not answer["kernels"]:
        print("no kernels")
        return
    rows = [("ID", "KEY", "LANG", "STATE", "AGE", "IDLE", "MEMORY", "CPU")]
    rows += [
        (k["id"], k["key"], k["lang"], k["state"], _age(k["ageSeconds"]), _age(k["idleSeconds"]),
         f"{k['memoryBytes'] / 2**20:.1f} MiB", f"{k['cpuMs'] / 1000:.1f} s")
        for k in answer["kernels"]
    ]  # fmt: skip
    _print_table(rows)


def kernels_destroy(args: argparse.Namespace) -> None:
    answer = _ask_server(args, "DELETE", f"/admin/kernels/{urllib.parse.quote(args.kernel_id)}")
    note = "" if answer["allGone"] else " (a process of it would not die: freed once it does)"
    print(f"destroyed {answer['destroyed']}{note}")


def server_status(args: argparse.Namespace) -> None:
    answer = _ask_server(args, "GET", "/admin/status")
    if args.json:
        print(json.dumps(answer, indent=2))
        return
    pool = ", ".join(f"{lang} {n}" for lang, n in answer["pool"].items()) or "none"
    print(
        f"cgroup layout: {answer['layout']}\n"
        f"kernels:       {answer['kernels']} of at most {answer['maxKernels']}, "
        f"{answer['keys']} keys\n"
        f"warm pool:     {pool}; {answer['spares']} spare processes\n"
        f"jobs waiting:  {answer['jobs']['waiting']} (at most {answer['jobs']['maxRunning']} run)\n"
        f"kernel memory: {answer['defaultMemoryBytes'] // 2**20} MiB by default"
    )


UNIT = "sandbox-server.service"
SERVICE_CONFIG = """\
# sandbox-server's settings (docs/configuration.md); written by install-service
[server]
host = "127.0.0.1"
port = 8080
data_dir = "/var/lib/sandbox-server"
log_format = "logfmt"
"""


def install_service(args: argparse.Namespace) -> None:
    """Write the unit with this installation's sandbox-server in it, and a config
    (kept if one exists); say how to start it."""
    executable = os.path.join(os.path.dirname(sys.executable), "sandbox-server")
    if not os.access(executable, os.X_OK):
        _fail(f"no sandbox-server beside {sys.executable}: install the package first")
    config = os.path.join(args.config_dir, "config.toml")
    template = (importlib.resources.files("server") / UNIT).read_text()
    unit = template.replace("@SANDBOX_SERVER@", executable).replace("@CONFIG@", config)
    try:
        os.makedirs(args.unit_dir, exist_ok=True)
        with open(os.path.join(args.unit_dir, UNIT), "w") as f:
            f.write(unit)
        os.makedirs(args.config_dir, mode=0o755, exist_ok=True)
        if not os.path.exists(config):
            with open(config, "w") as f:
                f.write(SERVICE_CONFIG)
    except OSError as e:
        _fail(f"cannot write the service: {e}")
    print(
        f"wrote {os.path.join(args.unit_dir, UNIT)} and {config}\n"
        "start it with:\n"
        "  systemctl daemon-reload && systemctl enable --now sandbox-server\n"
        f"then make a key: sandbox-admin --config {config} keys create"
    )


def _signing_keypair(args: argparse.Namespace) -> tuple[str, str]:
    if args.access_key and args.secret_key:
        return args.access_key, args.secret_key
    if args.access_key or args.secret_key:
        args.parser.error("give both --access-key and --secret-key, or neither")
    store = _open_store(args)
    active: list[Keypair] = [k for k in store.keys.list() if k.is_active]
    store.close()
    if not active:
        data_dir = _config(args).server.data_dir
        _fail(f"no active keypair in {data_dir}; create one with: sandbox-admin keys create")
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


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
