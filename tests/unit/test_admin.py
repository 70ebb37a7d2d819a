"""sandbox-admin: keys create/list/disable and sign, called through main()."""

from __future__ import annotations

import json
import os
import shlex

import pytest

from server.admin import main
from server.engine.store_backends import open_store
from server.faces.v2 import signing as auth


@pytest.fixture
def data_dir(tmp_path) -> str:
    return str(tmp_path / "data")


def run(capsys, *argv: str) -> str:
    main(list(argv))
    return capsys.readouterr().out


def fails(capsys, *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code, capsys.readouterr().err


def test_create_json(capsys, data_dir):
    out = run(capsys, "--data-dir", data_dir, "keys", "create", "--json")
    data = json.loads(out)
    assert list(data) == ["accessKey", "secretKey"]
    assert data["accessKey"].startswith("AKIA") and len(data["accessKey"]) == 20
    assert len(data["secretKey"]) == 40
    store = open_store(data_dir)
    assert store.keys.get(data["accessKey"]).secret_key == data["secretKey"]
    store.close()
    assert os.stat(data_dir).st_mode & 0o777 == 0o700


def test_create_readable(capsys, data_dir):
    out = run(
        capsys,
        "keys",
        "create",
        "--data-dir",
        data_dir,  # after the command works too
        "--access-key",
        "AKIAGIVEN",
        "--secret-key",
        "given-secret",
        "--concurrency",
        "2",
        "--rate-limit",
        "60",
    )
    lines = out.splitlines()
    assert "SORNA_ACCESS_KEY=AKIAGIVEN" in lines
    assert "SORNA_SECRET_KEY=given-secret" in lines
    assert "2 kernels" in out and "60 requests / 15 min" in out


def test_list_hides_secrets(capsys, data_dir):
    run(capsys, "--data-dir", data_dir, "keys", "create", "--access-key", "AKIAONE", "--json")
    data = json.loads(
        run(capsys, "--data-dir", data_dir, "keys", "create", "--rate-limit", "7", "--json")
    )
    out = run(capsys, "--data-dir", data_dir, "keys", "list")
    lines = out.splitlines()
    assert lines[0].split() == [
        "ACCESS",
        "KEY",
        "ACTIVE",
        "CONCURRENCY",
        "RATE",
        "LIMIT",
        "CREATED",
    ]
    assert lines[1].split()[:4] == ["AKIAONE", "yes", "5", "1000"]
    assert lines[2].split()[:4] == [data["accessKey"], "yes", "5", "7"]
    assert data["secretKey"] not in out


def test_list_empty(capsys, data_dir):
    os.makedirs(data_dir)
    open_store(data_dir).close()
    assert run(capsys, "--data-dir", data_dir, "keys", "list") == "no keypairs\n"


def test_disable(capsys, data_dir):
    run(capsys, "--data-dir", data_dir, "keys", "create", "--access-key", "AKIAOFF", "--json")
    assert run(capsys, "--data-dir", data_dir, "keys", "disable", "AKIAOFF") == "disabled AKIAOFF\n"
    assert run(capsys, "--data-dir", data_dir, "keys", "list").splitlines()[1].split()[1] == "no"
    code, err = fails(capsys, "--data-dir", data_dir, "keys", "disable", "AKIANOBODY")
    assert code == 1
    assert "no keypair with access key AKIANOBODY" in err


def test_missing_store_is_a_clear_error(capsys, data_dir):
    code, err = fails(capsys, "--data-dir", data_dir, "keys", "list")
    assert code == 1 and "no key store" in err
    assert not os.path.exists(data_dir)


def test_default_data_dir_is_dot_data(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run(capsys, "keys", "create", "--json")
    assert os.path.exists(tmp_path / "data" / "sandbox.sqlite")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["keys"],
        ["keys", "create", "--concurrency", "many"],
        ["keys", "create", "--concurrency", "0"],
        ["keys", "create", "--access-key", "bad-key!"],
        ["keys", "create", "--secret-key", "short"],
        ["keys", "disable"],
        ["sign", "GET"],
        ["sign", "GET", "not-a-url"],
        ["sign", "GET", "ftp://host/x"],
        ["sign", "G E T", "http://h/v2"],
        ["sign", "--dialect", "aws", "GET", "http://h/v2"],
        ["sign", "--access-key", "AKIAONLY", "GET", "http://h/v2"],
    ],
)
def test_bad_input_is_a_usage_error(capsys, data_dir, argv):
    code, err = fails(capsys, "--data-dir", data_dir, *argv)
    assert code == 2
    assert "usage:" in err
    assert "Traceback" not in err


def test_duplicate_access_key_is_a_usage_error(capsys, data_dir):
    run(capsys, "--data-dir", data_dir, "keys", "create", "--access-key", "AKIATWICE", "--json")
    code, err = fails(capsys, "--data-dir", data_dir, "keys", "create", "--access-key", "AKIATWICE")
    assert code == 2 and "exists already" in err


# -- sign -------------------------------------------------------------------------------------


def parse_sign_output(out: str) -> dict[str, str]:
    """What the shell hands curl: every line is `-H 'Name: value'`."""
    headers = {}
    for line in out.splitlines():
        flag, header = shlex.split(line)
        assert flag == "-H"
        name, _, value = header.partition(": ")
        headers[name] = value
    return headers


def verify(headers: dict[str, str], method: str, path: str, host: str, body: bytes, secret: str):
    return auth.authenticate(
        method, path, {**headers, "Host": host}, body, lambda ak: secret if ak else None
    )


def test_sign_with_given_keys(capsys):
    out = run(
        capsys,
        "sign",
        "--access-key",
        "AKIAGIVEN",
        "--secret-key=-starts-with-dash",
        "GET",
        "http://127.0.0.1:8080/v2/kernel/abc?x=1",
    )
    headers = parse_sign_output(out)
    assert list(headers) == ["Date", "X-Sorna-Version", "Content-Type", "Authorization"]
    assert headers["X-Sorna-Version"] == "v2.20170315"
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Authorization"].startswith(
        "Sorna signMethod=HMAC-SHA256, credential=AKIAGIVEN:"
    )
    access_key = verify(
        headers, "GET", "/v2/kernel/abc?x=1", "127.0.0.1:8080", b"", "-starts-with-dash"
    )
    assert access_key == "AKIAGIVEN"


def test_sign_with_the_first_active_key_and_a_body(capsys, data_dir):
    run(capsys, "--data-dir", data_dir, "keys", "create", "--access-key", "AKIAOLD", "--json")
    run(capsys, "--data-dir", data_dir, "keys", "create", "--access-key", "AKIANEW", "--json")
    run(capsys, "--data-dir", data_dir, "keys", "disable", "AKIAOLD")
    store = open_store(data_dir)
    secret = store.keys.get("AKIANEW").secret_key
    store.close()
    body = '{"lang": "python3", "note": "it\'s ünïcode"}'
    out = run(
        capsys,
        "sign",
        "--data-dir",
        data_dir,
        "--dialect",
        "backendai",
        "--data",
        body,
        "post",
        "http://user:pw@localhost:8080/v2/kernel/create",
    )
    headers = parse_sign_output(out)
    assert headers["Content-Type"] == "application/json"
    assert "X-BackendAI-Version" in headers
    assert headers["Authorization"].startswith(
        "BackendAI signMethod=HMAC-SHA256, credential=AKIANEW:"
    )
    assert verify(headers, "POST", "/v2/kernel/create", "localhost:8080", body.encode(), secret)
    with pytest.raises(auth.AuthError):
        verify(headers, "POST", "/v2/kernel/create", "localhost:8080", b"{}", secret)


def test_sign_with_a_content_type(capsys):
    out = run(
        capsys,
        "sign",
        "--access-key",
        "AKIAGIVEN",
        "--secret-key",
        "given-secret",
        "--content-type",
        "multipart/form-data; boundary=xyz",
        "POST",
        "https://api.example.com/v2/kernel/k/upload",
    )
    headers = parse_sign_output(out)
    assert headers["Content-Type"] == "multipart/form-data; boundary=xyz"
    path = "/v2/kernel/k/upload"
    assert verify(headers, "POST", path, "api.example.com", b"parts", "given-secret")


def test_sign_without_any_active_key(capsys, data_dir):
    run(capsys, "--data-dir", data_dir, "keys", "create", "--access-key", "AKIAOFF", "--json")
    run(capsys, "--data-dir", data_dir, "keys", "disable", "AKIAOFF")
    code, err = fails(capsys, "--data-dir", data_dir, "sign", "GET", "http://h/v2/authorize")
    assert code == 1 and "no active keypair" in err


def test_sign_help_shows_the_shell_usage(capsys):
    with pytest.raises(SystemExit) as info:
        main(["sign", "--help"])
    assert info.value.code == 0
    assert "eval curl $(sandbox-admin sign" in capsys.readouterr().out


def test_the_server_config_file_gives_the_data_dir_and_new_keys_defaults(capsys, tmp_path):
    data_dir = tmp_path / "from-config"
    config = tmp_path / "server.toml"
    config.write_text(
        f'[server]\ndata_dir = "{data_dir}"\n'
        "[limits]\ndefault_concurrency = 7\ndefault_rate_limit = 77\n"
        "[v2]\nrate_window_seconds = 60\n"
    )
    out = run(capsys, "--config", str(config), "keys", "create")
    assert f"in {data_dir}:" in out and "77 requests / 1 min" in out
    store = open_store(str(data_dir))
    (keypair,) = store.keys.list()
    store.close()
    assert (keypair.concurrency_limit, keypair.rate_limit) == (7, 77)
    # --data-dir still wins over the file's, after the command as before it
    other = tmp_path / "flag"
    run(capsys, "keys", "create", "--config", str(config), "--data-dir", str(other))
    assert os.path.exists(other / "sandbox.sqlite")


def test_a_bad_config_file_is_named(capsys, tmp_path):
    config = tmp_path / "server.toml"
    config.write_text("[limits]\ndefault_concurrency = 0\n")
    code, err = fails(capsys, "--config", str(config), "keys", "list")
    assert code == 1 and "default_concurrency must be at least 1" in err
