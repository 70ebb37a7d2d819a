"""The store's web links and sessions: once only, expiry, a key's end."""

from __future__ import annotations

import time

from server.engine.sqlite_store import SqliteStore
from server.engine.store import WebSession, hash_web_token


def test_links_redeem_once_and_expire(tmp_path):
    store, now = SqliteStore(str(tmp_path / "db.sqlite")), time.time()
    store.web.add_link("AK1", hash_web_token("t1"), expires=now + 1000)
    assert store.web.link_key(hash_web_token("t1"), at=now) == "AK1"
    assert store.web.link_key(hash_web_token("t1"), at=now + 1000) is None  # expired then
    assert store.web.redeem_link(hash_web_token("t1"), at=now + 1000) is None
    assert store.web.redeem_link(hash_web_token("t1"), at=now) == "AK1"
    assert store.web.redeem_link(hash_web_token("t1"), at=now + 1) is None
    assert store.web.link_key(hash_web_token("t1"), at=now + 1) is None
    assert store.web.redeem_link(hash_web_token("unknown"), at=now) is None


def test_a_second_process_cannot_redeem_a_used_link(tmp_path):
    path = str(tmp_path / "db.sqlite")
    one, two = SqliteStore(path), SqliteStore(path)
    one.web.add_link("AK1", hash_web_token("t"), expires=1e12)
    assert one.web.redeem_link(hash_web_token("t"), at=1.0) == "AK1"
    assert two.web.redeem_link(hash_web_token("t"), at=1.0) is None


def test_sessions_expire_and_end_with_their_key(tmp_path):
    store, now = SqliteStore(str(tmp_path / "db.sqlite")), time.time()
    first = WebSession("AK1", "csrf1", now + 500)
    store.web.start(hash_web_token("s1"), first)
    store.web.start(hash_web_token("s2"), WebSession("AK2", "csrf2", now + 1000))
    store.web.add_link("AK1", hash_web_token("l1"), expires=now + 1000)
    assert store.web.get(hash_web_token("s1"), at=now) == first
    assert store.web.get(hash_web_token("s1"), at=now + 500) is None
    assert store.web.end_key("AK1") == 2  # its session and its unused link
    assert store.web.get(hash_web_token("s1"), at=now) is None
    assert store.web.redeem_link(hash_web_token("l1"), at=now) is None
    assert store.web.get(hash_web_token("s2"), at=now) is not None
    store.web.end(hash_web_token("s2"))
    assert store.web.get(hash_web_token("s2"), at=now) is None


def test_only_hashes_are_stored(tmp_path):
    path = tmp_path / "db.sqlite"
    store = SqliteStore(str(path))
    store.web.add_link("AK1", hash_web_token("plain-link-token"), expires=1e12)
    store.web.start(hash_web_token("plain-cookie"), WebSession("AK1", "c", 1e12))
    store.close()  # the last close checkpoints the write-ahead log into the file
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"plain-link-token" not in raw and b"plain-cookie" not in raw
