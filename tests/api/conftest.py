"""The API tests' fixtures: one real server for the session, and a client of it."""

from __future__ import annotations

import pytest
from helpers.api_server import SignedClient, start_server, stop_server


@pytest.fixture(scope="session")
def api_server(tmp_path_factory):
    proc, server = start_server(str(tmp_path_factory.mktemp("server-data")))
    yield server
    stop_server(proc)


@pytest.fixture
def api(api_server) -> SignedClient:
    return api_server.client()
