"""The browser page (`tinyship web`) driven by Playwright in Debian's Chromium, headless: what the web checks and the
edge benchmark share. Chromium starts with the flags this offline machine needs (no background networking)."""

from __future__ import annotations

import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

from benchmarks.lab.fresh import ROOT
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.web import server

NODE_MODULES = ROOT / "web" / "node_modules"
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    found = shutil.which("chromium")
    if not found:
        raise TinyshipError("no chromium on this machine: `make test-edge` installs it (apt chromium)")
    return found


@contextmanager
def page_for(bundle: Path, threads: int = 1, timeout_s: float = 120):
    """A loaded page running the bundle's web folder: page.evaluate('window.tinyship.run(input)') gives
    transformers.js's result for one input (a text; for question answering [question, context]),
    window.tinyship.time(input, runs) the milliseconds of each run."""
    from playwright.sync_api import sync_playwright

    httpd = server(bundle, NODE_MODULES, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    errors = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
            page = browser.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.set_default_timeout(timeout_s * 1000)
            page.goto(f"http://127.0.0.1:{httpd.server_address[1]}/?threads={threads}")
            try:
                page.evaluate("window.tinyship.ready")
            except Exception as e:
                raise TinyshipError(f"the page did not load the model: {e}; page errors: {errors}") from None
            yield page
            browser.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
