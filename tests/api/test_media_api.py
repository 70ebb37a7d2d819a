"""Rich output of python3 kernels over the real API (spec §6.6): matplotlib figures as
SVG or PNG media items, display() of DataFrames and _repr_*_ objects, their order
among stdout and stderr, in query mode, batch mode and over the execute stream;
the scientific stack importable; a user's packages from a mounted folder; and
media frames forged by user code."""

from __future__ import annotations

import base64
import json
import time
import xml.etree.ElementTree as ET

import pytest
from helpers.multipart import multipart

TIMEOUT = 60


@pytest.fixture(scope="module")
def api(api_server):
    """A key of its own, so the folder quota of the server's key is not shared."""
    return api_server.client(**api_server.new_key(concurrency=10))


@pytest.fixture
def kid(api):
    kernel_id = api.create().json()["kernelId"]
    yield kernel_id
    api.request("DELETE", f"/v2/kernel/{kernel_id}")


def console_of(api, kid: str, code: str) -> list[list]:
    """The console of a query run to its end, items of adjacent responses merged."""
    results = api.run(kid, code)
    assert results[-1]["status"] == "finished", results
    items: list[list] = []
    for result in results:
        for kind, data in result["console"]:
            if items and kind in ("stdout", "stderr") and items[-1][0] == kind:
                items[-1][1] += data
            else:
                items.append([kind, data])
    return items


def batch(api, kid: str, options: dict) -> list[dict]:
    """A batch run to its end: every response."""
    results = [api.execute(kid, mode="batch", code="", options=options).json()["result"]]
    while results[-1]["status"] not in ("finished", "waiting-input"):
        results.append(api.execute(kid, mode="batch", code="").json()["result"])
    assert results[-1]["status"] == "finished", results
    return results


def kinds(items: list[list]) -> list[str]:
    return [item[0] if item[0] != "media" else "media:" + item[1][0] for item in items]


def assert_svg(item: list) -> ET.Element:
    assert item[0] == "media" and item[1][0] == "image/svg+xml", item[:1]
    root = ET.fromstring(item[1][1])
    assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag
    return root


def assert_png(item: list) -> bytes:
    assert item[0] == "media" and item[1][0] == "image/png", item[:1]
    head = "data:image/png;base64,"
    assert item[1][1].startswith(head)
    data = base64.b64decode(item[1][1][len(head) :], validate=True)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return data


PLOT = """
import matplotlib.pyplot as plt
print("before")
plt.plot([1, 2, 3], [4, 1, 9], label="a line")
plt.title("hello")
plt.show()
print("after")
"""


def test_a_plot_arrives_as_svg_in_order_with_the_output(api, kid):
    items = console_of(api, kid, PLOT)
    assert kinds(items) == ["stdout", "media:image/svg+xml", "stdout"], kinds(items)
    assert items[0][1] == "before\n" and items[2][1] == "after\n"
    root = assert_svg(items[1])
    ids = {e.get("id") for e in root.iter()}
    assert {"figure_1", "axes_1", "line2d_1"} <= ids, ids
    # shown figures are closed: the next query shows nothing again
    assert console_of(api, kid, "print(len(plt.get_fignums()))") == [["stdout", "0\n"]]


def test_a_figure_left_open_is_shown_at_the_end_and_png_on_request(api, kid):
    items = console_of(api, kid, "import matplotlib.pyplot as plt\nplt.bar([1, 2], [3, 4])\n")
    assert kinds(items) == ["media:image/svg+xml"]
    assert_svg(items[0])
    items = console_of(api, kid, "plt.plot([1, 2]); plt.show(format='png'); print('done')")
    assert kinds(items) == ["media:image/png", "stdout"]
    assert_png(items[0])
    items = console_of(api, kid, "fig = plt.figure(); fig.gca().plot([3, 1]); display(fig)")
    assert kinds(items) == ["media:image/svg+xml"]


def test_a_huge_svg_goes_as_png(api, kid):
    code = (
        "import matplotlib.pyplot as plt, random\n"
        "random.seed(1)\n"
        "plt.scatter([random.random() for _ in range(30000)],"
        " [random.random() for _ in range(30000)], s=1)\n"
        "plt.show()\n"
    )
    items = console_of(api, kid, code)
    assert kinds(items) == ["media:image/png"]
    assert_png(items[0])


def test_display_of_a_dataframe_and_repr_objects(api, kid):
    code = """
import pandas as pd
df = pd.DataFrame({"name": ["ada", "alan"], "year": [1815, 1912]})
print("table:")
display(df)

class Svg:
    def _repr_svg_(self):
        return '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>'

class Png:
    def _repr_png_(self):
        import base64
        return base64.b64decode(
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")

class Broken:
    def _repr_html_(self):
        raise RuntimeError("no")
    def __repr__(self):
        return "<broken>"

display(Svg(), Png(), Broken(), 42)
"""
    items = console_of(api, kid, code)
    assert kinds(items) == ["stdout", "html", "media:image/svg+xml", "media:image/png", "stdout"]
    assert "<table" in items[1][1] and "alan" in items[1][1] and "1912" in items[1][1]
    assert_svg(items[2])
    assert_png(items[3])
    assert items[4][1] == "<broken>\n42\n"


def test_the_scientific_stack_imports_in_a_kernel(api, kid):
    code = """
import numpy, scipy, pandas, matplotlib, sympy
from scipy import linalg
import subprocess
print(numpy.linalg.det(numpy.eye(3)), round(float(linalg.norm([3, 4])), 1))
print(sympy.factor(sympy.Symbol("x") ** 2 - 1))
print(pandas.Series([1, 2, 3]).sum(), matplotlib.get_backend())
print(subprocess.run(["pylint", "--version"], capture_output=True, text=True).returncode)
"""
    items = console_of(api, kid, code)
    assert items == [["stdout", "1.0 5.0\n(x - 1)*(x + 1)\n6 module://sandbox_matplotlib\n0\n"]], (
        items
    )


def test_nothing_is_written_to_the_work_directory(api, kid):
    console_of(api, kid, PLOT)
    items = console_of(api, kid, "import os; print(sorted(os.listdir('.')))")
    assert items == [["stdout", "[]\n"]], items


def test_a_plot_in_batch_mode(api, kid):
    source = PLOT.replace("plt.show()", "plt.show()\nplt.plot([1]); plt.show(format='png')")
    body, ctype = multipart([("plot.py", source.encode())])
    r = api.request("POST", f"/v2/kernel/{kid}/upload", raw=body, content_type=ctype)
    assert r.status_code == 204, r.text
    results = batch(api, kid, {"build": "", "exec": "python3 plot.py"})
    assert results[-1]["exitCode"] == 0, results
    items = [item for result in results for item in result["console"]]
    assert kinds(items) == ["stdout", "media:image/svg+xml", "media:image/png", "stdout"], items
    assert_svg(items[1])
    assert_png(items[2])


def test_a_plot_over_the_execute_stream(api, kid):
    with api.stream(f"/v2/stream/kernel/{kid}/execute") as ws:
        ws.send(json.dumps({"mode": "query", "code": PLOT}))
        items, deadline = [], time.monotonic() + TIMEOUT
        while True:
            message = json.loads(ws.recv(timeout=deadline - time.monotonic()))
            items += message["console"]
            if message["status"] == "finished":
                break
    merged = [i for n, i in enumerate(items) if i[0] != "stdout" or items[n - 1 : n] != [i]]
    assert kinds(merged) == ["stdout", "media:image/svg+xml", "stdout"], items
    assert_svg(merged[1])


def test_user_packages_from_a_folder_mounted_as_site_packages(api):
    name = f"mypkgs{time.monotonic_ns()}"
    assert api.request("POST", "/v2/folders", {"name": name}).status_code == 201
    try:
        files = [("greeting.py", b"def hello():\n    return 'hello from mypkgs'\n")]
        body, ctype = multipart(files)
        r = api.request("POST", f"/v2/folders/{name}/upload", raw=body, content_type=ctype)
        assert r.status_code in (200, 201, 204), r.text
        mount = f"{name}:.local/lib/python3.11/site-packages"
        r = api.create(mounts=[mount])
        assert r.status_code == 201, r.text
        kid = r.json()["kernelId"]
        try:
            code = "import greeting, sys; print(greeting.hello())"
            assert console_of(api, kid, code) == [["stdout", "hello from mypkgs\n"]]
            options = {"build": "", "exec": 'python3 -c "import greeting; print(greeting.hello())"'}
            items = [i for r in batch(api, kid, options) for i in r["console"]]
            assert items == [["stdout", "hello from mypkgs\n"]], items
        finally:
            api.request("DELETE", f"/v2/kernel/{kid}")
    finally:
        api.request("DELETE", f"/v2/folders/{name}")


# -- forged items ---------------------------------------------------------------------


def forge(payload: str) -> str:
    """Code that writes one frame to the runner's fd 3, as user code can."""
    return (
        "import json, os, struct\n"
        f"msg, blob = {payload}\n"
        "body = json.dumps(msg).encode()\n"
        "os.write(3, struct.pack('>II', len(body), len(blob)) + body + blob)\n"
        "import time; time.sleep(0.5); print('alive')\n"
    )


@pytest.mark.parametrize(
    "payload, ended",
    [
        # well-formed: shown, as display() would show it
        ("{'ev': 'html'}, b'<b>hi</b>'", False),
        # a type no client expects, a binary type that is not a data: URI, no type
        ("{'ev': 'media', 'type': 'application/x-evil'}, b'x'", True),
        ("{'ev': 'media', 'type': 'image/png'}, b'<script>alert(1)</script>'", True),
        ("{'ev': 'media'}, b'x'", True),
        ("{'ev': 'media', 'type': ['image/svg+xml']}, b'x'", True),
        # over the item size
        ("{'ev': 'html'}, b'x' * (4 * 1024 * 1024 + 1)", True),
    ],
)
def test_forged_media_frames(api, kid, payload, ended):
    results = api.run(kid, forge(payload))
    text = json.dumps(results)
    if not ended:
        assert ["html", "<b>hi</b>"] in results[0]["console"] or "<b>hi</b>" in text
        assert "alive" in text
        return
    assert "the kernel was ended" in text and "protocol" in text, text[-500:]
    r = api.execute(kid, mode="query", code="print(1)")
    assert r.status_code == 404, r.text


FORGED_RECORD = """
import os, sys
fd = int(os.environ["SANDBOX_MEDIA_FD"])
os.write(fd, b"12 text/html\\n<b>hi</b>...")  # a type a program may not send this way
print("acked" if os.read(fd, 1) else "closed")
print("still running")
"""


def test_a_forged_record_on_the_batch_media_channel_closes_it(api, kid):
    body, ctype = multipart([("forge.py", FORGED_RECORD.encode())])
    r = api.request("POST", f"/v2/kernel/{kid}/upload", raw=body, content_type=ctype)
    assert r.status_code == 204, r.text
    results = batch(api, kid, {"build": "", "exec": "python3 forge.py"})
    items = [item for result in results for item in result["console"]]
    text = "".join(data for kind, data in items if kind in ("stdout", "stderr"))
    assert "[media channel closed: a bad record header" in text, items
    assert "closed\nstill running" in text and "acked" not in text, items
    assert all(kind in ("stdout", "stderr") for kind, _ in items), items
    assert console_of(api, kid, "print('fine')") == [["stdout", "fine\n"]]
