"""The rendered report in a real browser: headless Chromium driven over the DevTools protocol.

No network: Chromium runs with background networking off and the page is a local file, so any CDN
reference left in the HTML would show up as a console error. Needs ``/usr/bin/chromium``
(``apt-get install -y chromium``) and ``websocket-client`` (pip); skipped otherwise.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from mrcbench import stats
from mrcbench.report.engine import render
from mrcbench.report.engine.headings import quarto_heading_id

from support import REPO_ROOT
from support.synthetic_results import write_synthetic_results

CHROMIUM = Path("/usr/bin/chromium")
REPO = REPO_ROOT

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="/usr/bin/chromium is missing (apt-get install chromium)"
    ),
]


class Chromium:
    """A headless Chromium with one page, driven through the DevTools protocol (CDP) websocket."""

    FLAGS: ClassVar[list[str]] = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--remote-debugging-port=0",
    ]

    def __init__(self, width: int = 1300, height: int = 1000):
        import websocket

        self.profile = tempfile.mkdtemp(prefix="mrcbench-chromium-")
        self.process = subprocess.Popen(
            [
                str(CHROMIUM),
                *self.FLAGS,
                f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port = self._devtools_port(Path(self.profile) / "DevToolsActivePort")
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self.socket = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True
        )
        self.next_id = 0
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def _devtools_port(self, path: Path, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.is_file() and path.read_text().strip():
                return int(path.read_text().splitlines()[0])
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self.process.returncode}")
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        message_id = self.next_id
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for_event(self, method: str, timeout: float = 60.0) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        self.socket.settimeout(timeout)
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv())
            self.events.append(message)
            if message.get("method") == method:
                return message
        raise TimeoutError(method)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def settle(self, seconds: float) -> None:
        """Let scripts run while collecting console events."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.evaluate("1")
            time.sleep(0.1)

    def errors(self) -> list[str]:
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params.get("exceptionDetails", {}))[:300])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(
                    " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                )
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append(f"{params['entry'].get('text')} {params['entry'].get('url', '')}")
        return found

    def screenshot(self) -> np.ndarray:
        from PIL import Image

        data = self.call("Page.captureScreenshot", format="png")["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"), dtype=np.float64)

    def close(self) -> None:
        try:
            self.socket.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def rendered_report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    results = write_synthetic_results(root)
    stats.command.run_stats(results, results / "stats")
    out = root / "report.html"
    render(REPO / "reports" / "report.qmd", out, {"results_dir": results}, engine="fallback")
    return out


@pytest.fixture()
def browser():
    chromium = Chromium()
    yield chromium
    chromium.close()


def test_report_loads_without_console_errors_and_shows_figures(rendered_report, browser):
    browser.call("Page.navigate", url=rendered_report.as_uri())
    browser.wait_for_event("Page.loadEventFired")
    browser.settle(1.5)
    assert browser.errors() == []

    assert browser.evaluate("typeof window.Plotly") == "object"
    figures = browser.evaluate("""Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => ({
        id: d.id, w: d.offsetWidth, h: d.offsetHeight, svg: d.querySelectorAll('svg.main-svg').length,
        traces: (d.data || []).length}))""")
    assert len(figures) >= 8
    assert all(f["w"] > 100 and f["h"] > 100 and f["svg"] > 0 and f["traces"] > 0 for f in figures), figures
    heatmaps = browser.evaluate("""Array.from(document.querySelectorAll('.js-plotly-plot'))
        .filter(d => (d.data || []).some(t => t.type === 'heatmap')).length""")
    assert heatmaps >= 5
    tables = browser.evaluate("""Array.from(document.querySelectorAll('table.mrc-table'))
        .filter(t => t.offsetWidth > 0 && t.offsetHeight > 0 && t.rows.length > 1).length""")
    assert tables >= 5
    headings = browser.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent.trim())")
    for section in ("Abstract", "Zone × layer masking", "Case studies", "Appendix: reproducibility"):
        assert any(section in heading for heading in headings), (section, headings)

    pixels = browser.screenshot()
    assert pixels.std() > 10.0  # not a blank page
    browser.evaluate("document.querySelector('.js-plotly-plot').scrollIntoView()")
    browser.settle(0.3)
    assert browser.screenshot().std() > 10.0


def test_case_study_selectors_update_the_map(rendered_report, browser):
    browser.call("Page.navigate", url=rendered_report.as_uri())
    browser.wait_for_event("Page.loadEventFired")
    browser.settle(1.0)
    languages = browser.evaluate("Array.from(document.querySelectorAll('.mrc-case-plot')).map(d => d.id)")
    assert len(languages) >= 2  # one English and one Chinese case
    before = browser.evaluate("JSON.stringify(document.getElementById('case-study-0').data[0].z)")
    browser.evaluate("""(() => { const s = document.getElementById('case-study-0-layer');
        s.value = String(s.options.length - 1); s.dispatchEvent(new Event('change'));
        const h = document.getElementById('case-study-0-head'); h.value = '1';
        h.dispatchEvent(new Event('change')); })()""")
    browser.settle(0.5)
    after = browser.evaluate("JSON.stringify(document.getElementById('case-study-0').data[0].z)")
    assert before != after
    assert browser.errors() == []


#: Section ids left out of the wording and numbering checks below (none: every section is checked).
PENDING_SECTIONS: tuple[str, ...] = ()


def test_report_is_a_quarto_page_with_numbered_figures_and_working_links(rendered_report, browser):
    """Title block, side TOC whose every link lands on its section, Quarto's heading ids, every figure
    drawn and numbered, every table numbered, and no "nan", "None" or "(s)" in the text."""
    browser.call("Page.navigate", url=rendered_report.as_uri())
    browser.wait_for_event("Page.loadEventFired")
    browser.settle(1.5)
    assert browser.errors() == []

    header = browser.evaluate("""(() => { const h = document.querySelector('header#title-block-header');
        return h && {title: h.querySelector('h1.title')?.textContent, subtitle: h.querySelector('.subtitle')?.textContent,
                     date: h.querySelector('.date')?.textContent, top: h.getBoundingClientRect().top}; })()""")
    assert header["title"].startswith("Which attention zones") and header["top"] < 100
    assert header["subtitle"].startswith("A reproduction and extension of Cui et al.")
    assert re.fullmatch(r"[A-Z][a-z]+ \d{1,2}, \d{4}", header["date"])
    layout = browser.evaluate("""(() => { const t = document.querySelector('nav#TOC').getBoundingClientRect();
        const m = document.querySelector('main').getBoundingClientRect();
        return {toc_left: t.left, toc_width: t.width, toc_height: t.height, main_right: m.right}; })()""")
    assert layout["toc_width"] > 100 and layout["toc_height"] > 100
    assert layout["toc_left"] >= layout["main_right"]  # a side column, not an inline box

    # Heading ids are Quarto's, and every TOC link lands on its section.
    sections = browser.evaluate("""Array.from(document.querySelectorAll('main section.level2'))
        .map(s => [s.id, s.querySelector('h2').textContent.trim()])""")
    assert len(sections) >= 13
    assert all(identifier == quarto_heading_id(title) for identifier, title in sections), sections
    links = browser.evaluate("Array.from(document.querySelectorAll('nav#TOC a')).map(a => a.getAttribute('href'))")
    assert links == [f"#{identifier}" for identifier, _ in sections]
    for index, href in enumerate(links):
        landed = browser.evaluate(f"""(() => {{ const a = document.querySelectorAll('nav#TOC a')[{index}];
            a.click(); const s = document.getElementById(a.getAttribute('href').slice(1));
            return {{hash: location.hash, top: s.getBoundingClientRect().top,
                     bottom: window.scrollY + window.innerHeight >= document.documentElement.scrollHeight - 2}}; }})()""")
        assert landed["hash"] == href
        assert abs(landed["top"]) <= 24 or landed["bottom"], (href, landed)

    # Every figure is drawn; figures and tables outside the pending sections carry a number, and the
    # numbers run 1, 2, 3, ... in page order.
    figures = browser.evaluate("""Array.from(document.querySelectorAll('.plotly-graph-div')).map(d => ({
        id: d.id, w: d.offsetWidth, h: d.offsetHeight, svg: d.querySelectorAll('svg.main-svg').length,
        traces: (d.data || []).length}))""")
    assert len(figures) >= 8
    assert all(f["w"] > 100 and f["h"] > 100 and f["svg"] > 0 and f["traces"] > 0 for f in figures), figures
    pending = ", ".join(f"#{section}" for section in PENDING_SECTIONS)
    outside = f"e => !e.closest('{pending}')" if pending else "e => true"
    unnumbered = browser.evaluate(f"""(() => {{
        const outside = {outside};
        const figures = Array.from(document.querySelectorAll('figure.mrc-figure')).filter(outside)
            .filter(f => !/^Figure \\d+\\. /.test(f.querySelector('figcaption')?.textContent || ''));
        const tables = Array.from(document.querySelectorAll('table.mrc-table')).filter(outside)
            .filter(t => !/^Table \\d+\\./.test(t.closest('.mrc-table-block')?.querySelector('.mrc-number')?.textContent || ''));
        return figures.map(f => f.id || 'figure').concat(tables.map(t => 'table')); }})()""")
    assert unnumbered == []
    numbers = browser.evaluate("Array.from(document.querySelectorAll('.mrc-number')).map(n => n.textContent)")
    for kind in ("Figure", "Table"):
        mine = [int(n.split()[1].rstrip(".")) for n in numbers if n.startswith(kind)]
        assert mine == list(range(1, len(mine) + 1)), (kind, mine)
    assert sum(n.startswith("Figure") for n in numbers) >= 8 and sum(n.startswith("Table") for n in numbers) >= 8

    # The text a reader sees (collapsed tables included, scripts and styles not).
    text = browser.evaluate(f"""(() => {{ const c = document.body.cloneNode(true);
        c.querySelectorAll('script, style{", " + pending if pending else ""}').forEach(e => e.remove());
        return c.textContent; }})()""")
    assert "Appendix: reproducibility" in text
    for pattern in (r"\bnan\b", r"\bNaN\b", r"\bNone\b", r"\(s\)"):
        found = [text[max(0, m.start() - 60):m.end() + 20] for m in re.finditer(pattern, text)]
        assert found == [], (pattern, found[:3])

    browser.evaluate("window.scrollTo(0, 0)")
    browser.settle(0.3)
    assert browser.screenshot().std() > 10.0  # the title block is drawn
