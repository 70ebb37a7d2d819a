"""The v2 API's docs page (/v2/docs) in Debian's chromium: Redoc renders the
document and its search works under the page's Content-Security-Policy, and
nothing is fetched from anywhere but this server."""

from __future__ import annotations

import os
from urllib.parse import urlsplit


def test_the_docs_page_renders_under_its_policy(chromium, web_server, artifacts):
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    fetched: list[str] = []  # what reached the network (a blocked request never does)
    page.on(
        "console",
        lambda m: m.type == "error" and errors.append(f"{m.text} ({m.location.get('url')})"),
    )
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfinished", lambda r: fetched.append(r.url))
    try:
        page.goto(web_server.endpoint + "/v2/docs")
        page.wait_for_selector('h2:has-text("Create a virtual folder")', timeout=20_000)
        page.fill("[role=search] input", "folder")  # the index lives in a blob: worker
        page.wait_for_selector("[role=search] li:has-text('Write files into a folder')")
        page.screenshot(path=os.path.join(artifacts, "api-docs.png"))
    finally:
        page.close()
    here = urlsplit(web_server.endpoint).netloc
    assert {urlsplit(url).netloc for url in fetched if not url.startswith("blob:")} == {here}
    # Redoc's one remote resource, the logo beside "API docs by Redocly", is refused
    # (and Redoc hides it); nothing else goes wrong but the browser's favicon.ico
    assert [e for e in errors if "cdn.redoc.ly" not in e and "favicon.ico" not in e] == []
