"""The dashboard in a real browser: Debian's Chromium, headless, driven by playwright.

The app is served by `eesim dashboard` on 127.0.0.1; every page is visited, a widget is changed
on the what-if page, and each page must show a rendered plotly chart and no exception box.
Screenshots go to a temporary folder (or $EESIM_SCREENSHOTS, which is how docs/img/ is made).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
PAGES = {"what-if": "", "validation": "validation", "traces": "traces", "capacity": "capacity",
         "report": "report"}

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} missing: apt-get install -y chromium (.ci/run does)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "eesim.cli", "dashboard", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"dashboard did not start: {proc.stdout.read().decode()[-2000:]}")
    yield url
    proc.terminate()  # one signal to `eesim dashboard` stops the server: no child survives it
    proc.wait(timeout=20)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)


def _settle(page) -> None:
    """Wait until the script has finished running and a plotly chart has been drawn."""
    page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=120_000)
    page.wait_for_function("!document.querySelector(\"[data-testid='stStatusWidget']\")", timeout=120_000)


def test_every_page_renders_in_chromium(server, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("EESIM_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        for name, path in PAGES.items():
            page.goto(f"{server}/{path}")
            _settle(page)
            assert page.locator("[data-testid='stException']").count() == 0, name
            assert page.locator("[data-testid='stPlotlyChart']").count() >= 1, name
            if name == "what-if":
                layers = page.locator("[data-testid='stMetric']", has_text="Layers / token")
                before = layers.inner_text()
                slider = page.locator("[data-testid='stSidebar'] [data-testid='stSlider'] "
                                      "input[type='range']").first
                slider.focus()
                for _ in range(30):  # threshold 0.9 -> 0.6: more tokens leave early
                    page.keyboard.press("ArrowLeft")
                page.wait_for_function(
                    "b => ![...document.querySelectorAll(\"[data-testid='stMetric']\")]"
                    ".some(m => m.innerText === b)", arg=before, timeout=120_000)
                _settle(page)
                assert layers.inner_text() != before
                assert page.locator("[data-testid='stException']").count() == 0
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
        browser.close()
    assert {f"{n}.png" for n in PAGES} <= {f.name for f in shots.glob("*.png")}
