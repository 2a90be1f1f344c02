"""The bundle's index.html in a real headless Chromium (Debian's chromium + chromedriver,
driven by Selenium; nothing is downloaded): the fingerprint is visible, every download
link resolves to a bundle file and delivers its exact bytes, the page loads nothing
else, fits a phone screen, and works from file:// too.  Screenshots go to tests/artifacts/.

One browser session for the whole module (browser start is the slow part).  The page is
served by http.server on 127.0.0.1 only, and Chromium's resolver maps every other host
name to nothing, so no traffic leaves loopback."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import tempfile
import threading
from pathlib import Path

import pytest

from conftest import require

pytestmark = pytest.mark.interop


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requested: list = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        type(self).requested.append(self.path)
        super().do_GET()


@pytest.fixture(scope="module")
def site(shared_ca, tmp_path_factory):
    out = tmp_path_factory.mktemp("browser") / "bundle"
    summary = json.loads(shared_ca.ok("bundle", "--out", out, "--json").stdout)
    handler = functools.partial(_Quiet, directory=str(out))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield out, summary, f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def browser():
    chromium, chromedriver = require("/usr/bin/chromium"), require("/usr/bin/chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    old = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "1"  # Selenium Manager must never fetch a driver or browser
    profile = tempfile.mkdtemp(prefix="mailca-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--no-proxy-server", "--window-size=1100,1400",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                 f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    driver.set_script_timeout(20)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        import shutil

        shutil.rmtree(profile, ignore_errors=True)
        if old is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = old


FETCH_JS = """
const [href, done] = arguments;
fetch(href, {cache: 'no-store'}).then(async r => {
  const buf = new Uint8Array(await r.arrayBuffer());
  let s = '';
  for (let i = 0; i < buf.length; i += 0x8000) s += String.fromCharCode.apply(null, buf.subarray(i, i + 0x8000));
  done({status: r.status, b64: btoa(s)});
}).catch(e => done({status: -1, error: String(e)}));
"""


def test_page_in_chromium(site, browser, artifacts):
    from selenium.webdriver.common.by import By

    out, summary, base = site
    _Quiet.requested.clear()
    browser.get(base + "index.html")
    assert browser.title == f"Install {summary['root']['common_name']}"
    text = browser.find_element(By.TAG_NAME, "body").text
    assert summary["root"]["sha256"] in text
    assert summary["root"]["sha1"] in text
    assert "example.org and every name under it" in text
    assert "example.net and every name under it" in text
    for heading in ("Windows", "macOS", "iPhone and iPad", "Android", "Thunderbird (and Firefox)", "Debian, Ubuntu and Fedora"):
        assert heading in text, heading
    # self-contained: the page fetched nothing besides itself
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources == []
    assert _Quiet.requested == ["/index.html"]

    # every download link resolves to a bundle file and delivers exactly its bytes
    links = browser.execute_script(
        "return Array.from(document.querySelectorAll('a[href]'))"
        ".filter(a => !a.getAttribute('href').startsWith('#'))"
        ".map(a => [a.getAttribute('href'), a.href, a.getAttribute('download')])")
    bundle_files = {Path(v["path"]).name for v in summary["files"].values()}
    assert {h for h, _, _ in links} == bundle_files - {"index.html"}
    for href, absolute, download in links:
        assert absolute == base + href and download == href
        got = browser.execute_async_script(FETCH_JS, absolute)
        assert got["status"] == 200, (href, got)
        assert base64.b64decode(got["b64"]) == (out / href).read_bytes(), href

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1100, min(height + 150, 9000))
    shot = artifacts / "bundle-index.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000

    # a phone-sized viewport: the long fingerprint wraps, nothing scrolls sideways
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    try:
        browser.get(base + "index.html")
        sw, iw = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert sw <= iw, f"page is {sw}px wide in a {iw}px viewport"
        mobile = artifacts / "bundle-index-mobile.png"
        assert browser.save_screenshot(str(mobile))
        assert mobile.stat().st_size > 10_000
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    # offline: the same page straight from disk
    browser.get((out / "index.html").as_uri())
    assert summary["root"]["sha256"] in browser.find_element(By.TAG_NAME, "body").text
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
