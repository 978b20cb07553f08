"""Load a page in headless Chromium over the DevTools protocol: console errors, chart data, a screenshot.

Used by the report test and to make the README's screenshot (`python -m tests.reliability.browser PAGE PNG`).
Needs Debian's `chromium` (.ci/run installs it) and aiohttp (a dependency of ray[default]).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHARTS_JS = """(() => {
// How far (px) a chart's drawing reaches past the inside of its card (0: it fits); a card that scrolls sideways
// counts as overflowing too.
const overflow = g => {
  const card = g.closest('section') || g.parentElement, cs = getComputedStyle(card), box = card.getBoundingClientRect();
  const inner = box.right - parseFloat(cs.paddingRight) - parseFloat(cs.borderRightWidth);
  const right = Math.max(g.getBoundingClientRect().right,
                         ...[...g.querySelectorAll('.main-svg')].map(s => s.getBoundingClientRect().right));
  return Math.max(0, Math.round(right - inner), card.scrollWidth - card.clientWidth);
};
return JSON.stringify({
  charts: [...document.querySelectorAll('.js-plotly-plot')].map(g => ({
    id: g.id,
    traces: (g.data || []).length,
    points: (g.calcdata || []).reduce((a, cd) => a + cd.filter(p => p && (p.y !== undefined || p.s !== undefined)
                                                                  && !Number.isNaN(p.y)).length, 0),
    drawn: g.querySelectorAll('.main-svg').length,
    overflow: overflow(g)})),
  sections: document.querySelectorAll('section.chart').length,
  missing: document.querySelectorAll('section.chart.missing').length,
  title: document.title});
})()"""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def inspect_page(url: str, screenshot: Path | None = None, width: int = 1500, timeout: float = 60) -> dict[str, Any]:
    """{"errors": [...], "charts": [...], "sections": n, "missing": n, "title": ...} for the page at `url`."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("no chromium on PATH")
    with tempfile.TemporaryDirectory(prefix="mixopt-chromium-") as profile:
        proc = subprocess.Popen([exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                 "--disable-extensions", "--remote-debugging-port=0", "--remote-allow-origins=*",
                                 f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.time() + timeout
            while not port_file.is_file() or not port_file.read_text().strip():
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("chromium did not open its DevTools port")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            return asyncio.run(asyncio.wait_for(_inspect(port, url, screenshot, width), timeout))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _inspect(port: int, url: str, screenshot: Path | None, width: int) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json()
        page = next(t for t in targets if t.get("type") == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            errors: list[str] = []
            loaded = asyncio.Event()
            pending: dict[int, asyncio.Future] = {}
            counter = iter(range(1, 1_000_000))

            async def reader() -> None:
                async for msg in ws:
                    data = json.loads(msg.data)
                    if "id" in data and data["id"] in pending:
                        pending.pop(data["id"]).set_result(data)
                    method = data.get("method")
                    params = data.get("params", {})
                    if method == "Runtime.exceptionThrown":
                        d = params["exceptionDetails"]
                        errors.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
                    elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                        errors.append("console.error: " + " ".join(str(a.get("value", a.get("description")))
                                                                   for a in params.get("args", [])))
                    elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                        errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
                    elif method == "Page.loadEventFired":
                        loaded.set()

            async def call(method: str, **params: Any) -> dict[str, Any]:
                i = next(counter)
                fut = asyncio.get_running_loop().create_future()
                pending[i] = fut
                await ws.send_json({"id": i, "method": method, "params": params})
                out = await fut
                if "error" in out:
                    raise RuntimeError(f"{method}: {out['error']}")
                return out.get("result", {})

            task = asyncio.create_task(reader())
            for domain in ("Runtime", "Log", "Page"):
                await call(f"{domain}.enable")
            await call("Emulation.setDeviceMetricsOverride", width=width, height=1000, deviceScaleFactor=1,
                       mobile=False)
            await call("Page.navigate", url=url)
            await loaded.wait()
            await asyncio.sleep(1.5)  # plotly draws after load; let it settle
            res = await call("Runtime.evaluate", expression=CHARTS_JS, returnByValue=True)
            out = json.loads(res["result"]["value"])
            if screenshot is not None:
                dims = await call("Runtime.evaluate", expression="document.documentElement.scrollHeight",
                                  returnByValue=True)
                height = int(dims["result"]["value"])
                await call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                           mobile=False)
                await asyncio.sleep(1.0)
                shot = await call("Page.captureScreenshot", format="png")
                Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
            task.cancel()
            out["errors"] = errors
            return out


if __name__ == "__main__":
    page, png = Path(sys.argv[1]).resolve(), (Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    print(json.dumps(inspect_page(page.as_uri(), png), indent=1))
