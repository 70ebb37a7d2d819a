"""The OpenAPI document of the v2 API (GET /v2/openapi.json) and its page (/v2/docs):
valid OpenAPI 3.1, every /v2 route of the app in it and nothing else, its request
schemas the very ones the handlers validate with, and a page that loads nothing
from elsewhere."""

from __future__ import annotations

import html.parser
import inspect
import json

import httpx
import pytest
from helpers.problems import problem
from openapi_spec_validator import validate
from starlette.routing import Route

from server.app import create_app
from server.faces import route_groups
from server.faces.v2 import files, folders, kernels, request_schemas, root, streams
from server.settings import ServerConfig

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


@pytest.fixture(scope="module")
def document(api_server) -> dict:
    r = httpx.get(api_server.endpoint + "/v2/openapi.json")  # unsigned
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    return r.json()


@pytest.fixture(scope="module")
def app_routes(tmp_path_factory) -> list[Route]:
    """The HTTP routes under /v2 of an app with every face on (none may add a /v2 route
    the document does not know), the WebSocket streams' plain-GET routes aside."""
    faces = {"enabled": ["web", "jobe", "piston"]}
    data_dir = str(tmp_path_factory.mktemp("routes"))
    app = create_app(ServerConfig.build({"server": {"data_dir": data_dir}, "faces": faces}))
    sockets = {route.path for route in streams.routes("/v2")}
    return [
        route
        for route in route_groups.flat(app.routes)
        if isinstance(route, Route)
        and (route.path == "/v2" or route.path.startswith("/v2/"))
        and route.path not in sockets
    ]


def test_the_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises with what is wrong
    signature = document["components"]["securitySchemes"]["signature"]
    assert signature["type"] == "apiKey" and signature["in"] == "header"
    assert (
        "HMAC-SHA256" in signature["description"]
        and "X-BackendAI-Version" in (signature["description"])
    )
    assert "/v3" in document["info"]["description"] and "/v1" in document["info"]["description"]


def test_every_route_is_documented_and_nothing_else(document, app_routes):
    routed = {
        (method.lower(), route.path) for route in app_routes for method in route.methods - {"HEAD"}
    }
    documented = {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }
    assert documented == routed
    assert len(routed) > 30
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def _round_trip(value: object) -> object:
    return json.loads(json.dumps(value))


def test_request_schemas_are_the_ones_the_handlers_validate_with(document, app_routes):
    schemas = document["components"]["schemas"]
    used = set()
    for route in app_routes:
        body = getattr(route.endpoint, "request_body", None)
        query = getattr(route.endpoint, "request_query", None)
        for method in route.methods - {"HEAD"}:
            op = document["paths"][route.path][method.lower()]
            if body is None:
                assert "application/json" not in op.get("requestBody", {}).get("content", {})
            else:
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                assert ref == f"#/components/schemas/{body.name}"
                assert request_schemas.REGISTRY[body.name] is body  # what validates it
                assert schemas[body.name] == _round_trip(body.schema)
                used.add(body.name)
            if query is not None:
                published = {p["name"]: p["schema"] for p in op["parameters"] if p["in"] == "query"}
                assert published == _round_trip(query.schema["properties"])
                assert schemas[query.name] == _round_trip(query.schema)
                used.add(query.name)
    assert used == set(request_schemas.REGISTRY)  # no shape that no handler takes


def test_no_handler_reads_a_body_around_its_schema():
    """A JSON body reaches a handler only through the shape it declared (takes)."""
    for module in (files, folders, kernels, root):
        assert "caller.json()" not in inspect.getsource(module), module.__name__


KID = "/v2/kernel/AAAAAAAAAAAAAAAAAAAAAA"  # no such kernel: the body is checked first
TOKEN = "tok-12345"


@pytest.mark.parametrize(
    ("method", "path", "body", "says"),
    [
        ("POST", "/v2/kernel/create", {"lang": "c", "clientSessionToken": 5},
         "(clientSessionToken: required, 4-80 characters"),
        ("POST", "/v2/kernel/create", {"lang": "c", "clientSessionToken": TOKEN,
                                       "limits": {"execTimeout": "1s"}},
         "(limits.execTimeout: expected a non-negative integer)"),
        ("POST", "/v2/kernel/create", {"lang": "c", "clientSessionToken": TOKEN,
                                       "resourceLimits": {"maxMem": 5}},
         "(resourceLimits.maxMem: expected null or 0 (the default), or at least 16384 KB)"),
        ("POST", "/v2/kernel/create", {"lang": "c", "clientSessionToken": TOKEN,
                                       "config": {"mounts": "x"}},
         "(config.mounts: expected a list of folder names)"),
        ("POST", KID, {"mode": "query", "runId": 1}, "(runId: expected a string or null)"),
        ("POST", KID, {"code": "1"}, "(mode: required, one of batch, complete, continue"),
        ("POST", KID + "/complete", {"code": 1}, "(code: expected a string)"),
        ("GET", KID + "/files", {"path": 7}, "(path: expected a path)"),
        ("POST", "/v2/folders", {"name": "ok", "surprise": 1}, "(body: unknown field 'surprise')"),
        ("POST", "/v2/folder/create", {}, "(name: 1-64 letters"),
        # a pattern's $ ends the string (ECMA-262), not before a final newline (Python)
        ("POST", "/v2/folders", {"name": "data\n"}, "(name: 1-64 letters"),
        ("POST", "/v2/kernel/create", {"lang": "c", "clientSessionToken": TOKEN + "\n"},
         "(clientSessionToken: required"),
        ("DELETE", "/v2/folders/x/delete_files", {"files": ["a"], "recursive": 1},
         "(recursive: expected true or false)"),
        ("GET", "/v2/folders/x/download", {"files": []}, "(files: expected a non-empty list"),
    ],
)  # fmt: skip
def test_a_request_against_its_schema_is_400_naming_the_field(api, method, path, body, says):
    assert says in problem(api.request(method, path, body), 400, "invalid-api-params")


def test_open_shapes_let_other_fields_pass(api):
    r = api.request("POST", "/v2/authorize", {"echo": 1, "x": 2})
    assert r.status_code == 200 and r.json() == {"authorized": "yes", "echo": 1}


def test_the_page_loads_only_scripts_from_here(api_server):
    r = httpx.get(api_server.endpoint + "/v2/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    policy = r.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self';" in policy
    assert "http" not in policy and "*" not in policy  # nothing remote, no wildcard
    page = _Scripts()
    page.feed(r.text)
    assert page.sources == ["docs/redoc.standalone.js"] and page.inline == 0
    assert page.spec_url == "openapi.json"
    script = httpx.get(api_server.endpoint + "/v2/" + page.sources[0])
    assert script.status_code == 200, "run scripts/setup-web"
    assert script.headers["content-type"].startswith("text/javascript")
    assert len(script.content) > 500_000 and b"Redoc" in script.content


class _Scripts(html.parser.HTMLParser):
    """The page's <script> sources, how many scripts are inline, and Redoc's spec-url."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.inline = 0
        self.spec_url: str | None = None
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script":
            self._in_script = True
            if found.get("src"):
                self.sources.append(found["src"] or "")
        elif tag == "redoc":
            self.spec_url = found.get("spec-url")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline += 1
