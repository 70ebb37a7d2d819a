"""Who may use a one-shot face (Jobe, Piston), and how much.

These faces' clients do not sign requests: Moodle's CodeRunner sends a fixed
`X-API-KEY`, Piston's clients a bearer key or nothing. So a face admits a request
that carries an active key of its own (made by `sandbox-admin face-keys create`,
stored hashed), within that key's rate (runs per minute, a token bucket) and
concurrency (its runs at once; one past it waits a while for a slot, as Jobe
waits for a free user, then is refused). A request without a known key is
admitted only from the networks the face's settings list (loopback by default:
Jobe and Piston are key-less, and a server on one machine serves that machine);
it then shares the server's job slots with everyone else and nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator

from ..engine.store import FaceKey, FaceKeyRecords

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(values: tuple[str, ...], name: str) -> list[Network]:
    """The networks of a setting; ValueError naming it for one that does not parse."""
    try:
        return [ipaddress.ip_network(v, strict=False) for v in values]
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


class Refused(Exception):
    """The request is not admitted: `status` and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class KeyBusy(Exception):
    """The key's runs filled its concurrency for longer than the face waits."""


class _Bucket:
    """`rate` runs per minute, up to `rate` at once after a quiet minute."""

    __slots__ = ("rate", "tokens", "stamp")

    def __init__(self, rate: int) -> None:
        self.rate, self.tokens, self.stamp = rate, float(rate), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate / 60)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class FaceAccess:
    def __init__(
        self,
        face: str,
        keys: FaceKeyRecords,
        keyless_networks: tuple[str, ...],
        key_wait_seconds: float,
    ) -> None:
        self.face = face
        self.keys = keys
        self.keyless = networks(keyless_networks, "keyless_networks")
        self.key_wait_seconds = key_wait_seconds
        self._buckets: dict[str, _Bucket] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}

    def keyless_from(self, host: str | None) -> bool:
        try:
            address = ipaddress.ip_address(host or "")
        except ValueError:
            return False
        return any(address in network for network in self.keyless)

    def admit(self, key: str | None, host: str | None) -> FaceKey | None:
        """The caller's active key, or None for a key-less caller from a listed
        network; Refused(403) otherwise. A key that is not ours (Jobe's test client
        always sends one) counts as no key."""
        record = self.keys.find(self.face, key) if key else None
        if record is not None and record.is_active:
            return record
        if self.keyless_from(host):
            return None
        raise Refused(403, "Unknown API key" if key else "Missing API key")

    def charge(self, record: FaceKey | None) -> None:
        """Count one run against the key's rate; Refused(429) past it."""
        if record is None or record.rate_limit == 0:
            return
        bucket = self._buckets.get(record.id)
        if bucket is None or bucket.rate != record.rate_limit:
            bucket = self._buckets[record.id] = _Bucket(record.rate_limit)
        if not bucket.take():
            raise Refused(429, "Max RUN rate for this server exceeded")

    @contextlib.asynccontextmanager
    async def slot(self, record: FaceKey | None) -> AsyncIterator[None]:
        """Hold one of the key's concurrent runs; KeyBusy after waiting too long."""
        if record is None:
            yield
            return
        slots = self._slots.setdefault(record.id, asyncio.Semaphore(record.concurrency_limit))
        try:
            async with asyncio.timeout(self.key_wait_seconds):
                await slots.acquire()
        except TimeoutError:
            raise KeyBusy(f"more than {record.concurrency_limit} runs of this key") from None
        try:
            yield
        finally:
            slots.release()
