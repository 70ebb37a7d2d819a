"""The SQLite store: keypair formats, persistence, validation, sharing the file with
another process, and folder records beside the keys."""

from __future__ import annotations

import base64
import os
import re
import stat

import pytest

from server.engine.sqlite_store import SqliteStore
from server.engine.store import Duplicate, Keypair


def create(keys, access_key=None, secret_key=None, concurrency=5, rate_limit=1000):
    """A keypair with the limits new keys get by default unless given."""
    return keys.create(access_key, secret_key, concurrency, rate_limit)


@pytest.fixture
def path(tmp_path) -> str:
    return str(tmp_path / "sandbox.sqlite")


@pytest.fixture
def store(path):
    store = SqliteStore(path)
    yield store
    store.close()


def test_generated_keys_look_like_the_originals(store):
    keypair = create(store.keys)
    assert re.fullmatch(r"AKIA[A-Z2-7]{16}", keypair.access_key)
    assert len(keypair.secret_key) == 40
    assert len(base64.urlsafe_b64decode(keypair.secret_key)) == 30
    assert keypair.is_active
    assert (keypair.concurrency_limit, keypair.rate_limit) == (5, 1000)
    assert keypair.created.endswith("+00:00")
    assert create(store.keys).access_key != keypair.access_key


def test_create_get_list_disable(store):
    assert store.keys.count() == 0
    assert store.keys.list() == []
    a = create(store.keys, "AKIAFIRST", "secret-first", concurrency=2, rate_limit=10)
    b = create(store.keys, "AKIASECOND", "secret-second")
    assert a == Keypair("AKIAFIRST", "secret-first", True, 2, 10, a.created)
    assert store.keys.get("AKIAFIRST") == a
    assert store.keys.get("AKIANOBODY") is None
    assert store.keys.list() == [a, b]
    assert store.keys.count() == 2

    assert store.keys.disable("AKIAFIRST") is True
    assert store.keys.get("AKIAFIRST").is_active is False
    assert store.keys.get("AKIASECOND").is_active is True
    assert store.keys.disable("AKIANOBODY") is False
    assert store.keys.count() == 2


def test_given_one_key_generates_the_other(store):
    assert create(store.keys, access_key="AKIAMINE").secret_key
    assert create(store.keys, secret_key="my-secret-key").access_key.startswith("AKIA")


def test_persists_across_reopen(path):
    store = SqliteStore(path)
    created = create(store.keys, "AKIAKEEP", "kept-secret", concurrency=3, rate_limit=50)
    store.keys.disable("AKIAKEEP")
    create(store.keys, "AKIAOTHER", "other-secret")
    store.close()
    store = SqliteStore(path)
    try:
        kept = store.keys.get("AKIAKEEP")
        assert kept == Keypair("AKIAKEEP", "kept-secret", False, 3, 50, created.created)
        assert [k.access_key for k in store.keys.list()] == ["AKIAKEEP", "AKIAOTHER"]
    finally:
        store.close()


def test_the_file_is_private_and_in_wal_mode(path, store):
    create(store.keys)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.path.exists(path + "-wal")


def test_sees_writes_from_another_connection(path, store):
    # The server keeps a store open while sandbox-admin writes through its own.
    assert store.keys.get("AKIALATER") is None
    other = SqliteStore(path)
    create(other.keys, "AKIALATER", "later-secret")
    assert store.keys.get("AKIALATER").secret_key == "later-secret"
    other.keys.disable("AKIALATER")
    assert store.keys.get("AKIALATER").is_active is False
    assert store.keys.count() == 1
    other.close()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"access_key": "AKI"}, "access_key"),
        ({"access_key": "A" * 65}, "access_key"),
        ({"access_key": "AKIA-DASH"}, "access_key"),
        ({"access_key": "AKIAÉCOLE"}, "access_key"),
        ({"access_key": ""}, "access_key"),
        ({"secret_key": "short"}, "secret_key"),
        ({"secret_key": "has a space"}, "secret_key"),
        ({"secret_key": "x" * 129}, "secret_key"),
        ({"secret_key": "tab\there-secret"}, "secret_key"),
        ({"secret_key": "non-ascii-ü-secret"}, "secret_key"),
        ({"concurrency": 0}, "concurrency"),
        ({"rate_limit": -1}, "rate_limit"),
        ({"rate_limit": True}, "rate_limit"),
    ],
)
def test_validation_names_the_field(store, kwargs, field):
    with pytest.raises(ValueError, match=field):
        create(store.keys, **kwargs)
    assert store.keys.count() == 0


def test_boundary_lengths_are_accepted(store):
    create(store.keys, "A" * 4, "s" * 8)
    create(store.keys, "B" * 64, "~" * 128)
    assert store.keys.count() == 2


def test_duplicate_access_key(store):
    create(store.keys, "AKIATWICE", "first-secret")
    with pytest.raises(ValueError, match="access_key.*exists"):
        create(store.keys, "AKIATWICE", "second-secret")
    assert store.keys.get("AKIATWICE").secret_key == "first-secret"


def test_folder_records_live_beside_the_keys(store):
    create(store.keys, "AKIAOWNER", "owner-secret")
    first = store.folders.add("AKIAOWNER", "data")
    assert re.fullmatch(r"[0-9a-f]{32}", first.id)
    with pytest.raises(Duplicate):
        store.folders.add("AKIAOWNER", "data")
    other = store.folders.add("AKIAOTHER", "data")  # names are per key
    assert store.folders.get("AKIAOWNER", "data") == first
    assert store.folders.get("AKIAOWNER", first.id) == first  # DOC-v2 addresses by id
    assert store.folders.get("AKIAOWNER", other.id) is None  # never another key's
    assert store.folders.list("AKIAOWNER") == [first]
    store.folders.remove(first.id)
    assert store.folders.list("AKIAOWNER") == []
    assert store.keys.count() == 1
