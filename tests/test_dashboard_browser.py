"""`autopetl dashboard` for real: a Streamlit server on a free port, screenshotted by Chromium.

Needs Debian's ``chromium``; without it the test skips, unless ``AUTOPETL_REQUIRE_BROWSER=1``
(set by .ci/services/chromium.sh, which installs it), where it fails.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from autopetl.store import open_store

# A docs and test tool, not part of the library: app/screenshot.py, beside the app it shoots.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))
from screenshot import capture, find_chromium

pytestmark = pytest.mark.slow


def _need_chromium() -> str:
    found = find_chromium()
    if found is None:
        reason = "chromium is not installed (apt-get install chromium, or source .ci/services/chromium.sh)"
        if os.environ.get("AUTOPETL_REQUIRE_BROWSER") == "1":
            pytest.fail(f"AUTOPETL_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fill(url: str) -> None:
    """A finished search of three methods, with costs and learning curves, written directly."""
    with open_store(url) as store:
        store.upsert_search(
            "browser", "vtab/dsprites_loc", "default", {"methods": {}}, {"name": "tiny"}, budget=6
        )
        points = [("linear", 0.31, 1_000), ("vpt", 0.52, 4_000), ("vpt", 0.45, 9_000)]
        points += [("lora", 0.61, 20_000), ("lora", 0.58, 60_000), ("adapter", 0.66, 150_000)]
        for i, (method, acc, params) in enumerate(points):
            key = str(i)
            store.upsert_trial(
                "browser", key, number=i, method=method, config={"method": method, "lr": 1e-3}
            )
            for epoch in (1, 2):
                store.upsert_epoch(
                    "browser", key, epoch=epoch, train_loss=2.0 / epoch, val_acc=acc * epoch / 2
                )
            store.upsert_trial(
                "browser",
                key,
                status="completed",
                val_acc=acc,
                tunable_params=params,
                tunable_params_without_head=params - 500,
                cost={"wall_time_s": 3.0, "images_per_s": 100.0, "peak_memory_mb": 50.0},
                epochs_done=2,
            )
        store.set_search_status("browser", "completed")


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[str]:
    """`autopetl dashboard` on a filled database; yields its URL, stops it afterwards."""
    url = f"sqlite:///{tmp_path / 'browser.db'}"
    _fill(url)
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "autopetl", "dashboard", "--db", url, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"the dashboard did not come up: {(tmp_path / 'server.log').read_text()}"
                )
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()  # the command exec'd into Streamlit: this stops the server itself
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_dashboard_renders_its_charts_in_chromium(dashboard: str, tmp_path: Path) -> None:
    from PIL import Image

    chromium = _need_chromium()
    shot = capture(dashboard, chromium=chromium, min_plots=2, timeout=120)
    (tmp_path / "dashboard.png").write_bytes(shot.png)
    # The Pareto chart and the learning curve are drawn, with the front in the legend.
    assert shot.plots >= 2
    assert "js-plotly-plot" in shot.dom and "main-svg" in shot.dom
    assert "Pareto front" in shot.dom and "vtab/dsprites_loc" in shot.dom
    assert "Traceback" not in shot.dom
    image = Image.open(io.BytesIO(shot.png)).convert("RGB")
    assert image.size == (1400, 1000)
    # Not a blank or skeleton page: many colours, and the methods' markers among them.
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 200, f"only {len(colours)} colours: a blank page? see {tmp_path}"
    assert any(max(c) - min(c) > 100 for _, c in colours), "no saturated colour: no markers"


def _chromium_processes() -> list[str]:
    """Command lines of running Chromium processes started with one of capture()'s profiles."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended while we looked
            continue
        if "autopetl-chromium-" in text:
            found.append(text)
    return found


def test_screenshot_command_writes_a_png_and_leaves_no_browser(
    dashboard: str, tmp_path: Path
) -> None:
    _need_chromium()
    before = _chromium_processes()
    out = tmp_path / "shot.png"
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve().parents[1] / "app" / "screenshot.py"),
            dashboard,
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "chart(s) drawn" in done.stdout
    assert out.read_bytes().startswith(b"\x89PNG")
    # Chromium and all its helpers are gone once the command returns.
    assert _chromium_processes() == before
