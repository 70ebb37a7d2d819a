"""`sandbox-admin`: manage keys and sign-in links, sign requests for curl, ask the
running server about its kernels, install the service.

    sandbox-admin [--config FILE] [--data-dir D] keys create [--access-key AK] [--secret-key SK]
                                             [--concurrency N] [--rate-limit N] [--json]
    sandbox-admin [--config FILE] [--data-dir D] keys create ... --web-link [--url URL]
    sandbox-admin [--config FILE] [--data-dir D] web-link AK... [--count N] [--url URL]
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
    sandbox-admin [--config FILE] pool LANG N [--json]     (N kernels ready, before a class)
    sandbox-admin install-service [--unit-dir D] [--config-dir D]
    sandbox-admin [--config FILE] [--data-dir D] backup DIR
    sandbox-admin [--config FILE] [--data-dir D] restore DIR   (into a new data directory)

`backup` copies the store and the folders into a new directory while the server
runs (a folder's writers wait while its image is copied); `restore` fills a new
data directory from one. `web-link` prints one-time links that sign a browser in
to the web page as a key (`keys create --web-link` makes a key and its link at once). `kernels`,
`status` and `pool` ask the running server (its [server] host and port, from --config;
only clients on its own machine are answered). The rest works
on the same store as the server (the data directory of --data-dir, or
of the server's --config file), and the server sees changes at once, without a
restart. New keys' defaults are the config's [limits] default_concurrency and
default_rate_limit.
"""

from __future__ import annotations

import argparse

from ..engine.store import FACES
from .backup_commands import backup_command, restore_command
from .server_commands import kernels_destroy, kernels_list, pool_expect, server_status
from .service import install_service
from .signing import DIALECTS, SIGN_HELP, sign_request
from .store_commands import (
    face_keys_create,
    face_keys_disable,
    face_keys_list,
    keys_create,
    keys_disable,
    keys_list,
    web_links,
)


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
    create.add_argument(
        "--web-link", action="store_true", help="also print a one-time sign-in link to the page"
    )
    create.add_argument("--url", help="the server's address in links (default: [web] public_url)")
    listing = key_commands.add_parser(
        "list", parents=[data_dir], help="list keypairs (secrets hidden)"
    )
    listing.set_defaults(run=keys_list, parser=listing)
    disable = key_commands.add_parser("disable", parents=[data_dir], help="disable a keypair")
    disable.set_defaults(run=keys_disable, parser=disable)
    disable.add_argument("access_key", metavar="AK")

    links = commands.add_parser(
        "web-link",
        parents=[data_dir],
        help="one-time sign-in links to the web page, for keys",
        description="Print one-time sign-in links to the web page (KEY LINK per line). "
        "Opening one signs the browser in as KEY; the secret key never reaches it.",
    )
    links.set_defaults(run=web_links, parser=links)
    links.add_argument("access_keys", metavar="AK", nargs="+")
    links.add_argument("--count", type=int, default=1, help="links per key (default 1)")
    links.add_argument("--url", help="the server's address in links (default: [web] public_url)")

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
    ready = commands.add_parser(
        "pool", parents=[server], help="keep kernels ready for a class about to begin"
    )
    ready.set_defaults(run=pool_expect, parser=ready)
    ready.add_argument("lang", metavar="LANG", help="a pooled language (pool_languages)")
    ready.add_argument("size", metavar="N", type=int, help="kernels to keep ready")

    service = commands.add_parser(
        "install-service", help="write the systemd unit (and a config if there is none)"
    )
    service.set_defaults(run=install_service, parser=service)
    service.add_argument("--unit-dir", default="/etc/systemd/system")
    service.add_argument("--config-dir", default="/etc/sandbox-server")

    copy = commands.add_parser(
        "backup",
        parents=[data_dir],
        help="copy the store and folders into a new directory (the server may run)",
    )
    copy.set_defaults(run=backup_command, parser=copy)
    copy.add_argument("target", metavar="DIR", help="a new (or empty) directory")
    back = commands.add_parser(
        "restore", parents=[data_dir], help="fill a new data directory from a backup"
    )
    back.set_defaults(run=restore_command, parser=back)
    back.add_argument("source", metavar="DIR", help="a directory `backup` wrote")

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


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    args.run(args)
