"""The web face over HTTP, as a browser meets it: one-time sign-in links, the
session cookie, CSRF and Origin checks, the page's way into the API, ownership,
revoked keys, sign-out, downloads. (tests/browser drives the page itself.)"""

from __future__ import annotations

import json

import httpx
import pytest
from helpers.api_server import start_server, stop_server
from helpers.web import Browserish, admin, new_student, sign_in_links
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect


@pytest.fixture
def student(api_server):
    access_key, link = new_student(api_server)
    browser = Browserish(api_server)
    assert browser.sign_in(link).status_code == 303
    yield browser
    for kernel in browser.made:
        browser.call("DELETE", f"/web/v2/kernel/{kernel}")
    admin(api_server, "keys", "disable", access_key)


def _cookie_header(answer: httpx.Response) -> str:
    [cookie] = [v for k, v in answer.headers.multi_items() if k == "set-cookie"]
    return cookie


def test_a_link_signs_in_once_with_a_strict_http_only_cookie(api_server):
    access_key, link = new_student(api_server)
    http = httpx.Client(timeout=30)
    shown = http.get(link)  # a preview or a mail scanner: the link stays good
    assert shown.status_code == 200 and access_key in shown.text
    assert http.get(link).status_code == 200
    first = http.post(link, headers={"Origin": api_server.endpoint})
    assert first.status_code == 303 and first.headers["location"] == "/"
    cookie = _cookie_header(first).lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "max-age=43200" in cookie  # [web] session_hours, 12 by default
    assert "secure" not in cookie  # plain http on loopback: a Secure cookie would be lost
    again = httpx.post(link, headers={"Origin": api_server.endpoint})
    assert again.status_code == 410 and "used" in again.text
    assert httpx.get(link).status_code == 410
    session = http.get(f"{api_server.endpoint}/session").json()
    assert session["accessKey"] == access_key and len(session["csrfToken"]) >= 32
    admin(api_server, "keys", "disable", access_key)


def test_the_cookie_is_secure_behind_a_tls_proxy(api_server):
    _key, link = new_student(api_server)
    answer = httpx.post(link, headers={"Origin": api_server.endpoint, "X-Forwarded-Proto": "https"})
    assert answer.status_code == 303
    assert "secure" in _cookie_header(answer).lower()


def test_links_are_per_key_and_each_works_once(api_server):
    access_key, _link = new_student(api_server)
    links = sign_in_links(api_server, access_key, count=3)
    assert len(set(links)) == 3
    for link in links:
        assert Browserish(api_server).sign_in(link).status_code == 303
    assert Browserish(api_server).sign_in(links[0]).status_code == 410
    refused = admin(api_server, "web-link", "AKIANOSUCHKEY000")
    assert refused.returncode == 1 and "no active keypair" in refused.stderr


@pytest.mark.parametrize("token", ["x", "A" * 500, "%00", "..%2f..%2fetc"])
def test_bad_link_tokens_are_a_plain_410(api_server, token):
    answer = httpx.get(f"{api_server.endpoint}/signin/{token}")
    assert answer.status_code in (404, 410)
    assert "Traceback" not in answer.text


def test_the_page_needs_a_session_and_carries_a_strict_policy(api_server, student):
    bare = httpx.get(f"{api_server.endpoint}/")
    assert bare.status_code == 303 and bare.headers["location"] == "/signin"
    page = student.http.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe" not in policy
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "same-origin"
    assert "<script>" not in page.text  # scripts come from files, never inline
    assert httpx.get(f"{api_server.endpoint}/session").status_code == 401


def test_the_page_reaches_the_api_as_its_key_with_csrf(api_server, student):
    kernel = student.create("web-tab1-python3")
    info = student.call("GET", f"/web/v2/kernel/{kernel}")
    assert info.status_code == 200 and info.json()["lang"].startswith("python3")
    # the same token re-attaches (a reloaded tab)
    assert student.create("web-tab1-python3") == kernel
    run = student.call(
        "POST", f"/web/v2/kernel/{kernel}", json={"mode": "query", "code": "print(6*7)"}
    )
    assert run.status_code == 200 and "42" in json.dumps(run.json())
    no_token = student.http.post(
        f"/web/v2/kernel/{kernel}/interrupt", headers={"Origin": api_server.endpoint}
    )
    assert no_token.status_code == 403 and "X-CSRF-Token" in no_token.json()["detail"]
    wrong_origin = student.call(
        "POST", f"/web/v2/kernel/{kernel}/interrupt", headers={"Origin": "http://evil.example"}
    )
    assert wrong_origin.status_code == 403
    # a GET routed as DELETE needs the token too
    sneaky = student.http.post(f"/web/v2/kernel/{kernel}", headers={"X-Method-Override": "DELETE"})
    assert sneaky.status_code == 403
    assert student.call("GET", f"/web/v2/kernel/{kernel}").status_code == 200


def test_the_cookie_counts_for_nothing_outside_the_pages_api(api_server, student):
    kernel = student.create("web-tab2-python3")
    direct = student.http.get(f"/v2/kernel/{kernel}")  # cookie, no signature
    assert direct.status_code == 401
    for path in ("/web/metrics", "/web/admin/kernels", "/web/v2x/kernel/languages"):
        assert student.call("GET", path).status_code == 404, path
    unsigned = httpx.get(f"{api_server.endpoint}/web/v2/kernel/{kernel}")
    assert unsigned.status_code == 401


def test_one_students_session_cannot_reach_anothers_kernel(api_server, student):
    kernel = student.create("web-tab3-python3")
    _key, link = new_student(api_server)
    other = Browserish(api_server)
    assert other.sign_in(link).status_code == 303
    assert other.call("GET", f"/web/v2/kernel/{kernel}").status_code == 404
    assert other.call("DELETE", f"/web/v2/kernel/{kernel}").status_code == 404
    assert other.http.get(f"/download/{kernel}", params={"path": "x"}).status_code == 404
    with pytest.raises(InvalidStatus) as refused:
        _stream(other, kernel, "pty")
    assert refused.value.response.status_code == 404
    assert student.call("GET", f"/web/v2/kernel/{kernel}").status_code == 200


def _stream(browser: Browserish, kernel: str, kind: str, origin: str | None = None):
    url = browser.server.endpoint.replace("http://", "ws://")
    headers = {"Cookie": f"sandbox_session={browser.http.cookies['sandbox_session']}"}
    headers["Origin"] = origin or browser.server.endpoint
    return ws_connect(
        f"{url}/web/v2/stream/kernel/{kernel}/{kind}", additional_headers=headers,
        open_timeout=10, origin=None,
    )  # fmt: skip


def test_streams_open_from_the_pages_origin_only(api_server, student):
    kernel = student.create("web-tab4-python3")
    with _stream(student, kernel, "execute") as ws:
        ws.send(json.dumps({"mode": "query", "code": "print('streamed')", "options": {}}))
        seen = []
        while True:
            message = json.loads(ws.recv(timeout=30))
            seen.append(message)
            if message["status"] == "finished":
                break
    assert "streamed" in json.dumps(seen)
    with pytest.raises(InvalidStatus) as foreign:
        _stream(student, kernel, "execute", origin="http://evil.example")
    assert foreign.value.response.status_code == 403


def test_a_disabled_key_ends_its_sessions_at_once(api_server):
    access_key, link = new_student(api_server)
    browser = Browserish(api_server)
    browser.sign_in(link)
    assert browser.call("GET", "/web/v2/kernel/languages").status_code == 200
    later_link = sign_in_links(api_server, access_key)[0]
    assert admin(api_server, "keys", "disable", access_key).returncode == 0
    assert browser.call("GET", "/web/v2/folders").status_code == 401
    assert browser.http.get("/session").status_code == 401
    assert browser.http.get("/").status_code == 303
    assert Browserish(api_server).sign_in(later_link).status_code == 410


def test_sign_out_needs_the_token_and_ends_the_session(api_server, student):
    assert student.http.post("/signout").status_code == 403
    answer = student.call("POST", "/signout")
    assert answer.status_code == 204
    assert "sandbox_session=" in _cookie_header(answer)
    assert student.call("GET", "/web/v2/folders").status_code == 401


def test_sign_in_with_a_keypair(api_server):
    keys = api_server.new_key()
    form = {"access_key": keys["access_key"], "secret_key": keys["secret_key"]}
    origin = {"Origin": api_server.endpoint}
    url = f"{api_server.endpoint}/signin"
    assert httpx.get(url).status_code == 200
    good = httpx.post(url, data=form, headers=origin)
    assert good.status_code == 303 and "sandbox_session=" in _cookie_header(good)
    wrong = httpx.post(url, data={**form, "secret_key": "nope"}, headers=origin)
    assert wrong.status_code == 401 and "wrong" in wrong.text
    unknown = httpx.post(url, data={**form, "access_key": "AKIAUNKNOWN"}, headers=origin)
    assert unknown.status_code == 401
    assert httpx.post(url, json=form, headers=origin).status_code == 400
    huge = httpx.post(url, data={**form, "pad": "x" * 10_000}, headers=origin)
    assert huge.status_code == 400
    cross = httpx.post(url, data=form, headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403 and "sandbox_session" not in cross.headers.get("set-cookie", "")


def test_files_upload_list_and_download(api_server, student):
    kernel = student.create("web-tab5-python3")
    upload = student.call(
        "POST", f"/web/v2/kernel/{kernel}/upload",
        files=[("src", ("data.txt", b"hello from the browser\n", "text/plain"))],
    )  # fmt: skip
    assert upload.status_code == 204, upload.text
    listing = student.call("GET", f"/web/v2/kernel/{kernel}/files", params={"path": "."})
    assert "data.txt" in listing.json()["files"]
    got = student.http.get(f"/download/{kernel}", params={"path": "data.txt"})
    assert got.status_code == 200 and got.content == b"hello from the browser\n"
    assert got.headers["content-disposition"] == "attachment; filename*=UTF-8''data.txt"
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["x-content-type-options"] == "nosniff"
    for path, status in (("../../etc/passwd", 400), ("", 400), ("missing.txt", 400)):
        answer = student.http.get(f"/download/{kernel}", params={"path": path})
        assert answer.status_code == status, (path, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
    assert student.http.get("/download/nosuchkernel", params={"path": "a"}).status_code == 404
    assert httpx.get(f"{api_server.endpoint}/download/{kernel}?path=data.txt").status_code == 401


def test_static_files_carry_the_headers_and_stay_in_their_folder(api_server):
    answer = httpx.get(f"{api_server.endpoint}/static/app.js")
    assert answer.status_code == 200 and answer.headers["x-content-type-options"] == "nosniff"
    assert "javascript" in answer.headers["content-type"]
    for path in ("/static/../__init__.py", "/static/%2e%2e/__init__.py", "/static/"):
        assert httpx.get(f"{api_server.endpoint}{path}").status_code == 404, path


def test_a_disabled_key_closes_its_open_streams(api_server):
    access_key, link = new_student(api_server)
    browser = Browserish(api_server)
    browser.sign_in(link)
    kernel = browser.create("web-tab6-python3")
    with _stream(browser, kernel, "pty") as terminal:
        terminal.send(json.dumps({"type": "ping"}))
        assert admin(api_server, "keys", "disable", access_key).returncode == 0
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                terminal.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    # the kernel outlives the stream (as when a browser closes it); the admin ends it
    port = api_server.endpoint.rsplit(":", 1)[1]
    destroyed = admin(api_server, "kernels", "destroy", "--port", port, "--", kernel)
    assert destroyed.returncode == 0, destroyed.stderr


def test_the_page_can_live_under_a_prefix(tmp_path_factory):
    config = '[web]\npage_prefix = "/play"\npublic_url = "https://class.example.org"\n'
    proc, server = start_server(str(tmp_path_factory.mktemp("web-prefix")), config=config)
    try:
        base = server.endpoint
        assert httpx.get(f"{base}/play").headers["location"] == "/play/"
        assert httpx.get(f"{base}/play/").headers["location"] == "/play/signin"
        assert httpx.get(f"{base}/").status_code == 404  # nothing left at the root
        made = admin(server, "--config", f"{server.data_dir.rstrip('/')}.toml", "keys",
                     "create", "--web-link", "--json")  # fmt: skip
        link = json.loads(made.stdout)["signInLink"]
        assert link.startswith("https://class.example.org/play/signin/")
        local = base + link.removeprefix("https://class.example.org")
        answer = httpx.post(local, headers={"Origin": base})
        assert answer.status_code == 303 and answer.headers["location"] == "/play/"
        cookie = _cookie_header(answer).lower()
        assert "path=/play" in cookie and "secure" in cookie  # public_url is https
        token = answer.cookies["sandbox_session"]
        page = httpx.get(f"{base}/play/", cookies={"sandbox_session": token})
        assert page.status_code == 200
        languages = httpx.get(
            f"{base}/play/web/v2/kernel/languages", cookies={"sandbox_session": token}
        )
        assert languages.status_code == 200
    finally:
        stop_server(proc)
