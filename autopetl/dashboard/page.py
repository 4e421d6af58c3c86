"""The Streamlit page: Pareto front, compare, progress, trials and report tabs on one database.

``app/dashboard.py`` runs :func:`render` (``autopetl dashboard`` starts Streamlit on that file);
this module also runs as a script itself (Streamlit sets ``__name__`` to ``"__main__"``), which
is how an installation without the repository's ``app/`` folder still has a dashboard.

The database URL comes from ``AUTOPETL_DB`` (the command sets it from ``--db``). The page only
reads: it never creates a database file or migrates a schema, and a missing or empty database
shows how to fill it instead of an error.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from autopetl.dashboard import data, figures
from autopetl.objectives import OBJECTIVES
from autopetl.search.warm_start import seeded_from
from autopetl.store import StoreError, hypervolume

if TYPE_CHECKING:
    from autopetl.store import SearchRecord, Store

DB_ENV = "AUTOPETL_DB"
REFRESH_S = 5.0  # how often the progress tab re-reads a running search
ACCURACY_LABELS = {"val": "validation (the search's objective)", "test": "test (evaluated trials)"}
MAX_SIDE_BY_SIDE = 3
REPORT_LABEL_PX = 260  # the Report table's method column, where its labels wrap
# Search names are long ("dsprites_loc-default-20261205-134501"): the sidebar starts wider than
# Streamlit's default (300 px in 1.67; the user can still drag it), and a name wraps onto more
# lines instead of being cut. In Streamlit 1.67 (react-aria) a multiselect chip is a
# `span[data-tag]` of a fixed height holding the name in a `span[title]` that never wraps (cut
# with an ellipsis), and a dropdown option is a fixed 40 px row holding the name in a `div` that
# never wraps (clipped): there, two lines of 1.2 line height fit the row.
SIDEBAR_WIDTH_PX = 360
PAGE_CSS = """<style>
[data-testid="stMultiSelect"] [data-tag] { height: auto; min-height: 28px; }
[data-testid="stMultiSelect"] [data-tag] > span[title] {
  white-space: normal; overflow-wrap: anywhere; text-overflow: clip;
}
:is([data-testid="stMultiSelectDropdown"], [data-testid="stSelectboxVirtualDropdown"])
  [role="option"] > div {
  height: auto; white-space: normal; overflow-wrap: anywhere; line-height: 1.2;
}
</style>"""


def render() -> None:
    """Draw the whole page for the database in ``AUTOPETL_DB`` (the default one if unset)."""
    st.set_page_config(
        page_title="autopetl dashboard",
        layout="wide",
        initial_sidebar_state=SIDEBAR_WIDTH_PX,
    )
    url = os.environ.get(DB_ENV) or None
    opened = data.open_for_reading(url)
    if opened.store is None:
        help_page(opened)
        return
    try:
        _dashboard(opened.store, opened.url, url)
    except StoreError as exc:  # the database went away or broke between two reruns
        help_page(data.OpenedStore(opened.url, None, "error", str(exc)))
    finally:
        opened.store.close()


def help_page(opened: data.OpenedStore) -> None:
    """What to do when there is nothing to show: the reason, then how to run a first search."""
    st.title("autopetl dashboard")
    if opened.problem in ("error", "outdated"):
        st.error(f"Cannot read the database: {opened.message}")
    else:
        st.info(f"Nothing to show yet: {opened.message}.")
    db = f" --db '{opened.url}'" if opened.url else ""
    st.markdown(
        f"""
**Database:** `{opened.url or "(default)"}`

Fill it with a search, then reload this page:

```
autopetl search --task vtab/dsprites_loc --smoke-test --budget 8{db}
```

A smoke search (a tiny random ViT at 32 px, 2 epochs per trial) takes a few minutes on a CPU; a
real one is `autopetl search --task vtab/dsprites_loc --budget 64{db}`. Trials appear here while
it runs. To look at another database: `autopetl dashboard --db URL` (or set `AUTOPETL_DB`).
"""
    )


def _dashboard(store: Store, shown_url: str, url: str | None) -> None:
    searches = store.list_searches()
    tasks = sorted({s.task for s in searches})
    st.html(PAGE_CSS)
    sidebar = st.sidebar
    sidebar.title("autopetl")
    sidebar.caption(f"database: `{shown_url}`")
    task = sidebar.selectbox("Task", tasks, key="task")
    units = data.backbone_units([s for s in searches if s.task == task])
    unit = sidebar.selectbox(
        "Backbone (weights, input size; data scale)",
        units,
        key=f"unit:{task}",
        help="accuracies compare only within one backbone, its weights and input size: every "
        "front, comparison and progress view here stays within the one chosen",
    )
    sidebar.caption(unit)  # the box cuts a long name; this is it in full
    in_unit = [s for s in searches if data.unit_of(s) == unit]
    of_task = [s for s in in_unit if s.task == task and s.kind == "search"]
    runs = [s for s in in_unit if s.task == task and s.kind == "train"]
    chosen = sidebar.multiselect(
        "Searches",
        [s.name for s in of_task],
        default=[s.name for s in of_task],
        key=f"searches:{task}:{unit}",
        help="the chosen searches of this task and backbone are pooled into one front",
    )
    chosen_runs = (
        sidebar.multiselect(
            "One-off train runs",
            [s.name for s in runs],
            default=[],
            key=f"runs:{task}:{unit}",
            help="`autopetl train` runs of this task and backbone, added to the front if chosen",
        )
        if runs
        else []
    )
    selected = [s for s in of_task + runs if s.name in chosen or s.name in chosen_runs]
    frame = data.trials_frame(store, selected)
    all_methods = sorted(frame["method"].unique(), key=figures.method_rank)
    methods = sidebar.multiselect(
        "Methods", all_methods, default=all_methods, key=f"methods:{task}:{unit}"
    )
    sidebar.button("Reload", help="read the database again")
    shown = frame[frame["method"].isin(methods)]

    pareto, compare, progress, trials, report = st.tabs(
        ["Pareto front", "Compare", "Search progress", "Trials", "Report"]
    )
    with pareto:
        pareto_tab(store, shown, f"{task} · {unit}")
    with compare:
        compare_tab(store, [s for s in in_unit if s.kind == "search"], task, unit, methods)
    with progress:
        progress_tab(url, of_task)
    with trials:
        trials_tab(shown, task)
    with report:
        report_tab(store)


# -- Pareto ---------------------------------------------------------------------------------------
def pareto_tab(store: Store, frame: pd.DataFrame, task: str) -> None:
    """The front of the task over the chosen searches and methods, and one trial's curve."""
    if frame.empty:
        st.info("No trials for this choice of searches and methods.")
        return
    options = ["val"] + (["test"] if (frame["test_seeds"] > 0).any() else [])
    accuracy = st.radio(
        "Accuracy",
        options,
        format_func=ACCURACY_LABELS.__getitem__,
        horizontal=True,
        key="accuracy",
    )
    costs = data.measured_costs(frame)
    cost, colour = "tunable_params", None
    if len(costs) > 1:  # a measured cost too (inference GFLOPs): its projections and the 3-way
        views = {f"{OBJECTIVES[a].label} (colour: method)": (a, None) for a in costs} | {
            f"{OBJECTIVES[a].label}, coloured by {OBJECTIVES[b].label} (3-way front)": (a, b)
            for a in costs
            for b in costs
            if a != b
        }
        chosen = st.selectbox("Cost axis", list(views), key="cost_view")
        cost, colour = views[chosen]
    shown_costs = (cost,) if colour is None else (cost, colour)
    fig = figures.pareto_figure(frame, accuracy=accuracy, title=task, cost=cost, colour=colour)
    event = st.plotly_chart(
        fig, key="pareto_chart", on_select="rerun", selection_mode="points", width="stretch"
    )
    plotted = data.plotted(frame, accuracy, shown_costs)
    best = data.front(frame, accuracy, shown_costs)
    counts = frame["status"].value_counts()
    st.caption(
        f"{len(plotted)} completed trials plotted, {len(best)} on the front "
        + (
            "(black step line). "
            if colour is None
            else "(circled: no other trial is better on accuracy and both costs). "
        )
        + f"Not plotted: {counts.get('pruned', 0)} pruned (stopped early, so half-trained), "
        f"{counts.get('failed', 0)} failed, {counts.get('running', 0)} running"
        + (", and trials without a test evaluation." if accuracy == "test" else ".")
        + " Click a point to see its learning curve."
    )
    if plotted.empty:
        return
    # Front trials first: they are the ones a user most often wants to inspect.
    ids = list(best["id"]) + [i for i in plotted["id"] if i not in set(best["id"])]
    picked = _selected_id(event, ids)
    trial_id = st.selectbox(
        "Trial",
        ids,
        index=ids.index(picked) if picked else 0,
        format_func=lambda i: _trial_label(frame, i, set(best["id"])),
        key=f"trial:{picked}",
    )
    trial_panel(store, frame.set_index("id").loc[trial_id])


def _selected_id(event: object, ids: list[str]) -> str | None:
    """The ``search/trial_key`` of the point clicked on the chart, if any."""
    try:
        points = event.selection.points  # type: ignore[attr-defined]
    except AttributeError:
        return None
    for point in points or []:
        custom = point.get("customdata")
        value = custom[0] if isinstance(custom, list) else custom
        if value in ids:
            return str(value)
    return None


def _trial_label(frame: pd.DataFrame, trial_id: str, front_ids: set[str]) -> str:
    row = frame.set_index("id").loc[trial_id]
    star = " ★ front" if trial_id in front_ids else ""
    return f"{trial_id} · {row['method']} · val {100 * row['val_acc']:.1f} %{star}"


def trial_panel(store: Store, row: pd.Series) -> None:
    """A trial's learning curve, config and costs."""
    epochs = data.epochs_frame(store.epochs(row["search"], row["trial_key"]))
    left, right = st.columns([3, 2])
    with left:
        if epochs.empty:
            st.info("No epochs recorded for this trial.")
        else:
            title = f"learning curve of {row.name}"
            st.plotly_chart(figures.learning_curve_figure(epochs, title), key="curve")
    with right:
        st.markdown(f"**{row['method']}** · trial `{row['trial_key']}` of `{row['search']}`")
        st.code("\n".join(data.config_lines(row["config"])), language="text")
        st.dataframe(data.cost_table(row), width="stretch")


# -- Compare --------------------------------------------------------------------------------------
def compare_tab(
    store: Store, searches: list[SearchRecord], task: str, unit: str, methods: list[str]
) -> None:
    """Fronts side by side, by task or by search, with the papers' points as a reference.

    ``searches`` all ran on the backbone ``unit``: fronts side by side compare only within one.
    """
    st.caption(f"Fronts of searches on {unit} (the backbone chosen in the sidebar).")
    by = st.radio("Side by side", ["tasks", "searches"], horizontal=True, key="compare_by")
    if by == "tasks":
        tasks = sorted({s.task for s in searches})
        default = [t for t in [task, *tasks] if t in tasks]
        default = list(dict.fromkeys(default))[:MAX_SIDE_BY_SIDE]
        items = st.multiselect("Tasks", tasks, default=default, key=f"compare_tasks:{unit}")
        groups = {t: [s for s in searches if s.task == t] for t in items}
    else:
        names = [s.name for s in searches]
        default = [s.name for s in searches if s.task == task][:MAX_SIDE_BY_SIDE]
        items = st.multiselect("Searches", names, default=default, key=f"compare_searches:{unit}")
        groups = {n: [s for s in searches if s.name == n] for n in items}
    with_published = st.checkbox("papers' published points", value=True, key="compare_published")
    if not groups:
        st.info("Choose tasks or searches to compare.")
        return
    frames = {k: data.trials_frame(store, v) for k, v in groups.items()}
    frames = {k: f[f["method"].isin(methods)] for k, f in frames.items()}
    note = None
    columns = st.columns(min(len(frames), MAX_SIDE_BY_SIDE))
    summary = []
    published_rows: list[dict[str, object]] = []
    for i, (key, frame) in enumerate(frames.items()):
        group_task = groups[key][0].task
        published: list[figures.PublishedPoint] = []
        if with_published:
            published, note = published_points(group_task)
            published_rows += [
                {
                    "task": group_task,
                    "published row": p.label,
                    "test acc (%)": round(100 * p.acc, 1),
                    "params (M, head excluded)": "not given"
                    if not p.params
                    else f"{p.params / 1e6:.3g}",
                }
                for p in published
            ]
        with columns[i % len(columns)]:
            fig = figures.pareto_figure(frame, published=published, title=key, height=420)
            st.plotly_chart(fig, key=f"compare:{key}", width="stretch")
        summary.append(_summary_row(key, frame))
    reference = _common_reference(frames)
    for row, frame in zip(summary, frames.values(), strict=True):
        best = data.front(frame)
        points = [(a, p) for a, p in zip(best["val_acc"], best["tunable_params"], strict=True)]
        row["hypervolume"] = round(hypervolume(points, reference), 3) if points else 0.0
    st.dataframe(pd.DataFrame(summary), hide_index=True, width="stretch", key="compare_summary")
    st.caption(
        "Hypervolume: log10 parameters, one reference for every column (accuracy 0, 1.1 x the "
        "largest parameter count shown), so the numbers compare."
    )
    if with_published:
        st.caption(
            note
            or "Published points: test accuracy of ViT-B/16 (ImageNet-21k) after re-training on "
            "train800val200, parameters without the head; grey crosses where the paper gives a "
            "parameter count (hover to name them), every row in the table below. A reference, not "
            "a like-for-like comparison with a different backbone or validation accuracy."
        )
        if published_rows:
            unique = pd.DataFrame(published_rows).drop_duplicates()
            st.dataframe(unique, hide_index=True, width="stretch", key="compare_published_table")


def _summary_row(key: str, frame: pd.DataFrame) -> dict[str, object]:
    plotted = data.plotted(frame)
    best_acc = plotted["val_acc"].max() if len(plotted) else float("nan")
    return {
        "": key,
        "trials": len(frame),
        "completed": len(plotted),
        "best val acc (%)": round(100 * best_acc, 1),
        "on the front": len(data.front(frame)),
    }


def _common_reference(frames: dict[str, pd.DataFrame]) -> tuple[float, float]:
    largest = max(
        (float(data.plotted(f)["tunable_params"].max()) for f in frames.values() if len(f)),
        default=1.0,
    )
    return (0.0, 1.1 * (largest if math.isfinite(largest) else 1.0))


def published_points(task: str) -> tuple[list[figures.PublishedPoint], str | None]:
    """The papers' results on ``task`` from the shipped data file, or a note why there are none."""
    try:
        from autopetl.report import ReportError, published_rows
    except ImportError:
        return [], "The papers' published results are not part of this autopetl version."
    try:
        rows = published_rows()
    except ReportError as exc:
        return [], f"Published results unavailable: {exc}"
    folder = task.rsplit("/", 1)[-1]  # task names are vtab/<folder>
    points = [
        figures.PublishedPoint(
            label=row.label,
            acc=row.cells[folder].acc / 100.0,
            params=None if row.params_m is None else row.params_m * 1e6,
        )
        for row in rows
        if folder in row.cells
    ]
    if not points:
        return [], f"No published results for {task}."
    return points, None


# -- Progress -------------------------------------------------------------------------------------
def progress_tab(url: str | None, searches: list[SearchRecord]) -> None:
    """One search's trials over time, re-read every few seconds while it runs."""
    if not searches:
        st.info("No searches of this task on this backbone (one-off train runs have no progress).")
        return
    running = [s for s in searches if s.status == "running"]
    default = (running or searches)[-1].name
    names = [s.name for s in searches]
    name = st.selectbox("Search", names, index=names.index(default), key="progress_search")
    status = next(s.status for s in searches if s.name == name)
    # Only a running search needs re-reading; a finished one would waste the reader's time.
    every = REFRESH_S if status == "running" else None
    st.fragment(run_every=every)(_progress_body)(url, name, status)


def _progress_body(url: str | None, name: str, status_at_start: str) -> None:
    opened = data.open_for_reading(url)
    if opened.store is None:
        st.warning(f"Cannot read the database: {opened.message}")
        return
    try:
        search = opened.store.get_search(name)
        if search is None:
            st.warning(f"The search {name!r} is gone from the database.")
            return
        if search.status != status_at_start:
            # The search finished (or restarted): redraw every tab, and stop or start refreshing.
            st.rerun()
        frame = data.trials_frame(opened.store, [search])
    finally:
        opened.store.close()
    counts = search.trial_counts
    finished = counts.get("completed", 0) + counts.get("pruned", 0)
    progress = data.progress_frame(frame)
    cols = st.columns(5)
    cols[0].metric("status", search.status)
    cols[1].metric("finished", f"{finished}/{search.budget or '?'}")
    cols[2].metric("running", counts.get("running", 0))
    best = progress["best_so_far"].iloc[-1] if len(progress) else float("nan")
    cols[3].metric("best val acc", "-" if best != best else f"{100 * best:.1f} %")
    hv = progress["hypervolume_so_far"].iloc[-1] if len(progress) else 0.0
    cols[4].metric("hypervolume", f"{hv:.3f}")
    if lineage := seeded_from(search.options):
        st.caption(
            f"Warm-started from the fronts of {lineage}: its first trials, trained here to their "
            "last epoch."
        )
    if progress.empty:
        st.info("No trial has finished yet.")
    else:
        st.plotly_chart(figures.progress_figure(progress, title=name), key="progress_chart")
    if search.status == "running":
        st.caption(f"Refreshing every {REFRESH_S:.0f} s while the search runs.")


# -- Trials ---------------------------------------------------------------------------------------
def trials_tab(frame: pd.DataFrame, task: str) -> None:
    """Every trial of the chosen searches and methods, filterable, downloadable as CSV."""
    statuses = sorted(frame["status"].unique())
    c1, c2, c3 = st.columns([2, 2, 1])
    keep_status = c1.multiselect("Status", statuses, default=statuses, key="table_status")
    min_acc = c2.slider("Minimum val accuracy (%)", 0, 100, 0, key="table_min_acc")
    front_only = c3.checkbox("Pareto front only", key="table_front")
    rows = frame[frame["status"].isin(keep_status)]
    if min_acc > 0:
        rows = rows[rows["val_acc"].fillna(-1) * 100 >= min_acc]
    if front_only:
        rows = rows[rows["id"].isin(set(data.front(frame)["id"]))]
    table = data.table_frame(rows)
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "val_acc": st.column_config.NumberColumn("val acc", format="percent"),
            "test_mean": st.column_config.NumberColumn("test mean", format="percent"),
            "test_std": st.column_config.NumberColumn("test std", format="percent"),
            "tunable_params": st.column_config.NumberColumn("tunable params", format="localized"),
        },
        key="trials_table",
    )
    st.download_button(
        "Download CSV",
        table.to_csv(index=False),
        file_name=f"{task.replace('/', '_')}-trials.csv",
        mime="text/csv",
        key="trials_csv",
    )
    st.caption(f"{len(table)} of {len(frame)} trials.")


# -- Report ---------------------------------------------------------------------------------------
def report_tab(store: Store) -> None:
    """The VTAB-1k table of `autopetl report`, or accuracy against a scale (`--by`)."""
    try:
        from autopetl import report as report_mod
    except ImportError:
        st.info("The results table needs `autopetl report`, which this autopetl version lacks.")
        return
    layout = st.radio(
        "Table",
        list(REPORT_LAYOUTS),
        format_func=REPORT_LAYOUTS.get,
        horizontal=True,
        key="report_layout",
    )
    if layout != "vtab":
        scale_report(store, layout)
        return
    with_published = st.checkbox("papers' published rows", value=False, key="report_published")
    try:
        rep = report_mod.build_report(store, published=with_published)
    except report_mod.ReportError as exc:
        st.info(str(exc))
        return
    table = pd.DataFrame(
        [[row.source, *report_mod.cells(rep, row)] for row in rep.rows],
        columns=["source", *report_mod.header(rep)],
    )
    # Our rows' labels carry the backbone ("lora · vit_small_patch14_dinov2 (vit_small_patch14_
    # dinov2.safetensors, 28 px)", ~490 px): a column fit to them pushes the grid past the page's
    # right edge, cutting the last columns. They wrap instead, in a narrower column; the other
    # columns keep the grid's fit to their header and cells.
    label = data.wrapped_column(list(table["method"]), REPORT_LABEL_PX)
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={}
        if label is None
        else {"method": st.column_config.Column(width=label.width)},
        row_height=None if label is None else label.row_height,
        key="report_table",
    )
    st.download_button(
        "Download CSV",
        report_mod.to_csv(rep),
        file_name="autopetl-report.csv",
        mime="text/csv",
        key="report_csv",
    )
    st.caption(
        "Top-1 test accuracy (%) after re-training, mean over seeds; each method's best "
        "evaluated configuration per task (the same table as `autopetl report`)."
    )


REPORT_LAYOUTS = {
    "vtab": "VTAB-1k table",
    "train_fraction": "by training-set fraction",
    "backbone": "by backbone",
}


def scale_report(store: Store, axis: str) -> None:
    """`autopetl report --by AXIS`: the table, and accuracy against the axis per method."""
    from autopetl import scaling
    from autopetl.evaluation import evaluated_configurations

    try:
        table = scaling.scale_table(evaluated_configurations(store), axis)
    except scaling.ScaleError as exc:
        st.info(str(exc))
        return
    frame = pd.DataFrame(
        [scaling.cells(table, m) for m in table.rows], columns=scaling.header(table)
    )
    st.plotly_chart(figures.scale_figure(table), key=f"scale_chart:{axis}")
    st.dataframe(frame, hide_index=True, width="stretch", key=f"scale_table:{axis}")
    st.caption(f"{scaling.caption(table)} The same table as `autopetl report --by {axis}`.")


if __name__ == "__main__":
    render()
