"""Server settings: one tree of tables; a wrong type or range stops the server at start,
naming the table and setting; files from before the tables still load."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from server.settings import TABLES, ServerConfig, ServerSettings, reference


def write(tmp_path, text: str) -> str:
    path = tmp_path / "server.toml"
    path.write_text(text)
    return str(path)


def test_a_file_with_every_kind_of_setting_loads(tmp_path):
    config = ServerConfig.load(
        write(
            tmp_path,
            '[server]\nhost = "0.0.0.0"\nport = 9000\naccess_log = true\n'
            "[v2]\nhold_seconds = 1\n[limits]\nkernel_reply_seconds = 2.5\n"
            '[pool]\npool_languages = ["python3", "bash"]\n[sandbox]\nspare_processes = 0\n',
        )
    )
    server = config.server
    assert (server.host, server.port, server.access_log) == ("0.0.0.0", 9000, True)
    assert (config.v2.hold_seconds, config.limits.kernel_reply_seconds) == (1, 2.5)
    assert config.pool.pool_languages == ("python3", "bash")
    assert config.sandbox.spare_processes == 0
    assert config.engine.sandbox is config.sandbox


@pytest.mark.parametrize(
    "text",
    [
        'host = "0.0.0.0"\nhold_seconds = 1\npool_size = 2\nspare_processes = 0\n',
        '[server]\nhost = "0.0.0.0"\nhold_seconds = 1\npool_size = 2\nspare_processes = 0\n',
    ],
    ids=["top level", "under [server]"],
)
def test_a_file_from_before_the_tables_still_loads(tmp_path, text):
    config = ServerConfig.load(write(tmp_path, text))
    assert config.server.host == "0.0.0.0" and config.v2.hold_seconds == 1
    assert config.pool.pool_size == 2 and config.sandbox.spare_processes == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('pool_size = "4"', "pool_size must be a whole number, not '4'"),
        ("spare_processes = -1", "[sandbox] spare_processes must be at least 0"),
        ("port = true", "port must be a whole number, not True"),
        ("port = 70000", "port must be at most 65535"),
        ("max_kernels = 1.5", "max_kernels must be a whole number"),
        ("access_log = 1", "access_log must be true or false, not 1"),
        ('hold_seconds = "2"', "hold_seconds must be a number"),
        ("hold_seconds = 0", "hold_seconds must be more than 0"),
        ("pool_languages = [1]", "pool_languages must be a list of strings"),
        ('pool_languages = "python3"', "pool_languages must be a list of strings"),
        ("default_memory_bytes = 4294967296", "default_memory_bytes must not be more than"),
        ("max_exec_timeout_ms = 1000", "[limits] default_exec_timeout_ms must not be more than"),
        ("no_such_setting = 1", "unknown setting no_such_setting"),
        ("[limits]\nport = 1", "unknown setting [limits] port"),
        (
            '[sandbox]\ncgroup_layout = "v3"',
            "cgroup_layout must be one of auto, v2, hybrid, v1, none",
        ),
        ("max_connections = 0", "[server] max_connections must be at least 1"),
        ("header_timeout_seconds = 0", "header_timeout_seconds must be more than 0"),
        ("body_timeout_seconds = -1", "body_timeout_seconds must be more than 0"),
        ("max_header_bytes = 0", "max_header_bytes must be at least 1024"),
        ("max_unverified_bodies = 0", "max_unverified_bodies must be at least 1"),
        ('allow_md5_signatures = "yes"', "allow_md5_signatures must be true or false"),
        ("kernel_send_seconds = 0", "kernel_send_seconds must be more than 0"),
        ("kernel_pause_bytes = 1000", "kernel_pause_bytes must be at least 1048576"),
        ("kernel_held_bytes = 9000000", "kernel_held_bytes must be at least twice"),
        ("server_held_bytes = 1048576", "server_held_bytes must not be less than"),
    ],
)
def test_a_wrong_setting_is_an_error_naming_it(tmp_path, text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ServerConfig.load(write(tmp_path, text + "\n"))


def test_flags_are_checked_too():
    with pytest.raises(ValueError, match="port must be at most 65535"):
        ServerConfig.load(None, {"server": {"port": 99999}})


def test_the_configuration_reference_is_the_settings_own():
    """docs/configuration.md is generated from the tables (python -m server.settings):
    a setting added, removed or changed without regenerating it fails here."""
    path = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    assert path.read_text() == reference(), "regenerate: python -m server.settings"
    for table, cls in TABLES.items():
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in path.read_text(), (table, f.name)


@pytest.mark.parametrize(
    ("host", "url"),
    [("127.0.0.1", "http://127.0.0.1:8080"), ("0.0.0.0", "http://127.0.0.1:8080"),
     ("::", "http://127.0.0.1:8080"), ("::1", "http://[::1]:8080"),
     ("10.0.0.5", "http://10.0.0.5:8080")],
)  # fmt: skip
def test_the_local_url_a_client_here_uses(host, url):
    assert ServerSettings(host=host).local_url() == url
    assert ServerSettings(host=host).local_url(9000) == url.replace("8080", "9000")


def test_the_page_url_prefers_the_given_base_then_public_url():
    config = ServerConfig.load(None, {"web": {"page_prefix": "/play"}})
    assert config.page_url() == "http://127.0.0.1:8080/play"
    assert config.page_url("https://x.example/") == "https://x.example/play"
    public = ServerConfig.load(None, {"web": {"public_url": "https://class.example.org/"}})
    assert public.page_url() == "https://class.example.org"
