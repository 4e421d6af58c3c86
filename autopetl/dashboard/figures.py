"""Plotly figures of the dashboard: the Pareto front, a learning curve, a search's progress.

Every figure is built from the frames of :mod:`autopetl.dashboard.data` and holds plain lists
(not numpy arrays), so its JSON is readable by the tests as well as by the browser. Accuracy is
shown in percent, the unit the papers print.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from autopetl.dashboard.data import ACCURACY_COLUMNS, config_lines, front, plotted

# The papers' Table 1 order keeps a method's colour the same on every chart and in every session.
from autopetl.objectives import OBJECTIVES
from autopetl.report import method_rank

if TYPE_CHECKING:
    from autopetl.scaling import ScaleTable

FRONT_TRACE = "Pareto front"
# D3's colours, the prompt methods (the papers' subject) and the strongest baselines brightest.
METHOD_COLORS = {
    "full": "#8c564b",
    "linear": "#7f7f7f",
    "partial": "#bcbd22",
    "mlp": "#17becf",
    "sidetune": "#e377c2",
    "bias": "#9467bd",
    "adapter": "#ff7f0e",
    "lora": "#2ca02c",
    "vpt": "#1f77b4",
    "dvpt": "#d62728",
}
PALETTE = qualitative.Dark2
STATUS_COLORS = {"completed": "#2ca02c", "pruned": "#ff7f0e", "failed": "#d62728"}
PARAMS_AXIS = "tunable parameters (head included, log scale)"


@dataclass(frozen=True)
class PublishedPoint:
    """A paper's result on one task: accuracy as a fraction; parameters (head excluded) if known."""

    label: str
    acc: float
    params: float | None


def method_color(method: str) -> str:
    """A fixed colour per method; a method added later hashes into a second palette."""
    return METHOD_COLORS.get(method) or PALETTE[sum(map(ord, method)) % len(PALETTE)]


def _num(value: float, fmt: str, unit: str = "") -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:{fmt}}{unit}"


def _layout_title(text: str | None) -> dict | None:
    """A left-aligned title just above the plot area, clear of plotly's toolbar.

    Plotly draws its toolbar (zoom, pan, download) in the top right corner of the figure on
    hover; a title at the top of the figure ran under it. Anchored to the plot area's top
    edge instead, with a top margin that leaves the toolbar its own strip.
    """
    if not text:
        return None
    return {
        "text": text,
        "x": 0,
        "xref": "paper",
        "xanchor": "left",
        "y": 1,
        "yref": "paper",
        "yanchor": "bottom",
        "pad": {"b": 10},
        "font": {"size": 15},
    }


def _top_margin(title: str | None) -> int:
    return 72 if title else 34  # the toolbar's strip (about 30 px), plus the title's line


def hover_text(row: pd.Series) -> str:
    """The full story of a trial on hover: accuracy, parameters, cost and every config value."""
    lines = [
        f"<b>{row['method']}</b> · trial {row['trial_key']} of {row['search']}",
        f"val acc {_num(100 * row['val_acc'], '.2f', ' %')}",
    ]
    if row["test_seeds"]:
        lines.append(
            f"test acc {100 * row['test_mean']:.2f} ± {100 * row['test_std']:.2f} % "
            f"({row['test_seeds']} seed{'s' if row['test_seeds'] != 1 else ''})"
        )
    lines += [
        f"tunable params {_num(row['tunable_params'], ',.0f')} "
        f"({_num(row['tunable_params_without_head'], ',.0f')} without head)",
        f"wall {_num(row['wall_time_s'], '.1f', ' s')} · {_num(row['images_per_s'], '.0f')} img/s"
        f" · peak {_num(row['peak_memory_mb'], '.0f', ' MB')}",
        "<i>config</i>",
        *config_lines(row["config"]),
    ]
    return "<br>".join(lines)


def pareto_figure(
    frame: pd.DataFrame,
    *,
    accuracy: str = "val",
    published: Sequence[PublishedPoint] = (),
    title: str | None = None,
    height: int = 480,
    cost: str = "tunable_params",
    colour: str | None = None,
) -> go.Figure:
    """Accuracy against tunable parameters: one trace per method, then the front as a step line.

    Each point's ``ids`` and ``customdata`` are its ``search/trial_key``. The front trace, named
    :data:`FRONT_TRACE`, holds exactly the non-dominated trials of :func:`data.front`; ``hv``
    steps draw the boundary of the region they dominate. ``published`` points with a parameter
    count are grey crosses, named on hover.

    ``cost`` is the x axis (``tunable_params`` or a measured objective such as
    ``inference_gflops``). ``colour``, another cost, colours every point by its value instead of
    by method, and the front is then the three-way front (accuracy, ``cost``, ``colour``),
    drawn as open circles: projected onto two axes it is no step line.
    """
    if colour is not None:
        return _three_way_figure(frame, accuracy, cost, colour, title, height)
    column = ACCURACY_COLUMNS[accuracy]
    rows = plotted(frame, accuracy, (cost,))
    fig = go.Figure()
    for method in sorted(rows["method"].unique(), key=method_rank):
        sub = rows[rows["method"] == method]
        error = None
        if accuracy == "test":
            error = {"type": "data", "array": (100 * sub["test_std"]).tolist(), "visible": True}
        fig.add_trace(
            go.Scatter(
                x=sub[cost].tolist(),
                y=(100 * sub[column]).tolist(),
                mode="markers",
                name=method,
                ids=sub["id"].tolist(),
                customdata=sub["id"].tolist(),
                hovertext=[hover_text(r) for _, r in sub.iterrows()],
                hoverinfo="text",
                marker={"color": method_color(method), "size": 10, "opacity": 0.85},
                error_y=error,
            )
        )
    best = front(frame, accuracy, (cost,))
    fig.add_trace(
        go.Scatter(
            x=best[cost].tolist(),
            y=(100 * best[column]).tolist(),
            mode="lines+markers",
            line_shape="hv",
            name=FRONT_TRACE,
            ids=best["id"].tolist(),
            customdata=best["id"].tolist(),
            line={"color": "black", "width": 2},
            marker={"symbol": "circle-open", "size": 16, "color": "black"},
            hoverinfo="skip",
        )
    )
    if cost == "tunable_params":
        _add_published(fig, published)
    _front_layout(fig, accuracy, cost, title, height)
    fig.update_layout(legend={"title": "method"})
    return fig


def _front_layout(fig: go.Figure, accuracy: str, cost: str, title: str | None, height: int) -> None:
    """The axes, title and margins both views of the front share."""
    label = "validation accuracy (%)" if accuracy == "val" else "test accuracy (%), mean ± std"
    fig.update_layout(
        title=_layout_title(title),
        height=height,
        xaxis=_cost_axis(cost),
        yaxis={"title": label},
        margin={"l": 10, "r": 10, "t": _top_margin(title), "b": 10},
        hoverlabel={"align": "left"},
    )


def _cost_axis(cost: str) -> dict:
    if cost == "tunable_params":
        return {"type": "log", "title": PARAMS_AXIS}
    return {"type": "linear", "title": OBJECTIVES[cost].label}


def _three_way_figure(
    frame: pd.DataFrame, accuracy: str, cost: str, colour: str, title: str | None, height: int
) -> go.Figure:
    """Accuracy against ``cost``, every point coloured by ``colour``; the 3-way front circled."""
    column = ACCURACY_COLUMNS[accuracy]
    rows = plotted(frame, accuracy, (cost, colour))
    scale = OBJECTIVES[colour]
    shade = rows[colour].map(lambda v: math.log10(1 + v)) if scale.log_scale else rows[colour]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=rows[cost].tolist(),
            y=(100 * rows[column]).tolist(),
            mode="markers",
            name="trials",
            ids=rows["id"].tolist(),
            customdata=rows["id"].tolist(),
            hovertext=[hover_text(r) for _, r in rows.iterrows()],
            hoverinfo="text",
            marker={
                "color": shade.tolist(),
                "colorscale": "Viridis",
                "size": 10,
                "opacity": 0.9,
                "colorbar": {
                    "title": scale.label + (" (log10)" if scale.log_scale else ""),
                },
            },
        )
    )
    best = front(frame, accuracy, (cost, colour))
    fig.add_trace(
        go.Scatter(
            x=best[cost].tolist(),
            y=(100 * best[column]).tolist(),
            mode="markers",
            name=FRONT_TRACE,
            ids=best["id"].tolist(),
            customdata=best["id"].tolist(),
            marker={"symbol": "circle-open", "size": 16, "color": "black"},
            hoverinfo="skip",
        )
    )
    _front_layout(fig, accuracy, cost, title, height)
    return fig


def _add_published(fig: go.Figure, published: Iterable[PublishedPoint]) -> None:
    """The papers' points with a parameter count, as grey crosses named on hover.

    Not labelled on the chart: a task has 15-20 published rows within a few points of each other,
    and their labels (or the dotted lines once drawn for rows without a parameter count) covered
    the trials. The page lists every published row in a table under the chart.
    """
    points = sorted((p for p in published if p.params), key=lambda p: p.params or 0)
    if not points:
        return
    fig.add_trace(
        go.Scatter(
            x=[p.params for p in points],
            y=[100 * p.acc for p in points],
            mode="markers",
            name="published (hover)",
            hovertext=[
                f"<b>{p.label}</b><br>test acc {100 * p.acc:.1f} %<br>"
                f"{p.params:,.0f} tunable params (head excluded)"
                for p in points
            ],
            hoverinfo="text",
            marker={"symbol": "x", "size": 9, "color": "#777"},
        )
    )


def learning_curve_figure(epochs: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Validation accuracy (left axis) and training loss (right axis) per epoch."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Scatter(
            x=epochs["epoch"].tolist(),
            y=(100 * epochs["val_acc"]).tolist(),
            mode="lines+markers",
            name="val acc (%)",
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            x=epochs["epoch"].tolist(),
            y=epochs["train_loss"].tolist(),
            mode="lines+markers",
            name="train loss",
            line={"dash": "dash"},
        ),
        secondary_y=True,
    )
    fig.update_layout(
        title=_layout_title(title),
        height=360,
        margin={"l": 10, "r": 10, "t": _top_margin(title), "b": 10},
        legend={"orientation": "h", "x": 0, "y": -0.22},
    )
    fig.update_xaxes(title="epoch", dtick=1)
    fig.update_yaxes(title="validation accuracy (%)", secondary_y=False)
    fig.update_yaxes(title="training loss", secondary_y=True)
    return fig


def elapsed_axis(minutes: pd.Series) -> tuple[pd.Series, str]:
    """Elapsed minutes in the unit that reads best for their span: s, min or h.

    A smoke search lasts seconds and a real one hours; one fixed unit (or wall-clock timestamps,
    as before) gave ticks in fractions of a millisecond for the first and crowded labels for the
    second.
    """
    span = float(minutes.max()) if len(minutes) else 0.0
    if span < 2:
        return minutes * 60.0, "s"
    if span < 180:
        return minutes, "min"
    return minutes / 60.0, "h"


def progress_figure(progress: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Trials as they finished (by status), the best accuracy so far, and the hypervolume so far."""
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.65, 0.35],
        vertical_spacing=0.06,
    )
    elapsed, unit = elapsed_axis(progress["elapsed_min"])
    times = elapsed.tolist()
    for status, color in STATUS_COLORS.items():
        sub = progress[progress["status"] == status]
        if sub.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=elapsed[sub.index].tolist(),
                y=(100 * sub["val_acc"]).tolist(),
                mode="markers",
                name=status,
                marker={"color": color, "size": 8},
                customdata=sub["id"].tolist(),
                hovertext=[
                    f"{r['method']} · trial {r['trial_key']}<br>val acc "
                    f"{_num(100 * r['val_acc'], '.2f', ' %')}"
                    for _, r in sub.iterrows()
                ],
                hoverinfo="text",
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Scatter(
            x=times,
            y=(100 * progress["best_so_far"]).tolist(),
            mode="lines",
            line_shape="hv",
            name="best so far",
            line={"color": "black"},
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=times,
            y=progress["hypervolume_so_far"].tolist(),
            mode="lines",
            line_shape="hv",
            name="hypervolume so far",
            line={"color": "#1f77b4"},
        ),
        row=2,
        col=1,
    )
    fig.update_layout(
        title=_layout_title(title),
        height=520,
        margin={"l": 10, "r": 10, "t": _top_margin(title), "b": 10},
    )
    fig.update_yaxes(title="val accuracy (%)", row=1, col=1)
    fig.update_yaxes(title="hypervolume", row=2, col=1)
    fig.update_xaxes(title=f"time since the search started ({unit})", row=2, col=1)
    return fig


def scale_figure(table: ScaleTable) -> go.Figure:
    """Test accuracy against a scale (training-set fraction, log axis; or backbone), one line
    per method, as VPT's Fig. 3 and Fig. 4."""
    fig = go.Figure()
    numeric = table.axis.name == "train_fraction"
    for method, row in table.rows.items():
        values = [v for v in table.values if v in row]
        fig.add_trace(
            go.Scatter(
                x=[100 * v if numeric else str(v) for v in values],
                y=[row[v].acc for v in values],
                mode="lines+markers",
                name=method,
                line={"color": method_color(method)},
            )
        )
    x_title = "training-set fraction (%, log scale)" if numeric else "backbone"
    fig.update_layout(
        xaxis={"title": x_title, **({"type": "log"} if numeric else {"type": "category"})},
        yaxis={"title": "test accuracy (%)"},
        title=_layout_title(f"test accuracy by {table.axis.title}"),
        margin={"t": _top_margin("x")},
        height=420,
    )
    return fig
