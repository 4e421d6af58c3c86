"""`autopetl dashboard` for real: a Streamlit server on a free port, screenshotted by Chromium.

Needs Debian's ``chromium``; without it the test skips, unless ``AUTOPETL_REQUIRE_BROWSER=1``
(set by .ci/services/chromium.sh, which installs it), where it fails.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from autopetl.backbones import describe
from autopetl.dashboard import data
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


# Names as long as real ones (a search's default name ends in its start time), and a real
# backbone, whose label in the report ("linear · vit_small_patch14_dinov2 (vit_small_patch14_
# dinov2.safetensors, 28 px)") is wider than a column of the page has room for.
SEARCH = "dsprites_loc-default-20261206-101500-browser"
TRAIN_RUN = "train-dsprites_loc-lora-20261206-101500-oneoff"
BACKBONE = {
    "name": "vit_small_patch14_dinov2",
    "weights": "/weights/vit_small_patch14_dinov2.safetensors",
    "img_size": 28,
}


def _fill(url: str) -> None:
    """A finished, evaluated search of three methods, with costs and learning curves, and a
    one-off train run, written directly."""
    with open_store(url) as store:
        store.upsert_search(
            SEARCH, "vtab/dsprites_loc", "default", {"methods": {}}, BACKBONE, budget=6
        )
        points = [("linear", 0.31, 1_000), ("vpt", 0.52, 4_000), ("vpt", 0.45, 9_000)]
        points += [("lora", 0.61, 20_000), ("lora", 0.58, 60_000), ("adapter", 0.66, 150_000)]
        for i, (method, acc, params) in enumerate(points):
            key = str(i)
            store.upsert_trial(
                SEARCH, key, number=i, method=method, config={"method": method, "lr": 1e-3}
            )
            for epoch in (1, 2):
                store.upsert_epoch(
                    SEARCH, key, epoch=epoch, train_loss=2.0 / epoch, val_acc=acc * epoch / 2
                )
            store.upsert_trial(
                SEARCH,
                key,
                status="completed",
                val_acc=acc,
                tunable_params=params,
                tunable_params_without_head=params - 500,
                cost={"wall_time_s": 3.0, "images_per_s": 100.0, "peak_memory_mb": 50.0},
                epochs_done=2,
            )
            for seed in (0, 1):
                store.upsert_evaluation(
                    SEARCH, key, seed=seed, split="test", test_acc=acc - 0.01 * seed
                )
        store.set_search_status(SEARCH, "completed")
        store.upsert_search(
            TRAIN_RUN, "vtab/dsprites_loc", "default", {}, BACKBONE, budget=1,
            options={"command": "train"},
        )  # fmt: skip
        store.upsert_trial(TRAIN_RUN, "0", number=0, method="lora", config={"method": "lora"},
                           status="completed", val_acc=0.5, tunable_params=30_000)  # fmt: skip
        store.set_search_status(TRAIN_RUN, "completed")


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`autopetl dashboard` on a filled database, shared by this module's tests; yields its
    URL, stops it afterwards."""
    tmp_path = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{tmp_path / 'browser.db'}"
    _fill(url)
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    # Started before the per-test isolation applies: its own cache and home, no stray data.
    env = {k: v for k, v in os.environ.items() if k not in ("AUTOPETL_DATA", "AUTOPETL_DB")}
    env |= {"AUTOPETL_CACHE": str(tmp_path / "cache"), "AUTOPETL_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "autopetl", "dashboard", "--db", url, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
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


# In the page: which texts are cut. A text is cut where its element is narrower or lower than
# what it holds (scrollWidth > clientWidth: Streamlit cuts it with overflow hidden, an ellipsis or
# a fixed height).
_CUT_JS = """
const shown = (e) => e.getClientRects().length > 0;
const cut = (e) => e.scrollWidth > e.clientWidth || e.scrollHeight > e.clientHeight;
"""
# Sidebar chips (the name is its span[title], in a span[data-tag]) and selectbox values.
NAMES_JS = (
    "(() => {"
    + _CUT_JS
    + """
const sidebar = document.querySelector('[data-testid="stSidebar"]');
const chips = [...sidebar.querySelectorAll('[data-tag]')].filter(shown).map((tag) => {
  const text = tag.querySelector('span[title]');
  return [text.textContent, cut(tag) || cut(text)];
});
const boxes = [...document.querySelectorAll('[data-testid="stSelectbox"] input')]
  .filter(shown).map((box) => [box.value, cut(box)]);
return {sidebar: sidebar.getBoundingClientRect().width, chips, boxes};
})()"""
)
# The One-off train runs dropdown, opened: its options (a name in each row's div).
OPTIONS_JS = (
    "(async () => {"
    + _CUT_JS
    + """
const box = [...document.querySelectorAll('[data-testid="stMultiSelect"]')]
  .find((m) => m.innerText.includes('One-off train runs'));
box.querySelector('button[aria-haspopup]').click();
await new Promise((done) => setTimeout(done, 1000));
const options = [...document.querySelectorAll(
  '[data-testid="stMultiSelectDropdown"] [role="option"] > div')].filter(shown);
return options.map((o) => [o.textContent, cut(o)]);
})()"""
)


def _report_js(texts: dict[str, float]) -> str:
    """The report grid's scroll width against its visible width, its headers, and each text of
    ``texts`` whose width as drawn in the grid's font exceeds its estimate there."""
    return (
        "(async () => {"
        + _CUT_JS
        + f"const estimates = {json.dumps(texts)};"
        + """
await document.fonts.ready;
const grid = [...document.querySelectorAll('[data-testid="stDataFrame"]')].filter(shown)[0];
const scroller = grid.querySelector('.dvn-scroller');
const canvas = document.createElement('canvas').getContext('2d');
canvas.font = '400 14px ' + getComputedStyle(document.body).fontFamily;
const over = Object.entries(estimates)
  .map(([text, px]) => [text, canvas.measureText(text).width, px])
  .filter(([, drawn, px]) => drawn > px);
return {
  scroll: [scroller.scrollWidth, scroller.clientWidth],
  headers: [...grid.querySelectorAll('th')].map((th) => th.textContent),
  font: canvas.font, over,
};
})()"""
    )


def test_long_names_and_the_report_columns_are_shown_whole(dashboard: str, tmp_path: Path) -> None:
    chromium = _need_chromium()
    # Every character the text estimates know, ten in a row (a width to 0.1 px), and the
    # report's own labels: none is wider as drawn than estimated.
    texts = {ch * 10: data.text_px(ch * 10) for ch in data.CHAR_PX}
    labels = [f"{m} · {describe(BACKBONE)}" for m in ("linear", "adapter")]
    texts |= {label: data.text_px(label) for label in labels}
    shot = capture(
        dashboard,
        chromium=chromium,
        min_plots=2,
        timeout=120,
        probes=[
            (None, NAMES_JS),
            (None, OPTIONS_JS),
            ("Search progress", NAMES_JS),
            ("Report", _report_js(texts)),
        ],
    )
    (tmp_path / "dashboard.png").write_bytes(shot.png)
    pareto, options, progress, report = shot.probed
    assert pareto["sidebar"] >= 360
    # The Searches chip and the Methods chips, each name whole (wrapped, not cut).
    chips = dict(pareto["chips"])
    assert SEARCH in chips and "lora" in chips, pareto
    assert not [name for name, cut in pareto["chips"] if cut], pareto
    # The train run's name in the dropdown, whole.
    assert options == [[TRAIN_RUN, False]], options
    # A search name in a selectbox: the trial picked (Pareto tab), the search (progress tab).
    boxes = pareto["boxes"] + progress["boxes"]
    named = [(value, cut) for value, cut in boxes if SEARCH in value]
    assert len(named) == 2 and not any(cut for _, cut in named), boxes
    # The report: every column within the page (the grid needs no sideways scroll), headers
    # included, and the estimates its label column is laid out by are upper bounds as drawn.
    scroll_width, visible_width = report["scroll"]
    assert scroll_width <= visible_width, report
    assert report["headers"][-2:] == ["mean (1 task)", "mean of group means"], report
    assert not report["over"], report
