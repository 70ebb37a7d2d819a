"""The v2 API fuzzed from its own document (GET /v2/openapi.json) with schemathesis,
against a real server started for this module, every request signed.

Each operation gets its documented examples, schemathesis' coverage cases (the
boundaries and violations of each schema) and FUZZ_EXAMPLES random ones; then
state machines follow the document's links (create -> execute -> files ->
destroy, and a folder's). The checks: no 5xx, every status, content type and
body as documented. Afterwards no kernel of the key is left, nor any process of
a kernel the fuzzer made.

The run is derandomized, so that CI is repeatable; FUZZ_EXAMPLES and
FUZZ_SCENARIOS in the environment change the budget (and with it the cases).
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import os
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
import requests
import schemathesis
from helpers.api_server import ApiServer, start_server, stop_server
from helpers.kernel_remains import KernelRemains
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server.faces.v2 import signing

pytestmark = pytest.mark.slow

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))  # random cases per operation
FUZZ_SCENARIOS = int(os.environ.get("FUZZ_SCENARIOS", "200"))  # linked sequences
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
CREATES_KERNEL = {"createKernel", "createKernelV3"}
CREATES_FOLDER = {"createFolder", "createFolderSlash", "createFolderV2"}
LANGS = ["python3", "bash", "c"]  # quick to start and to build: the chains go deep
# what schemathesis runs, as its schemathesis.toml would say it
CONFIG = {
    "generation": {"mode": "all", "database": "none"},
    "phases": {  # the chains: positive bodies, and only the document's own links
        "stateful": {"generation": {"mode": "positive"}, "inference": {"algorithms": []}}
    },
    "operations": [
        {  # logs are not offered: the answer is 503 not-implemented, as documented
            "include-operation-id": "getKernelLogs",
            "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "4xx", "503"]}},
        },
    ],
}
SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,  # a CI run is repeatable
    suppress_health_check=list(HealthCheck),
)


class Signer(requests.auth.AuthBase):
    """Signs each request as sent (its final body, path and query), as a client does
    (spec §2): requests calls it with the prepared request."""

    def __init__(self, access_key: str, secret_key: str) -> None:
        self.access_key, self.secret_key = access_key, secret_key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        url = urlsplit(request.url)
        path = url.path + (f"?{url.query}" if url.query else "")
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        headers = {
            "Host": url.netloc,
            "Date": datetime.datetime.now(datetime.UTC).isoformat(),
            "X-BackendAI-Version": "v2.20170315",
        }
        if "Content-Type" in request.headers:
            headers["Content-Type"] = request.headers["Content-Type"]
        headers["Authorization"] = signing.sign(
            request.method or "GET", path, headers, body, self.access_key, self.secret_key,
            auth_type="BackendAI",
        )  # fmt: skip
        request.headers.update(headers)
        return request


class Fuzzer:
    """The server, the key the fuzz runs as, and what the fuzz did: the answers it got
    (by phase, operation and status), the remains of every kernel it created (checked
    at the end), and clean-up."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.keys = server.new_key(concurrency=16, rate_limit=10_000_000)
        self.signer = Signer(self.keys["access_key"], self.keys["secret_key"])
        self.client = server.client(**self.keys)
        self.session = requests.Session()  # kept alive: a few thousand requests
        self.answers: collections.Counter[tuple[str, str, int]] = collections.Counter()
        self.remains: dict[str, KernelRemains] = {}

    def answered(self, phase: str, case: schemathesis.Case, response: requests.Response) -> None:
        """Count the answer; note a kernel it created, while that kernel lives."""
        op = operation_id(case)
        self.answers[phase, op, response.status_code] += 1
        if op in CREATES_KERNEL and response.status_code == 201 and response.json()["created"]:
            kid = response.json()["kernelId"]
            with contextlib.suppress(AssertionError, OSError, psutil.Error):  # gone already
                self.remains[kid] = KernelRemains(self.server, kid)  # (idleTimeout: 1)

    def undo(self, case: schemathesis.Case, response: requests.Response) -> None:
        """Destroy what one create made, so that creates keep room under the key's
        concurrency and folder count."""
        op = operation_id(case)
        if response.status_code == 201 and op in CREATES_KERNEL:
            self.client.request("DELETE", f"/v2/kernel/{response.json()['kernelId']}")
        elif response.status_code == 201 and op in CREATES_FOLDER:
            self.client.request("DELETE", f"/v2/folders/{response.json()['id']}")

    def live_kernels(self) -> list[str]:
        kernels = httpx.get(self.server.endpoint + "/admin/kernels").json()["kernels"]
        return [k["id"] for k in kernels if k["key"] == self.keys["access_key"]]

    def clean(self) -> None:
        """Destroy every kernel and folder the key still has."""
        for kid in self.live_kernels():
            self.client.request("DELETE", f"/v2/kernel/{kid}")
        for folder in self.client.request("GET", "/v2/folders").json():
            self.client.request("DELETE", f"/v2/folders/{folder['id']}")


def operation_id(case: schemathesis.Case) -> str:
    return case.operation.definition.raw["operationId"]


def runnable(case: schemathesis.Case) -> None:
    """Most creates ask for a language that runs (one in four keeps its random lang, a
    404): a chain needs a kernel to go on with."""
    if operation_id(case) in CREATES_KERNEL and isinstance(case.body, dict):
        lang = case.body.get("lang")
        if isinstance(lang, str) and lang and len(lang) % 4:
            case.body["lang"] = LANGS[len(lang) % len(LANGS)]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    proc, server = start_server(str(tmp_path_factory.mktemp("fuzz-data")))
    yield server
    stop_server(proc)


@pytest.fixture(scope="module")
def fuzzer(fuzz_server) -> Fuzzer:
    return Fuzzer(fuzz_server)


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_server):
    config = schemathesis.Config.from_dict(CONFIG)
    return schemathesis.openapi.from_url(fuzz_server.endpoint + "/v2/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    """schemathesis 4.32 reads the test's `_nodeid`, which pytest 9.2 no longer has
    (it keeps `nodeid` only): give it one."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.mark.timeout(600)
@schema.parametrize()
@SETTINGS
def test_operations(case, fuzzer):
    """Each operation alone: its examples, coverage cases and random cases."""
    runnable(case)
    response = case.call(session=fuzzer.session, auth=fuzzer.signer)
    fuzzer.answered("alone", case, response)
    try:
        case.validate_response(response, checks=CHECKS, transport_kwargs={"auth": fuzzer.signer})
    finally:
        fuzzer.undo(case, response)


@pytest.mark.timeout(600)
def test_linked_operations(fuzz_schema, fuzzer):
    """Sequences that follow the document's links: create -> execute -> files ->
    destroy, and a folder's. Each sequence ends with the key's kernels and folders
    destroyed."""

    class Links(fuzz_schema.as_state_machine()):
        def before_call(self, case):
            runnable(case)

        def get_call_kwargs(self, case):
            return {"session": fuzzer.session, "auth": fuzzer.signer}

        def after_call(self, response, case):
            super().after_call(response, case)
            fuzzer.answered("linked", case, response)

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(
                response, checks=CHECKS, transport_kwargs=kwargs, recorder=self.recorder
            )

        def teardown(self):
            fuzzer.clean()
            super().teardown()

    Links.run(settings=settings(SETTINGS, max_examples=FUZZ_SCENARIOS, stateful_step_count=15))
    # the chains went deep: each step of create -> execute -> files -> destroy succeeded
    for op, status in [("executeCode", 200), ("listKernelFiles", 200), ("destroyKernel", 204)]:
        assert fuzzer.answers["linked", op, status] > 0, (op, status)


def test_nothing_is_left(fuzzer):
    """After the fuzz (this module's tests run in order): no kernel of the key lives,
    and no process, cgroup or mount of any kernel it made is left."""
    if not fuzzer.answers:
        pytest.skip("checks what the fuzz tests above left")
    for kid in fuzzer.live_kernels():
        with contextlib.suppress(AssertionError, OSError, psutil.Error):
            fuzzer.remains.setdefault(kid, KernelRemains(fuzzer.server, kid))
    fuzzer.clean()
    assert fuzzer.live_kernels() == []
    assert fuzzer.client.request("GET", "/v2/folders").json() == []
    assert fuzzer.remains, "the fuzz should have made kernels"
    for remains in fuzzer.remains.values():
        remains.assert_gone()
    print(f"\n{sum(fuzzer.answers.values())} requests; kernels made: {len(fuzzer.remains)}")
