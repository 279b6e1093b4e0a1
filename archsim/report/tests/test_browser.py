"""The report of a small run in a real browser: headless Chromium driven over the DevTools protocol (real mouse
events), checking that the page loads with no console error and no network request, that hovering a heatmap cell
shows that pair's SAT, that the model finder lists the true nearest model, and that a table sorts."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request

import pandas as pd
import pytest
import torch
from torch import nn

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
websocket = pytest.importorskip("websocket", reason="websocket-client is not installed (pip install -e '.[test]')")
pytestmark = pytest.mark.needs("chromium")  # skips where missing, fails under CI=true (conftest)


class Browser:
    """One headless Chromium page, driven over the Chrome DevTools protocol."""

    def __init__(self, profile) -> None:
        self.process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "--window-size=1400,1000",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("Chromium did not open its DevTools port")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60)
        self.events: list[dict] = []
        self.calls = 0
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")

    def send(self, method: str, **params) -> dict:
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.calls:
                assert "error" not in message, message
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            assert time.monotonic() < deadline, "the page did not load"
            self.events.append(json.loads(self.socket.recv()))

    def wait_for(self, expression: str, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"never true: {expression}")

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and requests for anything not in the file itself."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(str(params["exceptionDetails"].get("exception", {}).get("description")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append(str(params.get("args")))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
            elif method == "Network.requestWillBeSent":
                url = params["request"]["url"]
                if not url.startswith(("file:", "data:", "about:")):
                    found.append(f"network request {url}")
        return found

    def close(self) -> None:
        self.socket.close()
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def small_run_report(tmp_path_factory):
    """A real run of four small networks on a seeded quadrant set, analysed into its report."""
    from archsim.cache import CacheStore
    from archsim.measures.tests.test_measures import quadrant_set
    from archsim.report.analyze import analyze_run
    from archsim.runs import run_sat

    folder = tmp_path_factory.mktemp("browser")
    masks = quadrant_set(folder / "set.npz", n_images=40, n_classes=4, side=8, seed=5)
    specs = []
    for seed in range(4):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        with torch.no_grad():  # quadrant readers, each with noise of its own strength: they differ, SAT too
            net[1].weight.copy_(0.1 * torch.from_numpy(masks.reshape(4, -1)) + 0.03 * (seed + 1) * torch.randn(4, 192))
            net[1].bias.zero_()
        torch.save(net, folder / f"reader-{seed}.pt")
        specs.append(f"file:{folder / f'reader-{seed}.pt'},input_size=3:8:8,mean=0:0:0,std=1:1:1,name=reader-{seed}")
    run_sat(
        specs,
        data=f"npz:{folder / 'set.npz'}",
        eps=0.12,
        steps=5,
        n_boot=50,
        device="cpu",
        batch_size=8,
        cache=CacheStore(folder / "cache"),
        out=folder / "run",
    )
    analyze_run(folder / "run")
    return folder / "run"


def test_the_report_explored_in_a_real_browser(small_run_report, tmp_path):
    run = small_run_report
    sat = pd.read_csv(run / "sat.csv", index_col=0)
    names = list(sat.index)
    browser = Browser(tmp_path / "profile")
    try:
        browser.open((run / "report.html").as_uri())
        browser.wait_for("!!(window.Plotly && document.querySelector('#sat-heatmap .nsewdrag'))")

        # Hover the cell of a pair with the real mouse: the label names both models and their SAT.
        a, b = names[0], names[2]
        x, y = browser.evaluate(f"""(() => {{
            const gd = document.getElementById('sat-heatmap');
            gd.scrollIntoView();
            const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
            const row = gd.data[0].y.indexOf({json.dumps(a)}), col = gd.data[0].x.indexOf({json.dumps(b)});
            return [box.left + gd._fullLayout.xaxis.l2p(col), box.top + gd._fullLayout.yaxis.l2p(row)];
        }})()""")
        for dx in (0, 1):  # a move onto the cell, then within it: Plotly answers mouse movement
            browser.send("Input.dispatchMouseEvent", type="mouseMoved", x=x + dx, y=y)
        label = browser.wait_for("(document.querySelector('#sat-heatmap .hovertext') || {}).textContent")
        assert a in label and b in label and f"SAT {sat.loc[a, b]:.3f}" in label, label
        pair = pd.read_csv(run / "pairs.csv").set_index(["source", "target"])
        row = pair.loc[(a, b)] if (a, b) in pair.index else None
        fooled = row.fool_rate_source_to_target if row is not None else pair.loc[(b, a)].fool_rate_target_to_source
        assert f"attacks made on {a} fool {b} on {fooled:.1f} % of X_AB" in label, label
        both = (row if row is not None else pair.loc[(b, a)]).n_both_correct
        assert f"|X_AB| (both right when clean): {both:.0f} images" in label

        # The model finder lists the model's true nearest neighbour from sat.csv first.
        for name in names:
            browser.evaluate(
                f"(() => {{ const s = document.getElementById('model-finder'); s.value = {json.dumps(name)};"
                "s.dispatchEvent(new Event('change')); })()"
            )
            nearest = browser.wait_for("(document.querySelector('#finder-nearest tbody td') || {}).textContent")
            others = sat.loc[name].drop(name)
            assert nearest in set(others[others == others.max()].index), (name, nearest, others.to_dict())

        # A click on a column header sorts the models table by it, a second click reverses it.
        column = browser.evaluate("""(() => {
            const section = document.getElementById('models');
            const th = Array.from(section.querySelectorAll('table.sortable thead th'))
                .find(h => h.textContent === 'clean_accuracy');
            th.click();
            return Array.from(section.querySelectorAll('table.sortable tbody tr'))
                .map(r => r.cells[Array.from(th.parentNode.children).indexOf(th)].textContent);
        })()""")
        values = [float(v) for v in column]
        assert values == sorted(values) and len(values) == 4
        first_column = """Array.from(document.querySelectorAll('#models table.sortable tbody tr'))
            .map(r => r.cells[0].textContent)"""
        browser.evaluate("document.querySelector('#models table.sortable thead th').click()")
        assert browser.evaluate(first_column) == sorted(names)
        browser.evaluate("document.querySelector('#models table.sortable thead th').click()")
        assert browser.evaluate(first_column) == sorted(names, reverse=True)
        # The filter box keeps the rows that hold its text.
        browser.evaluate("""(() => { const box = document.querySelector('#models input.table-filter');
            box.value = 'reader-2'; box.dispatchEvent(new Event('input')); })()""")
        shown = browser.evaluate("""Array.from(document.querySelectorAll('#models table.sortable tbody tr'))
            .filter(r => r.style.display !== 'none').map(r => r.cells[0].textContent)""")
        assert shown == ["reader-2"]
        assert browser.problems() == []
    finally:
        browser.close()
