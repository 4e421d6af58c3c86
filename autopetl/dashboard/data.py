"""The store's records as pandas frames for the dashboard, and the Pareto fronts of those frames.

Nothing here imports Streamlit, so every function is unit-tested on its own. Accuracies stay
fractions in [0, 1] as the store keeps them; the figures show percent.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from autopetl.backbones import describe
from autopetl.objectives import MEASURES, OBJECTIVES
from autopetl.store import StoreError, open_store, queries, resolve_url, safe_url
from autopetl.store.queries import hypervolume
from autopetl.tasks.scale import fraction_label
from autopetl.trial import shown_config, shown_value

if TYPE_CHECKING:
    from autopetl.store import EpochRecord, SearchRecord, Store

# The split autopetl evaluate writes test accuracies under (autopetl.evaluation.TEST_SPLIT).
TEST_SPLIT = "test"
FINISHED = ("completed", "pruned", "failed")
# The method of a trial that failed before it was given a configuration (its worker died first).
NO_METHOD = "(no config)"
# Accuracy columns the Pareto view can plot: the search's objective, or the evaluated test mean.
ACCURACY_COLUMNS = {"val": "val_acc", "test": "test_mean"}
TRIAL_COLUMNS = [
    "id",
    "search",
    "task",
    "trial_key",
    "number",
    "method",
    "status",
    "val_acc",
    "tunable_params",
    "tunable_params_without_head",
    "wall_time_s",
    "images_per_s",
    "peak_memory_mb",
    *MEASURES,
    "epochs_done",
    "best_epoch",
    "test_mean",
    "test_std",
    "test_seeds",
    "config",
    "created_at",
    "finished_at",
    "error",
]


@dataclass(frozen=True)
class OpenedStore:
    """The outcome of opening the dashboard's database without changing it.

    ``store`` is set when there is something to show; otherwise ``problem`` says why not
    (``missing``: no such SQLite file; ``empty``: no autopetl tables or no searches yet;
    ``outdated``: an older schema; ``error``: the URL or the server), and ``message`` says it in
    words, with the password hidden.
    """

    url: str  # safe to show: password masked
    store: Store | None
    problem: str | None = None
    message: str = ""


def open_for_reading(url: str | None) -> OpenedStore:
    """Open ``url`` (None: ``AUTOPETL_DB``, then the default file) for reading, never creating it.

    A dashboard is a reader: it must not create a SQLite file where a user mistyped a path, nor
    migrate a database that a running search is writing, so this uses ``upgrade=False`` and
    checks the file first.
    """
    try:
        resolved = resolve_url(url)
    except StoreError as exc:
        return OpenedStore(safe_url(url or ""), None, "error", str(exc))
    shown = safe_url(resolved)
    if resolved.get_backend_name() == "sqlite":
        path = Path(resolved.database or "")
        if not path.is_file():
            return OpenedStore(shown, None, "missing", f"there is no database file at {path}")
    try:
        store = open_store(resolved.render_as_string(hide_password=False), upgrade=False)
        state = store.schema_state()
    except StoreError as exc:
        return OpenedStore(shown, None, "error", str(exc))
    if state.current is None:
        store.close()
        return OpenedStore(shown, None, "empty", "the database has no autopetl tables yet")
    if not state.up_to_date:
        store.close()
        return OpenedStore(
            shown,
            None,
            "outdated",
            f"the database's schema is at revision {state.current}, older than this autopetl's "
            f"{state.head}; run `autopetl db upgrade --db '{shown}'` (no search may be running)",
        )
    if not store.list_searches():
        store.close()
        return OpenedStore(shown, None, "empty", "the database has no searches yet")
    return OpenedStore(shown, store)


def unit_of(search: SearchRecord) -> str:
    """What a search's accuracies compare within: its backbone (weights, input size), and the
    fraction of the training set it trained on when it was not the task's own split."""
    fraction = search.options.get("train_fraction")
    scale = "" if fraction is None else f" · {fraction_label(float(fraction))} of the training set"
    return describe(search.backbone) + scale


def backbone_units(searches: list[SearchRecord]) -> list[str]:
    """The backbones (weights, input size; data scale) of ``searches``, the one to show first first.

    A front is drawn within one of these only: accuracies of a random-init smoke model at 32 px
    and of a pretrained ViT at 224 px say nothing about each other, nor do those of one method
    trained on 1% and on 10% of a training set. First is the unit of the latest search (one-off
    train runs count only where there is no search).
    """
    ordered = sorted(searches, key=lambda s: (s.kind == "search", s.created_at), reverse=True)
    return list(dict.fromkeys(unit_of(s) for s in ordered))


def _test_results(store: Store, search: str) -> dict[str, tuple[float, float, int]]:
    """Trial key -> (mean, sample std, seeds) of its test accuracies, as autopetl evaluate's."""
    accs: dict[str, list[float]] = {}
    for ev in store.evaluations(search):
        if ev.split == TEST_SPLIT and ev.test_acc is not None and math.isfinite(ev.test_acc):
            accs.setdefault(ev.trial_key, []).append(float(ev.test_acc))
    return {
        key: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))
        for key, v in accs.items()
    }


def trials_frame(store: Store, searches: list[SearchRecord]) -> pd.DataFrame:
    """One row per trial of ``searches``: identity, method, status, objectives, costs, test mean.

    ``id`` is ``search/trial_key`` (unique across searches); ``config`` is the trial's dict.
    """
    rows: list[dict[str, Any]] = []
    for search in searches:
        tests = _test_results(store, search.name)
        for t in store.trials(search.name):
            mean, std, seeds = tests.get(t.trial_key, (math.nan, math.nan, 0))
            rows.append(
                {
                    "id": f"{search.name}/{t.trial_key}",
                    "search": search.name,
                    "task": search.task,
                    "trial_key": t.trial_key,
                    "number": t.number,
                    "method": t.method or str(t.config.get("method", NO_METHOD)),
                    "status": t.status,
                    "val_acc": _float(t.val_acc),
                    "tunable_params": _float(t.tunable_params),
                    "tunable_params_without_head": _float(t.tunable_params_without_head),
                    "wall_time_s": _float(t.wall_time_s),
                    "images_per_s": _float(t.images_per_s),
                    "peak_memory_mb": _float(t.peak_memory_mb),
                    **{m: _float(t.measures.get(m)) for m in MEASURES},
                    "epochs_done": t.epochs_done,
                    "best_epoch": t.best_epoch,
                    "test_mean": mean,
                    "test_std": std,
                    "test_seeds": seeds,
                    "config": dict(t.config),
                    "created_at": pd.Timestamp(t.created_at),
                    "finished_at": pd.Timestamp(t.finished_at) if t.finished_at else pd.NaT,
                    "error": t.error,
                }
            )
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def _float(value: float | int | None) -> float:
    return math.nan if value is None else float(value)


def plotted(
    frame: pd.DataFrame, accuracy: str = "val", costs: Sequence[str] = ("tunable_params",)
) -> pd.DataFrame:
    """The rows the Pareto view plots: completed trials with a finite accuracy and costs.

    Stopped-early (pruned) trials are left out: their accuracy is half-trained, the same rule the
    store's own front follows. With ``accuracy="test"``, only evaluated trials remain.
    """
    column = ACCURACY_COLUMNS[accuracy]
    keep = (frame["status"] == "completed") & frame[column].map(_finite)
    for cost in costs:
        keep &= frame[cost].map(_finite)
    return frame[keep]


def measured_costs(frame: pd.DataFrame) -> list[str]:
    """The cost objectives some plotted trial has a value of: tunable_params, then measures."""
    return ["tunable_params"] + [m for m in MEASURES if m in frame and frame[m].map(_finite).any()]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def front(
    frame: pd.DataFrame, accuracy: str = "val", costs: Sequence[str] = ("tunable_params",)
) -> pd.DataFrame:
    """The non-dominated rows of :func:`plotted` (accuracy max, each cost min), cheapest first.

    With two costs (parameters and inference GFLOPs) this is the three-way front.
    """
    rows = plotted(frame, accuracy, costs)
    column = ACCURACY_COLUMNS[accuracy]
    # The store's own front function, so the chart's front is the store's (same order too).
    chosen = [OBJECTIVES["val_acc"], *(OBJECTIVES[c] for c in costs)]
    values = [tuple(float(v) for v in r) for r in rows[[column, *costs]].itertuples(index=False)]
    return rows.loc[queries.front(list(rows.index), values, chosen)]


def epochs_frame(epochs: list[EpochRecord]) -> pd.DataFrame:
    """A trial's learning curve: epoch, val_acc, train_loss, lr, seconds."""
    return pd.DataFrame(
        [
            {
                "epoch": e.epoch,
                "val_acc": _float(e.val_acc),
                "train_loss": _float(e.train_loss),
                "lr": _float(e.lr),
                "seconds": _float(e.seconds),
            }
            for e in epochs
        ],
        columns=["epoch", "val_acc", "train_loss", "lr", "seconds"],
    )


def progress_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Finished trials of one search in finishing order, with the best and hypervolume so far.

    ``best_so_far`` is the best validation accuracy among completed trials up to each row;
    ``hypervolume_so_far`` is the hypervolume of those trials with one fixed reference for the
    whole search (accuracy 0, 1.1 x its largest completed parameter count), so the curve can only
    rise and its steps compare with each other.
    """
    done = frame[frame["status"].isin(FINISHED) & frame["finished_at"].notna()]
    done = done.sort_values(["finished_at", "number"], kind="stable").reset_index(drop=True)
    ok = plotted(done)
    reference = (0.0, 1.1 * float(ok["tunable_params"].max())) if len(ok) else None
    points: list[tuple[float, float]] = []
    best, hvs = [], []
    current = math.nan
    for i, row in done.iterrows():
        if i in ok.index:
            acc = float(row["val_acc"])
            points.append((acc, float(row["tunable_params"])))
            current = acc if math.isnan(current) else max(current, acc)
        best.append(current)
        hvs.append(hypervolume(points, reference) if points else 0.0)
    out = done.assign(best_so_far=best, hypervolume_so_far=hvs)
    start = frame["created_at"].min()
    out["elapsed_min"] = (out["finished_at"] - start).dt.total_seconds() / 60.0
    return out


def table_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The trial table as shown and downloaded: ``config`` as a JSON string, costs as numbers."""
    out = frame.drop(columns=["id"]).copy()
    out["config"] = out["config"].map(lambda c: json.dumps(c, sort_keys=True, default=str))
    return out


def cost_table(row: pd.Series) -> pd.DataFrame:
    """A trial's accuracy and costs as the trial panel shows them: rounded, with units, and
    without the costs that were not measured (a trial that failed at once has none)."""
    values: dict[str, str] = {}

    def put(name: str, value: Any, fmt: Callable[[float], str]) -> None:
        number = _number(value)
        if number is not None:
            values[name] = fmt(number)

    put("val acc", row["val_acc"], lambda v: f"{100 * v:.1f} %")
    if row["test_seeds"]:
        seeds = int(row["test_seeds"])
        values["test acc"] = (
            f"{100 * row['test_mean']:.1f} ± {100 * row['test_std']:.1f} % "
            f"({seeds} seed{'s' if seeds != 1 else ''})"
        )
    put("tunable params", row["tunable_params"], lambda v: f"{v:,.0f}")
    put("without head", row["tunable_params_without_head"], lambda v: f"{v:,.0f}")
    put("epochs", row["epochs_done"], lambda v: f"{v:.0f}")
    put("wall time", row["wall_time_s"], _duration)
    put("images/s", row["images_per_s"], lambda v: f"{v:,.0f}")
    # The trial's own peak (reset when it starts; on a CPU the worker's resident set then).
    put("peak memory (this trial)", row["peak_memory_mb"], lambda v: f"{v:,.0f} MB")
    for m in MEASURES:
        put(OBJECTIVES[m].label, row[m], OBJECTIVES[m].show)
    return pd.DataFrame({"value": list(values.values())}, index=list(values))


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, NaN, or not a number)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def config_lines(config: dict[str, Any]) -> list[str]:
    """``key = value`` lines of a trial's config, method first, as ``autopetl trials`` shows it
    (:func:`autopetl.trial.shown_config`)."""
    method = [f"method = {config['method']}"] if "method" in config else []
    return method + [f"{k} = {shown_value(v)}" for k, v in shown_config(config).items()]


# -- table layout ---------------------------------------------------------------------------------
# Streamlit 1.67's st.dataframe (a canvas grid) draws text in Source Sans at 14 px, 8 px in from
# each side of a cell, and wraps it onto more lines only in rows taller than 4rem (64 px).
# Character widths in px as Chromium draws that font, by class: each class counts as its widest
# member, so an estimate is never less than the drawn width (tests/test_dashboard_browser.py
# measures them); a character of no class counts as a wide one.
_CHAR_PX_CLASSES = {
    3.7: " |ij',.:;·lI",
    4.9: "f!()[]{}-tr/\\",
    6.7: '*s?z"cJxvyY',
    7.1: "–LFke0123456789#$+<=>^~±×_ag",
    7.9: "XSVZETA`ohuCnbdpqµ",
    9.3: "PRKB&DGUNHOQ",
    11.7: "wMW—%m",
}
CHAR_PX = {ch: px for px, chars in _CHAR_PX_CLASSES.items() for ch in chars}
OTHER_CHAR_PX = 14.0
GRID_CELL_PADDING_PX = 16  # 8 px on each side
GRID_LINE_PX = 20  # one wrapped line of 14 px text
GRID_WRAP_MIN_ROW_PX = 65  # the grid wraps text only in rows taller than 64 px


def text_px(text: str) -> float:
    """An upper bound of the width of ``text`` in the table font, in px."""
    return sum(CHAR_PX.get(ch, OTHER_CHAR_PX) for ch in text)


def wrapped_lines(text: str, width_px: float) -> int:
    """The lines ``text`` takes wrapped into ``width_px``: at spaces, as the grid wraps, and a
    word wider than a line broken between characters (the grid breaks it too)."""
    lines, used = 1, 0.0
    space = CHAR_PX[" "]
    for word in text.split():
        wide = text_px(word)
        if used and used + space + wide <= width_px:
            used += space + wide
            continue
        if used:
            lines, used = lines + 1, 0.0
        for ch in word:
            px = CHAR_PX.get(ch, OTHER_CHAR_PX)
            if used and used + px > width_px:
                lines, used = lines + 1, 0.0
            used += px
    return lines


@dataclass(frozen=True)
class WrappedColumn:
    """A table column whose texts wrap: its width and the row height that fits every text."""

    width: int
    row_height: int
    lines: int


def wrapped_column(texts: Sequence[str], max_px: int) -> WrappedColumn | None:
    """How to show ``texts`` whole in a column at most ``max_px`` wide (padding included): None
    where each fits on one line (the grid sizes the column to them), otherwise that width and
    rows tall enough for the most lines any text wraps onto."""
    room = max_px - GRID_CELL_PADDING_PX
    if all(text_px(t) <= room for t in texts):
        return None
    lines = max(wrapped_lines(t, room) for t in texts)
    height = max(GRID_WRAP_MIN_ROW_PX, GRID_LINE_PX * lines + 10)  # 5 px above and below
    return WrappedColumn(width=max_px, row_height=height, lines=lines)
