"""Server settings: a wrong type or range stops the server at start, naming the setting."""

from __future__ import annotations

import re

import pytest

from server.config import ServerConfig


def write(tmp_path, text: str) -> str:
    path = tmp_path / "server.toml"
    path.write_text(text)
    return str(path)


def test_a_file_with_every_kind_of_setting_loads(tmp_path):
    config = ServerConfig.load(
        write(
            tmp_path,
            'host = "0.0.0.0"\nport = 9000\naccess_log = true\nhold_seconds = 1\n'
            'kernel_reply_seconds = 2.5\npool_languages = ["python3", "bash"]\n'
            "spare_processes = 0\n",
        )
    )
    assert (config.host, config.port, config.access_log) == ("0.0.0.0", 9000, True)
    assert (config.hold_seconds, config.kernel_reply_seconds) == (1, 2.5)
    assert config.pool_languages == ("python3", "bash") and config.spare_processes == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('pool_size = "4"', "pool_size must be a whole number, not '4'"),
        ("spare_processes = -1", "spare_processes must not be negative"),
        ("port = true", "port must be a whole number, not True"),
        ("port = 70000", "port must be at most 65535"),
        ("max_kernels = 1.5", "max_kernels must be a whole number"),
        ("access_log = 1", "access_log must be true or false, not 1"),
        ('hold_seconds = "2"', "hold_seconds must be a number"),
        ("hold_seconds = 0", "hold_seconds must be more than 0"),
        ("pool_languages = [1]", "pool_languages must be a list of strings"),
        ('pool_languages = "python3"', "pool_languages must be a list of strings"),
        ("default_memory_bytes = 4294967296", "default_memory_bytes must not be more than"),
        ("max_exec_timeout_ms = 1000", "default_exec_timeout_ms must not be more than"),
        ("no_such_setting = 1", "unknown settings ['no_such_setting']"),
        ("max_connections = 0", "max_connections must be more than 0"),
        ("header_timeout_seconds = 0", "header_timeout_seconds must be more than 0"),
        ("body_timeout_seconds = -1", "body_timeout_seconds must not be negative"),
        ("max_header_bytes = 0", "max_header_bytes must be more than 0"),
        ("max_unverified_bodies = 0", "max_unverified_bodies must be more than 0"),
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
        ServerConfig.load(None, port=99999)
