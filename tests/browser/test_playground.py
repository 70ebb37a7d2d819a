"""The playground page in a real browser (Debian's chromium via Playwright) against
a real server: sign-in, runs with input and plots, C, streaming output, interrupt,
the terminal, files, hostile kernel output, another student's kernel, and an
accessibility check."""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import threading

from helpers.api_server import ROOT
from helpers.web import new_student

PY_PROGRAM = """\
import matplotlib.pyplot as plt
print("hello from the page")
name = input("Your name? ")
print(f"Hello {name}!")
plt.plot([1, 2, 3], [1, 4, 9])
plt.show()
"""

C_PROGRAM = """\
#include <stdio.h>
int main(void) {
    int n;
    printf("a number? ");
    fflush(stdout);
    if (scanf("%d", &n) != 1) return 1;
    printf("twice %d is %d\\n", n, 2 * n);
    return 0;
}
"""


def _answer_input(student, text: str) -> None:
    student.page.wait_for_selector('body[data-state="waiting-input"]', timeout=60_000)
    assert student.page.is_visible("#input-form")
    student.page.fill("#input-box", text)
    student.page.press("#input-box", "Enter")


def test_a_link_signs_in_once_with_the_cookie_as_stated(chromium, web_server):
    _key, link = new_student(web_server)
    context = chromium.new_context()
    page = context.new_page()
    page.goto(link)
    page.click("#signin-button")
    page.wait_for_url(web_server.endpoint + "/")
    [cookie] = [c for c in context.cookies() if c["name"] == "sandbox_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert cookie["expires"] > 0 and not cookie["secure"]  # plain http on loopback
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script sees it
    other = chromium.new_context()
    again = other.new_page()
    answer = again.goto(link)
    assert answer.status == 410 and "used" in again.inner_text("main")
    other.close()
    context.close()


def test_python_prints_reads_input_and_plots(student, artifacts):
    student.run(PY_PROGRAM)
    _answer_input(student, "Ada")
    student.wait_ready()
    output = student.output()
    assert "hello from the page" in output and "Hello Ada!" in output
    assert student.page.inner_text("#output .out-input").strip() == "Ada"
    image = student.page.wait_for_selector("#output img.out-media")
    src = image.get_attribute("src")
    assert src.startswith("data:image/svg+xml;base64,")
    assert "<svg" in base64.b64decode(src.split(",", 1)[1]).decode()
    assert image.evaluate("img => img.naturalWidth") > 0  # the browser drew it
    student.page.screenshot(path=os.path.join(artifacts, "playground-python.png"))


def test_password_input_is_masked(student):
    student.run('import getpass\nsecret = getpass.getpass("pin? ")\nprint(len(secret))')
    student.page.wait_for_selector('body[data-state="waiting-input"]', timeout=60_000)
    assert student.page.get_attribute("#input-box", "type") == "password"
    student.page.fill("#input-box", "1234")
    student.page.press("#input-box", "Enter")
    student.wait_ready()
    assert "4" in student.output() and "1234" not in student.output()


def test_a_c_program_with_scanf(student):
    student.page.select_option("#language", "c")
    student.wait_ready()
    student.run(C_PROGRAM)
    _answer_input(student, "21")
    student.wait_ready()
    assert "twice 21 is 42" in student.output()


def test_lines_appear_one_by_one(student):
    student.run(
        "import time\nfor i in range(5):\n    print(f'line {i}', flush=True)\n    time.sleep(1)"
    )
    # what the page showed each time the output changed, and whether it was still running
    student.page.evaluate(
        """() => {
            window.__seen = [];
            new MutationObserver(() => window.__seen.push([
                document.querySelector('#output').innerText.split('line ').length - 1,
                document.body.dataset.state,
            ])).observe(document.querySelector('#output'),
                        {childList: true, subtree: true, characterData: true});
        }"""
    )
    student.page.wait_for_function(
        "() => document.querySelector('#output').innerText.includes('line 4')", timeout=60_000
    )
    student.wait_ready()
    seen = student.page.evaluate("window.__seen")
    counts_while_running = sorted({n for n, state in seen if state == "running"})
    assert len([n for n in counts_while_running if 0 < n < 5]) >= 3, seen


def test_interrupt_stops_a_loop(student):
    student.run("n = 0\nwhile True:\n    n += 1")
    student.page.wait_for_selector('body[data-state="running"]')
    student.page.click("#interrupt")
    student.wait_ready(timeout=30_000)
    assert "KeyboardInterrupt" in student.output()
    student.run("print('alive after the interrupt')")
    student.wait_ready()
    assert "alive after the interrupt" in student.output()


# xterm draws on a canvas (its DOM renderer needs inline styles the page's policy
# forbids): the text is read from its buffer, the xterm instance the page keeps on
# #terminal.
TERMINAL_TEXT = """() => {
    const buffer = document.querySelector('#terminal').xterm.buffer.active;
    const lines = [];
    for (let i = 0; i < buffer.length; i++) {
        lines.push(buffer.getLine(i).translateToString(true));
    }
    return lines.join('\\n');
}"""


def _terminal_text(student) -> str:
    return student.page.evaluate(TERMINAL_TEXT)


def _wait_terminal(student, pattern: str) -> None:
    student.page.wait_for_function(
        f"() => new RegExp({pattern!r}, 'm').test(({TERMINAL_TEXT})())", timeout=30_000
    )


def test_the_terminal_runs_commands_and_follows_the_window_size(student):
    page = student.page
    page.click("#tab-terminal")
    page.wait_for_function("() => document.querySelector('#terminal').xterm")
    _wait_terminal(student, r"\$ *$")
    page.click("#terminal")
    page.keyboard.type("echo made-by-test > proof.txt; ls\n")
    _wait_terminal(student, r"^proof\.txt")
    page.keyboard.type('echo "SIZE1 $(stty size) END"\n')
    _wait_terminal(student, r"^SIZE1 \d+ \d+ END")
    first = re.findall(r"^SIZE1 (\d+) (\d+) END", _terminal_text(student), re.M)[-1]
    page.set_viewport_size({"width": 800, "height": 600})
    page.wait_for_timeout(500)  # the page fits the terminal and sends the new size
    page.keyboard.type('echo "SIZE2 $(stty size) END"\n')
    _wait_terminal(student, r"^SIZE2 \d+ \d+ END")
    second = re.findall(r"^SIZE2 (\d+) (\d+) END", _terminal_text(student), re.M)[-1]
    # (narrower than 900 px the page is one column: the terminal gets wider)
    assert second != first, (first, second)


def test_upload_read_and_download(student, tmp_path):
    page = student.page
    source = tmp_path / "numbers.txt"
    source.write_text("3\n4\n5\n")
    page.click("#tab-files")
    page.set_input_files("#upload", str(source))
    page.click("#upload-button")
    page.wait_for_selector("#file-list li:has-text('numbers.txt')", timeout=30_000)
    page.click("#tab-output")
    student.run(
        "total = sum(int(x) for x in open('numbers.txt'))\n"
        "open('total.txt', 'w').write(f'total={total}\\n')\nprint('sum', total)"
    )
    student.wait_ready()
    assert "sum 12" in student.output()
    page.click("#tab-files")
    page.click("#refresh-files")
    # a locator, not a handle: the list is drawn again as refreshes come in
    link = page.locator("#file-list li", has_text="total.txt").locator("a.download")
    with page.expect_download() as got:
        link.click()
    saved = tmp_path / "total-downloaded.txt"
    got.value.save_as(saved)
    assert saved.read_text() == "total=12\n"


class _Tripwire(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        _Tripwire.hits.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_kernel_markup_never_runs(student):
    """Output with <script> and <img onerror> (as text, and as an html item in the
    sandboxed frame) shows no dialog and makes no request to the tripwire."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Tripwire)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    requests: list[str] = []
    student.page.on("request", lambda r: requests.append(r.url))
    blocked: list[str] = []  # what the browser refused to send (the policy's "csp")
    student.page.on("requestfailed", lambda r: r.failure == "csp" and blocked.append(r.url))
    attack = (
        f"<script>alert('xss');fetch('http://127.0.0.1:{port}/script')</script>"
        f"<img src=x onerror=\"alert('img');fetch('http://127.0.0.1:{port}/img')\">"
        f"<img src='http://127.0.0.1:{port}/direct'>"
    )
    student.run(
        f"attack = {attack!r}\nprint(attack)\n"
        "class Page:\n    def _repr_html_(self):\n        return attack\n"
        "display(Page())"
    )
    student.wait_ready()
    student.page.wait_for_selector("#output iframe.out-html")
    student.page.wait_for_timeout(1000)  # time for anything that would fire
    server.shutdown()  # (its socket still listens: a late request would hang, not pass)
    assert "alert('xss')" in student.output()  # shown as text
    frame = student.page.query_selector("#output iframe.out-html")
    assert frame.get_attribute("sandbox") == ""
    assert student.dialogs == []
    assert _Tripwire.hits == []
    # the <img> in the frame may be tried: only as a request the policy refused
    tried = [url for url in requests if f":{port}/" in url]
    assert all(url in blocked for url in tried), (tried, blocked)


def test_another_students_session_cannot_use_the_kernel(make_student):
    alice, bob = make_student(), make_student()
    kernel = alice.page.get_attribute("#kernel-info", "data-kernel-id")
    assert kernel
    tried = bob.page.evaluate(
        """async kernel => {
            const session = await (await fetch('session')).json();
            const post = {method: 'POST', headers: {'X-CSRF-Token': session.csrfToken,
                          'Content-Type': 'application/json'},
                          body: JSON.stringify({mode: 'query', code: 'print(1)'})};
            const info = await fetch(`web/v2/kernel/${kernel}`);
            const run = await fetch(`web/v2/kernel/${kernel}`, post);
            const stream = await new Promise(done => {
                const ws = new WebSocket(
                    location.origin.replace('http', 'ws') +
                    `/web/v2/stream/kernel/${kernel}/pty`);
                ws.onopen = () => done('open');
                ws.onerror = () => done('refused');
            });
            return [info.status, run.status, stream];
        }""",
        kernel,
    )
    assert tried == [404, 404, "refused"]
    alice.run("print('still mine')")
    alice.wait_ready()
    assert "still mine" in alice.output()


def _axe(student) -> list[dict]:
    with open(os.path.join(ROOT, "server/faces/web/static/vendor/axe.min.js")) as f:
        student.page.evaluate(f.read())  # evaluated over CDP: the page's CSP is untouched
    found = student.page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


def test_the_page_passes_an_accessibility_check(student, artifacts):
    student.run("print('accessible')")
    student.wait_ready()
    problems = {"output": _axe(student)}
    for tab in ("terminal", "files"):
        student.page.click(f"#tab-{tab}")
        student.page.wait_for_timeout(500)
        problems[tab] = _axe(student)
    with open(os.path.join(artifacts, "axe.json"), "w") as f:
        json.dump(problems, f, indent=2)
    assert problems == {"output": [], "terminal": [], "files": []}


def test_the_page_works_from_the_keyboard_alone(student):
    page = student.page
    page.focus("#editor .CodeMirror textarea")
    page.keyboard.type("print('typed')")
    page.keyboard.press("Control+Enter")
    student.page.wait_for_function(
        "() => document.querySelector('#output').innerText.includes('typed')", timeout=60_000
    )
    student.wait_ready()
    page.keyboard.press("Escape")  # leaves the editor; Tab moves on
    page.keyboard.press("Tab")
    assert page.evaluate("!document.activeElement.closest('#editor')")


def test_a_reload_reattaches_and_restart_gives_a_fresh_interpreter(student):
    kernel = student.page.get_attribute("#kernel-info", "data-kernel-id")
    student.run("x = 41")
    student.wait_ready()
    student.page.reload()
    student.wait_ready()
    assert student.page.get_attribute("#kernel-info", "data-kernel-id") == kernel
    student.run("print(x + 1)")
    student.wait_ready()
    assert "42" in student.output()
    student.page.click("#restart")
    student.wait_ready()
    student.run("print('x' in globals())")
    student.wait_ready()
    assert student.output().strip().endswith("False")


def test_a_folder_made_on_the_page_mounts_on_the_next_kernel(student):
    page = student.page
    page.click("#tab-files")
    page.fill("#new-folder-name", "notes")
    page.click("#create-folder")
    box = page.locator("#folder-list input[name=mount][value=notes]")
    box.wait_for()
    box.check()
    old = page.get_attribute("#kernel-info", "data-kernel-id")
    page.click("#new-kernel")
    page.wait_for_function(
        "old => document.querySelector('#kernel-info').dataset.kernelId !== old", arg=old
    )
    student.wait_ready()
    page.click("#tab-output")
    student.run("import os\nprint(os.path.ismount('notes'))")
    student.wait_ready()
    assert student.output().strip().endswith("True")


def test_dark_mode_a_narrow_window_and_nothing_from_elsewhere(chromium, web_server):
    """The system's dark mode is followed; at 640 px wide (a 1280 px window at 200 %
    zoom) the page is one column with nothing cut off sideways; every request it
    makes goes to this server."""
    _key, link = new_student(web_server)
    context = chromium.new_context(color_scheme="dark", viewport={"width": 640, "height": 900})
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(link)
    page.click("#signin-button")
    page.wait_for_selector('body[data-state="ready"]', timeout=60_000)
    # everything the page loads is this server's: no CDN, no web font (it runs offline)
    assert all(url.startswith((web_server.endpoint, "ws://127.0.0.1", "data:")) for url in requests)
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    red, green, blue = (int(n) for n in re.findall(r"\d+", background)[:3])
    assert red + green + blue < 200, background  # dark
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    editor, output = (page.locator(s).bounding_box() for s in ("#editor", "#output"))
    assert output["y"] >= editor["y"] + editor["height"]  # one column: output below
    context.close()
