"""Screenshot a running dashboard with headless Chromium, once its plotly charts have rendered.

``chromium --headless --screenshot`` alone captures Streamlit's loading skeleton: the page's load
event fires before the app's websocket has delivered anything, and ``--virtual-time-budget`` does
not wait for websocket traffic. So this drives Chromium over the DevTools protocol instead: open
the page, poll the DOM until a ``.js-plotly-plot`` has drawn its ``main-svg``, let it settle,
then capture. Used by tests/test_dashboard_browser.py and to make docs/dashboard.png::

    python app/screenshot.py http://127.0.0.1:8501 docs/dashboard.png
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # root in a container: the sandbox needs user namespaces it may not have
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Nothing but the page: no update checks, sync, field trials or component downloads.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    # No crash reporter: crashpad's handler is a helper that may outlive the browser.
    "--disable-breakpad",
    "--disable-crash-reporter",
)
# The count of drawn plotly charts: each draws its axes into an <svg class="main-svg">.
PLOTS_JS = "document.querySelectorAll('.js-plotly-plot .main-svg').length"
# Streamlit shows this widget while a script run is in progress.
RUNNING_JS = "document.querySelectorAll('[data-testid=\"stStatusWidget\"]').length"


@dataclass(frozen=True)
class Capture:
    """What the page looked like: PNG bytes, the rendered DOM, how many charts were drawn, and
    the values of the ``probes`` passed to :func:`capture`, in order."""

    png: bytes
    dom: str
    plots: int
    probed: tuple[Any, ...] = ()


def find_chromium() -> str | None:
    """The Chromium binary (Debian's ``chromium``, or ``chromium-browser``), if installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class _DevTools:
    """A minimal synchronous DevTools-protocol client over one page target's websocket."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:  # skip events until our answer arrives
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise's once it settles)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:  # the expression threw: say what, not None
            details = result["exceptionDetails"]
            error = details.get("exception", {}).get("description") or details.get("text")
            raise RuntimeError(f"JavaScript error: {error}")
        return result.get("result", {}).get("value")


def _devtools_port(profile: Path, proc: subprocess.Popen[bytes], deadline: float) -> int:
    port_file = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with status {proc.returncode} before starting")
        if port_file.is_file():
            lines = port_file.read_text().split()
            if lines:
                return int(lines[0])
        time.sleep(0.1)
    raise TimeoutError("chromium did not open its DevTools port")


def capture(
    url: str,
    *,
    chromium: str | None = None,
    width: int = 1400,
    height: int = 1000,
    min_plots: int = 1,
    timeout: float = 90.0,
    settle: float = 2.0,
    tab: str | None = None,
    probes: Sequence[tuple[str | None, str]] = (),
) -> Capture:
    """Open ``url``, wait for ``min_plots`` drawn plotly charts and an idle app, and capture.

    ``tab`` names a tab of the page ("Compare") to show before the capture; the first is shown
    otherwise. ``probes`` are ``(tab, JavaScript expression)`` pairs evaluated after the capture,
    in order, in the same page: each shows its tab first (None: the one shown) and lets it
    settle; their values are the capture's ``probed``.

    Raises:
        RuntimeError: Chromium is missing or failed.
        TimeoutError: The charts did not render within ``timeout`` seconds (the capture taken at
            that moment is in the message's ``capture`` attribute for debugging).
    """
    binary = chromium or find_chromium()
    if binary is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    deadline = time.monotonic() + timeout
    # Chromium's helper processes (renderers, crashpad) may still write to the profile for a
    # moment after they are told to stop; a leftover temporary profile must not fail a capture.
    with tempfile.TemporaryDirectory(
        prefix="autopetl-chromium-", ignore_cleanup_errors=True
    ) as tmp:
        profile = Path(tmp)
        proc = subprocess.Popen(
            [
                binary,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",  # any free port, written to DevToolsActivePort
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped with all its helpers
        )
        try:
            port = _devtools_port(profile, proc, deadline)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
                targets = json.load(r)
            page = next(t for t in targets if t.get("type") == "page")
            from websockets.sync.client import connect  # a dependency of streamlit

            with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
                tools = _DevTools(ws)
                tools.call(
                    "Emulation.setDeviceMetricsOverride",
                    width=width,
                    height=height,
                    deviceScaleFactor=1,
                    mobile=False,
                )
                tools.call("Page.navigate", url=url)
                plots = 0
                while time.monotonic() < deadline:
                    plots = int(tools.evaluate(PLOTS_JS) or 0)
                    if plots >= min_plots and not tools.evaluate(RUNNING_JS):
                        break
                    time.sleep(0.5)
                if tab is not None and not tools.evaluate(_click_tab_js(tab)):
                    raise RuntimeError(f"the page has no tab named {tab!r}")
                time.sleep(settle)  # plotly lays out text and legends after the first draw
                plots = int(tools.evaluate(PLOTS_JS) or 0)
                shot = tools.call("Page.captureScreenshot", format="png")
                dom = str(tools.evaluate("document.documentElement.outerHTML") or "")
                probed: list[Any] = []
                for probe_tab, expression in probes:
                    if probe_tab is not None:
                        if not tools.evaluate(_click_tab_js(probe_tab)):
                            raise RuntimeError(f"the page has no tab named {probe_tab!r}")
                        time.sleep(settle)
                    probed.append(tools.evaluate(expression))
        finally:
            _stop_group(proc)
    result = Capture(base64.b64decode(shot["data"]), dom, plots, tuple(probed))
    if plots < min_plots:
        error = TimeoutError(f"{plots} plotly chart(s) drawn after {timeout:.0f} s at {url}")
        error.capture = result  # type: ignore[attr-defined]
        raise error
    return result


def _click_tab_js(name: str) -> str:
    """JavaScript that clicks the Streamlit tab labelled ``name``; true if it found one."""
    return (
        "(() => { const tab = [...document.querySelectorAll('[role=\"tab\"]')]"
        f".find(b => b.innerText.trim() === {json.dumps(name)});"
        " if (tab) { tab.click(); } return Boolean(tab); })()"
    )


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop Chromium and every helper process it started (they share its process group)."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # the whole group is gone already
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader exited; give its helpers a moment to follow it out of the group.
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("output", type=Path)
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument(
        "--tab", help="the tab to show, by its label (e.g. Compare); the first if unset"
    )
    args = parser.parse_args(argv)
    try:
        urllib.request.urlopen(args.url, timeout=10).close()
    except (OSError, ValueError) as exc:
        print(
            f"screenshot: error: nothing answers at {args.url} ({exc}); start the dashboard "
            "first (`autopetl dashboard`) and pass the URL it prints",
            file=sys.stderr,
        )
        return 1
    try:
        shot = capture(args.url, width=args.width, height=args.height, tab=args.tab)
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"screenshot: error: {exc}", file=sys.stderr)
        return 1
    args.output.write_bytes(shot.png)
    print(f"{args.output}: {shot.plots} chart(s) drawn")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
