"""Kernels across a server restart: what a session's record holds, and how the next
server turns a record and an adopted kernel back into the session.

The spawner outlives the server and keeps its kernels (sandbox.spawner,
--keep-for); what only the server knew of each (owner, token, language, spec,
limits, clocks, run state) is in its record (kernel_records.py). Times are kept
as wall-clock seconds: the next server's monotonic clock starts elsewhere, and
the time the server was down counts (an idle timeout runs through it; a run's
exec timeout does too, since the program ran on).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from sandbox import languages
from sandbox.kernel import Kernel
from sandbox.kernel_snapshot import Snapshot
from sandbox.spawner_client import SpawnerClient
from sandbox.spec import KernelSpec

from .limits import KernelLimits
from .session import IDLE, RUNNING, TIMED_OUT, WAITING, Session

RECORD_VERSION = 1
_STATES = (IDLE, RUNNING, WAITING, TIMED_OUT)


def record(session: Session, snapshot: Snapshot | None = None) -> dict[str, Any]:
    """The session as its record keeps it; with what its kernel's connection held
    undelivered when the server stopped (`snapshot`), if it did."""
    mono, wall = time.monotonic(), time.time()
    data: dict[str, Any] = {
        "v": RECORD_VERSION,
        "accessKey": session.access_key,
        "token": session.token,
        "lang": session.lang,
        "spec": session.spec.to_json(),
        "limits": dataclasses.asdict(session.limits),
        "created": wall - (mono - session.created),
        "lastUsed": wall - (mono - session.last_used),
        "queries": session.queries,
        "cpuMsBeforeRestart": session.cpu_ms_before_restart,
        "state": session.state,
        "runId": session.run_id,
        # a running clock as the wall time it runs out at; a stopped one as seconds
        "runDeadline": None if session.run_clock is None else wall + session.remaining(),
        "runBudget": session.run_budget,
    }
    if snapshot is not None:
        data["held"] = snapshot.to_json()
    return data


@dataclasses.dataclass
class KeptSession:
    """A parsed record: the session to rebuild around its adopted kernel."""

    access_key: str
    token: str
    lang: str
    spec: KernelSpec
    limits: KernelLimits
    fields: dict[str, Any]
    snapshot: Snapshot | None

    @classmethod
    def parse(cls, data: dict[str, Any]) -> KeptSession:
        """ValueError (KeyError, TypeError) if it is not a record this server reads."""
        if data.get("v") != RECORD_VERSION:
            raise ValueError(f"record version {data.get('v')!r}")
        lang = data["lang"]
        if not isinstance(lang, str) or languages.resolve(lang) is None:
            raise ValueError(f"language {lang!r}")
        if data["state"] not in _STATES:
            raise ValueError(f"state {data['state']!r}")
        held = data.get("held")
        return cls(
            access_key=str(data["accessKey"]),
            token=str(data["token"]),
            lang=lang,
            spec=KernelSpec.from_json(data["spec"]),
            limits=KernelLimits(**{k: int(v) for k, v in data["limits"].items()}),
            fields=data,
            snapshot=None if held is None else Snapshot.from_json(held),
        )

    def session(self, kernel_id: str, kernel: Kernel, spawner: SpawnerClient) -> Session:
        d = self.fields
        mono, wall = time.monotonic(), time.time()
        session = Session(
            kernel_id, self.access_key, self.token, self.lang, self.spec, self.limits, kernel,
            spawner,
            created=mono - (wall - float(d["created"])),
            # After a kill the record's last use may be long past (a query that
            # finishes in its call writes none): the idle clock starts again.
            last_used=mono if self.snapshot is None else mono - (wall - float(d["lastUsed"])),
            queries=int(d["queries"]),
            state=d["state"],
            run_id=d["runId"] if isinstance(d["runId"], str) else None,
            cpu_ms_before_restart=float(d["cpuMsBeforeRestart"]),
        )  # fmt: skip
        if d["runDeadline"] is not None:  # the clock ran: it ran on while we were down
            session.run_budget = float(d["runDeadline"]) - wall
            session.run_clock = mono
        else:
            session.run_budget = float(d["runBudget"])
        session.recorded_state = session.state
        return session
