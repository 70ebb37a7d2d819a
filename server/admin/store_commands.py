"""Commands on the store the server shares (sandbox-admin needs no running server):
keypairs, the faces' keys, and the web face's sign-in links."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..engine.store import Store, hash_web_token
from ..faces.web.sessions import new_token
from .common import config, fail, open_store, print_table


def keys_create(args: argparse.Namespace) -> None:
    limits = config(args).limits
    concurrency = args.concurrency if args.concurrency is not None else limits.default_concurrency
    rate_limit = args.rate_limit if args.rate_limit is not None else limits.default_rate_limit
    store = open_store(args, create=True)
    try:
        keypair = store.keys.create(args.access_key, args.secret_key, concurrency, rate_limit)
        link = _new_link(args, store, keypair.access_key) if args.web_link else None
    except ValueError as e:
        args.parser.error(str(e))
    finally:
        store.close()
    seconds = config(args).v2.rate_window_seconds
    window = f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"
    if args.json:
        made = {"accessKey": keypair.access_key, "secretKey": keypair.secret_key}
        print(json.dumps({**made, "signInLink": link} if link else made))
        return
    if link:
        print(f"Sign-in link (works once): {link}")
    print(
        f"Created a keypair in {config(args).server.data_dir}:\n"
        f"  access key:  {keypair.access_key}\n"
        f"  secret key:  {keypair.secret_key}\n"
        f"  concurrency: {keypair.concurrency_limit} kernels\n"
        f"  rate limit:  {keypair.rate_limit} requests / {window}\n"
        "\nClient settings (paste into your shell):\n"
        f"SORNA_ACCESS_KEY={keypair.access_key}\n"
        f"SORNA_SECRET_KEY={keypair.secret_key}"
    )


def _new_link(args: argparse.Namespace, store: Store, access_key: str) -> str:
    """A one-time sign-in link to the web page for `access_key`."""
    settings = config(args)
    token = new_token()
    store.web.add_link(
        access_key, hash_web_token(token), time.time() + settings.web.link_hours * 3600
    )
    return f"{settings.page_url(args.url or '')}/signin/{token}"


def web_links(args: argparse.Namespace) -> None:
    """`--count` one-time sign-in links per access key (a class sharing one key gets
    one link per student), one `KEY LINK` line each."""
    if "web" not in config(args).faces.enabled:
        print("sandbox-admin: note: the web face is off in this config", file=sys.stderr)
    if args.count < 1:
        args.parser.error("--count: at least 1")
    store = open_store(args)
    try:
        for access_key in args.access_keys:
            keypair = store.keys.get(access_key)
            if keypair is None or not keypair.is_active:
                fail(f"no active keypair with access key {access_key}")
            for _ in range(args.count):
                print(access_key, _new_link(args, store, access_key))
    finally:
        store.close()


def keys_list(args: argparse.Namespace) -> None:
    store = open_store(args)
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
    print_table(rows)


def face_keys_create(args: argparse.Namespace) -> None:
    store = open_store(args, create=True)
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
        f"Created a {record.face} key in {config(args).server.data_dir}:\n"
        f"  id:          {record.id}\n"
        f"  key:         {key}   (shown once: only its hash is kept)\n"
        f"  concurrency: {record.concurrency_limit} runs\n"
        f"  rate limit:  {rate}\n"
        f"Clients send it in the {header} header."
    )


def face_keys_list(args: argparse.Namespace) -> None:
    store = open_store(args)
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
    print_table(rows)


def face_keys_disable(args: argparse.Namespace) -> None:
    store = open_store(args)
    found = store.face_keys.disable(args.key_id)
    store.close()
    if not found:
        fail(f"no face key with id {args.key_id}")
    print(f"disabled {args.key_id}")


def keys_disable(args: argparse.Namespace) -> None:
    store = open_store(args)
    found = store.keys.disable(args.access_key)
    ended = store.web.end_key(args.access_key)  # the server checks too: at once either way
    store.close()
    if not found:
        fail(f"no keypair with access key {args.access_key}")
    sessions = f" and ended {ended} web sessions and links" if ended else ""
    print(f"disabled {args.access_key}{sessions}")
