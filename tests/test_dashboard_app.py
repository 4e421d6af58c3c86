"""The Streamlit dashboard under streamlit.testing's AppTest, on a database of a real smoke search."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from autopetl.cli import main
from autopetl.cli.dashboard_cmd import app_path, streamlit_command
from autopetl.dashboard import data, figures, page
from autopetl.store import non_dominated, open_store

APP = Path(__file__).resolve().parents[1] / "app" / "dashboard.py"
TASK = "vtab/dsprites_loc"
SEARCH = "dash-smoke"


@pytest.fixture(scope="module")
def search_db(ray_session, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file holding one real smoke search: 6 trials of the default space, 2 epochs."""
    from autopetl.backbones import SMOKE_BACKBONE
    from autopetl.pipeline import load_task_data
    from autopetl.search.runner import SearchPlan, run_search
    from autopetl.search.space import load_space, with_epochs
    from autopetl.tasks import get_task

    base = tmp_path_factory.getbasetemp()
    url = f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'search.db'}"
    with pytest.MonkeyPatch.context() as mp:  # the autouse isolation is function-scoped
        mp.setenv("AUTOPETL_CACHE", str(base / "cache"))
        data_ = load_task_data(get_task(TASK), 32, train_limit=128)
        store = open_store(url)
        plan = SearchPlan(
            name=SEARCH,
            data=data_,
            space=with_epochs(load_space("default"), 2),
            budget=6,
            backbone=SMOKE_BACKBONE,
            storage_path=base / "dashboard-ray",
        )
        assert run_search(plan, store).status == "completed"
        store.close()
    return url


def _run(monkeypatch: pytest.MonkeyPatch, url: str) -> AppTest:
    monkeypatch.setenv("AUTOPETL_DB", url)
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _spec(at: AppTest, key: str) -> dict[str, Any]:
    for chart in at.get("plotly_chart"):
        if chart.proto.id and key in chart.proto.id:
            return json.loads(chart.proto.spec)
    raise AssertionError(f"no plotly chart with key {key!r}")


def _traces(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in spec["data"]}


def _copy_db(url: str, path: Path) -> str:
    """A copy of a SQLite database to change in one test, as a URL. SQLite's backup API: the copy
    holds what is still in the write-ahead log too."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as src, sqlite3.connect(path) as dst:
        src.backup(dst)
    return f"sqlite:///{path}"


def _texts(at: AppTest) -> str:
    parts = [
        e.value
        for kind in ("info", "error", "warning", "markdown", "caption")
        for e in at.get(kind)
    ]
    parts += [e.value for e in at.get("code")]
    return "\n".join(str(p) for p in parts)


def test_app_runs_on_a_real_search(search_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _run(monkeypatch, search_db)
    assert not at.error
    assert [t.label for t in at.tabs] == [
        "Pareto front",
        "Compare",
        "Search progress",
        "Trials",
        "Report",
    ]
    assert at.selectbox(key="task").value == TASK
    # Pareto, learning curve, compare and progress charts are all drawn.
    for key in ("pareto_chart", "curve", f"compare:{TASK}", "progress_chart"):
        assert _spec(at, key)["data"]
    progress = _traces(_spec(at, "progress_chart"))
    assert len(progress["completed"]["x"]) == sum(
        1 for t in open_store(search_db).trials(SEARCH) if t.status == "completed"
    )
    # No evaluations yet: the report tab explains how to get them instead of failing.
    assert "autopetl evaluate" in _texts(at)


def test_pareto_front_trace_is_exactly_the_non_dominated_trials(
    search_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _run(monkeypatch, search_db)
    spec = _spec(at, "pareto_chart")
    traces = _traces(spec)
    store = open_store(search_db)
    trials = store.trials(SEARCH)
    expected = [f"{SEARCH}/{t.trial_key}" for t in store.pareto_front(task=TASK)]
    front = traces.pop(figures.FRONT_TRACE)
    assert front["ids"] == expected  # same trials, same order (fewest parameters first)
    assert front["line"]["shape"] == "hv"
    assert spec["layout"]["xaxis"]["type"] == "log"
    # Every completed trial is a point of its method's trace, with its config on hover.
    completed = {f"{SEARCH}/{t.trial_key}": t for t in trials if t.status == "completed"}
    points = {i: (name, tr) for name, tr in traces.items() for i in tr["ids"]}
    assert set(points) == set(completed)
    for trial_id, (name, trace) in points.items():
        trial = completed[trial_id]
        assert name == trial.method
        hover = trace["hovertext"][trace["ids"].index(trial_id)]
        assert f"method = {trial.method}" in hover and "img/s" in hover
        y = trace["y"][trace["ids"].index(trial_id)]
        assert math.isclose(y, 100 * trial.val_acc)


def test_methods_filter_changes_what_is_shown(
    search_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _run(monkeypatch, search_db)
    methods = at.multiselect(key=f"methods:{TASK}:vit_tiny_patch16_224 (random init, 32 px)")
    assert len(methods.options) >= 2, "the smoke search drew a single method; change its seed"
    store = open_store(search_db)
    # A method with a completed trial (ASHA may have stopped every trial of another one).
    completed_methods = {t.method for t in store.trials(SEARCH, "completed")}
    keep = next(m for m in reversed(methods.options) if m in completed_methods)
    at = methods.set_value([keep]).run()
    assert not at.exception
    traces = _traces(_spec(at, "pareto_chart"))
    assert set(traces) == {keep, figures.FRONT_TRACE}
    mine = [t for t in store.trials(SEARCH, "completed") if t.method == keep]
    expected = non_dominated(
        [f"{SEARCH}/{t.trial_key}" for t in mine], [(t.val_acc, t.tunable_params) for t in mine]
    )
    assert traces[figures.FRONT_TRACE]["ids"] == expected
    # The trial table follows the same filter.
    trials_tab = next(t for t in at.tabs if t.label == "Trials")
    shown = trials_tab.dataframe[0].value
    assert set(shown["method"]) == {keep}
    assert len(shown) == len([t for t in store.trials(SEARCH) if t.method == keep])


def test_selecting_a_trial_shows_its_learning_curve(
    search_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _run(monkeypatch, search_db)
    box = at.selectbox(key="trial:None")
    assert box.value == box.options[0].split(" · ")[0]  # the front's first trial by default
    other = box.options[-1].split(" · ")[0]  # options are shown as "search/key · method · acc"
    at = box.set_value(other).run()
    curve = _spec(at, "curve")
    assert other in curve["layout"]["title"]["text"]
    key = other.split("/", 1)[1]
    epochs = open_store(search_db).epochs(SEARCH, key)
    val = _traces(curve)["val acc (%)"]
    assert val["x"] == [e.epoch for e in epochs] == [1, 2]
    assert val["y"] == pytest.approx([100 * e.val_acc for e in epochs])


def test_test_accuracy_with_error_bars_once_evaluated(
    search_db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A copy, so the other tests keep a database without evaluations.
    copy = tmp_path / "evaluated.db"
    with sqlite3.connect(search_db.removeprefix("sqlite:///")) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    url = f"sqlite:///{copy}"
    store = open_store(url)
    completed = store.trials(SEARCH, "completed")
    evaluated = completed[:2]
    for i, t in enumerate(evaluated):
        for seed, acc in enumerate((0.5 + 0.1 * i, 0.6 + 0.1 * i)):
            store.upsert_evaluation(SEARCH, t.trial_key, seed=seed, split="test", test_acc=acc)
    at = _run(monkeypatch, url)
    at = at.radio(key="accuracy").set_value("test").run()
    traces = _traces(_spec(at, "pareto_chart"))
    front = traces.pop(figures.FRONT_TRACE)
    assert {i for tr in traces.values() for i in tr["ids"]} == {
        f"{SEARCH}/{t.trial_key}" for t in evaluated
    }
    for trace in traces.values():
        assert trace["error_y"]["array"] == pytest.approx([100 * 0.0707107] * len(trace["ids"]))
    # Test means 0.55 and 0.65: the front is every evaluated trial that no other one dominates.
    means = {f"{SEARCH}/{t.trial_key}": 0.55 + 0.1 * i for i, t in enumerate(evaluated)}
    expected = non_dominated(
        list(means), [(means[k], t.tunable_params) for k, t in zip(means, evaluated, strict=True)]
    )
    assert front["ids"] == expected
    # The report's method labels carry the backbone ("adapter · vit_tiny_patch16_224 (random
    # init, 32 px)"): too wide for one line of its column, they wrap, on rows tall enough for
    # the most lines any label takes, so the grid stays within the page.
    report = next(d for d in at.dataframe if list(d.value.columns)[:2] == ["source", "method"])
    labels = list(report.value["method"])
    assert labels and all(" · vit_tiny_patch16_224 (random init, 32 px)" in x for x in labels)
    config = json.loads(report.proto.columns)
    width = config["method"]["width"]
    assert width == page.REPORT_LABEL_PX
    room = width - data.GRID_CELL_PADDING_PX
    assert max(data.text_px(x) for x in labels) > room
    lines = max(data.wrapped_lines(x, room) for x in labels)
    assert lines > 1
    assert report.proto.row_height >= max(data.GRID_WRAP_MIN_ROW_PX, data.GRID_LINE_PX * lines)
    # The other columns keep the grid's fit to their header and cells (no width is set).
    assert [c for c in config if c != "_index"] == ["method"]


def test_table_text_estimates_wrap_like_the_grid() -> None:
    assert data.text_px("") == 0
    # Each character counts as the widest of its class; unknown ones as wide ones.
    m, e, a, n, space, paren, one, t, s, k = 11.7, 7.1, 7.1, 7.9, 3.7, 4.9, 7.1, 4.9, 6.7, 7.1
    assert data.text_px("mean (1 task)") == pytest.approx(
        m + e + a + n + space + paren + one + space + t + a + s + k + paren
    )
    assert data.text_px("好") == data.OTHER_CHAR_PX
    word = data.text_px("abc")
    assert data.wrapped_lines("abc abc abc", 3 * word + 2 * space) == 1
    assert data.wrapped_lines("abc abc abc", 2 * word + space) == 2
    assert data.wrapped_lines("abc abc abc", word) == 3
    # A word wider than the line is broken between characters, as the grid breaks it.
    assert data.wrapped_lines("abcabcabc", word) == 3
    assert data.wrapped_column(["short", "labels"], 200) is None
    # 184 px of text: "lora ·", then 60 x (6.7 px) at 27 a line.
    label = data.wrapped_column(["lora · " + "x" * 60], 200)
    assert label is not None and label.width == 200 and label.lines == 1 + 3
    assert label.row_height == data.GRID_LINE_PX * 4 + 10


def test_missing_database_shows_how_to_run_a_search(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "nothing-here.db"
    at = _run(monkeypatch, f"sqlite:///{missing}")
    text = _texts(at)
    assert "no database file" in text and "autopetl search --task" in text
    assert not at.get("plotly_chart")
    assert not missing.exists()  # a reader never creates the file


def test_empty_database_shows_how_to_run_a_search(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    open_store(sqlite_url).close()  # the schema, but no searches
    at = _run(monkeypatch, sqlite_url)
    assert "no searches yet" in _texts(at)
    assert "autopetl search --task" in _texts(at)


def test_unreachable_server_shows_an_error_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    at = _run(monkeypatch, "postgresql+psycopg://alice:s3cret-pw@127.0.0.1:1/autopetl")
    assert at.error
    text = _texts(at)
    assert "alice:***@127.0.0.1" in text and "s3cret-pw" not in text


# -- the data functions behind the views ----------------------------------------------------------
def test_progress_frame_best_and_hypervolume_never_fall(search_db: str) -> None:
    store = open_store(search_db)
    frame = data.trials_frame(store, [store.get_search(SEARCH)])
    progress = data.progress_frame(frame)
    assert list(progress["finished_at"]) == sorted(progress["finished_at"])
    done = progress[progress["status"] == "completed"]
    assert list(done["best_so_far"]) == pytest.approx(list(done["val_acc"].cummax()))
    hv = list(progress["hypervolume_so_far"])
    assert hv == sorted(hv) and hv[-1] > 0


def test_table_frame_is_csv_ready(search_db: str) -> None:
    store = open_store(search_db)
    table = data.table_frame(data.trials_frame(store, [store.get_search(SEARCH)]))
    assert "id" not in table.columns
    configs = [json.loads(c) for c in table["config"]]
    assert all("method" in c for c in configs)
    assert pd.read_csv(__import__("io").StringIO(table.to_csv(index=False))).shape == table.shape


# -- the command -----------------------------------------------------------------------------------
def test_command_runs_the_repository_app_locally_with_error_details_hidden() -> None:
    assert app_path() == APP
    command = streamlit_command(app_path(), "127.0.0.1", 8765)
    assert command[-1] == str(APP)  # options first: after the script they would be its argv
    opts = dict(zip(command[4:-1:2], command[5:-1:2], strict=True))
    assert opts["--server.address"] == "127.0.0.1"
    assert opts["--client.showErrorDetails"] == "none"
    assert opts["--browser.gatherUsageStats"] == "false"
    assert opts["--server.headless"] == "true"


def test_command_refuses_a_busy_port_and_a_bad_url(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["dashboard", "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["dashboard", "--db", "mysql://u:pw@h/db"]) == 2
    err = capsys.readouterr().err
    assert "unsupported database" in err and ":pw@" not in err


def test_one_backbone_per_front_and_train_runs_apart(
    search_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autopetl.backbones import SMOKE_BACKBONE

    path = tmp_path / "two.db"
    with sqlite3.connect(search_db.removeprefix("sqlite:///")) as src, sqlite3.connect(path) as dst:
        src.backup(dst)  # with what is still in the write-ahead log
    url = f"sqlite:///{path}"
    store = open_store(url)
    real = {"name": "vit_small_patch14_dinov2", "weights": "/w/v.safetensors", "img_size": 28}
    store.upsert_search("real", TASK, "default", {}, {**real, "overrides": {}}, options={})
    store.upsert_trial("real", "0", number=0, method="lora", config={"method": "lora"},
                       status="completed", val_acc=0.9, tunable_params=5)  # fmt: skip
    train = {"command": "train"}
    store.upsert_search("one-off", TASK, "train", {}, SMOKE_BACKBONE.to_dict(), options=train)
    store.upsert_trial("one-off", "0", number=0, method="linear", config={"method": "linear"},
                       status="completed", val_acc=0.99, tunable_params=1)  # fmt: skip
    store.close()
    at = _run(monkeypatch, url)
    # The latest search's backbone first; its front holds its trials only.
    unit = at.selectbox(key=f"unit:{TASK}")
    assert unit.value == "vit_small_patch14_dinov2 (v.safetensors, 28 px)"
    assert _traces(_spec(at, "pareto_chart"))[figures.FRONT_TRACE]["ids"] == ["real/0"]
    assert at.selectbox(key="progress_search").options == ["real"]
    # The smoke model's front: the search's trials, the one-off run apart and not chosen.
    at = unit.select("vit_tiny_patch16_224 (random init, 32 px)").run()
    assert not at.exception, [e.value for e in at.exception]
    ids = _traces(_spec(at, "pareto_chart"))[figures.FRONT_TRACE]["ids"]
    assert ids and all(i.startswith(f"{SEARCH}/") for i in ids)
    assert at.multiselect(key=f"runs:{TASK}:vit_tiny_patch16_224 (random init, 32 px)").options == [
        "one-off"
    ]
    assert at.selectbox(key="progress_search").options == [SEARCH]


def _trial_row(**overrides: Any) -> pd.Series:
    row = {c: math.nan for c in data.TRIAL_COLUMNS}
    row.update(test_seeds=0, epochs_done=None, config={}, method="vpt", status="completed")
    row.update(overrides)
    return pd.Series(row)


def test_cost_table_rounds_with_units_and_leaves_out_what_was_not_measured() -> None:
    row = _trial_row(
        val_acc=0.35,
        tunable_params=6160.0,
        tunable_params_without_head=0.0,
        epochs_done=10,
        wall_time_s=0.4291,
        images_per_s=56141.6116,
        peak_memory_mb=1407.2813,
    )
    assert data.cost_table(row)["value"].to_dict() == {
        "val acc": "35.0 %",
        "tunable params": "6,160",
        "without head": "0",
        "epochs": "10",
        "wall time": "0.4 s",
        "images/s": "56,142",
        "peak memory (this trial)": "1,407 MB",
    }
    evaluated = _trial_row(val_acc=0.5, test_mean=0.4319, test_std=0.0112, test_seeds=3)
    assert data.cost_table(evaluated)["value"].to_dict() == {
        "val acc": "50.0 %",
        "test acc": "43.2 ± 1.1 % (3 seeds)",
    }
    assert data.cost_table(_trial_row(wall_time_s=5400.0))["value"].tolist() == ["90.0 min"]


def test_trial_panel_shows_rounded_costs(search_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _run(monkeypatch, search_db)
    costs = [d.value for d in at.dataframe if list(d.value.columns) == ["value"]]
    assert len(costs) == 1
    shown = costs[0]["value"].to_dict()
    assert shown["val acc"].endswith(" %") and "training FLOPs" not in shown
    assert all(isinstance(v, str) and "None" not in v and "nan" not in v for v in shown.values())


@pytest.mark.parametrize(
    ("minutes", "unit", "first"),
    [([0.001, 0.5], "s", 0.06), ([1.0, 40.0], "min", 1.0), ([30.0, 600.0], "h", 0.5)],
)
def test_progress_time_axis_reads_in_a_unit_that_fits_the_search(
    minutes: list[float], unit: str, first: float
) -> None:
    values, shown = figures.elapsed_axis(pd.Series(minutes))
    assert shown == unit and values.iloc[0] == pytest.approx(first)


def test_progress_chart_is_on_elapsed_time(search_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _run(monkeypatch, search_db)
    spec = _spec(at, "progress_chart")
    assert spec["layout"]["xaxis2"]["title"]["text"].startswith("time since the search started (")
    xs = [x for t in spec["data"] for x in t["x"]]
    assert all(isinstance(x, int | float) and x >= 0 for x in xs)  # no wall-clock timestamps


def test_titles_sit_below_the_toolbar() -> None:
    frame = pd.DataFrame(columns=data.TRIAL_COLUMNS)
    for fig in (
        figures.pareto_figure(frame, title="a long title " * 8),
        figures.learning_curve_figure(
            pd.DataFrame({"epoch": [1], "val_acc": [0.1], "train_loss": [1.0]}), "t"
        ),
    ):
        title = fig.layout.title
        # Anchored to the plot area's top edge, in a margin tall enough for the toolbar above.
        assert (title.yref, title.y, title.yanchor, title.xanchor) == ("paper", 1, "bottom", "left")
        assert fig.layout.margin.t >= 70


def test_published_points_are_named_on_hover_and_listed_under_the_chart(
    search_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _run(monkeypatch, search_db)
    spec = _spec(at, f"compare:{TASK}")
    published = [t for t in spec["data"] if t["name"].startswith("published")]
    assert len(published) == 1 and published[0]["mode"] == "markers"  # no labels on the chart
    assert not spec["layout"].get("shapes") and not spec["layout"].get("annotations")
    table = next(d.value for d in at.dataframe if "published row" in d.value.columns)
    points, _ = page.published_points(TASK)
    assert len(table) == len({(p.label, p.acc, p.params) for p in points})
    with_params = [p for p in points if p.params]
    assert len(published[0]["x"]) == len(with_params)


def test_the_three_way_front_is_coloured_by_the_third_objective(
    search_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every trial measures inference GFLOPs, so the Pareto tab offers its projections and the
    # three-way view: accuracy against parameters, coloured by GFLOPs, the 3-D front circled.
    at = _run(monkeypatch, search_db)
    view = at.selectbox(key="cost_view")
    three_way = next(o for o in view.options if "coloured by inference GFLOPs" in o)
    at = view.set_value(three_way).run()
    assert not at.exception, [e.value for e in at.exception]
    traces = _traces(_spec(at, "pareto_chart"))
    store = open_store(search_db)
    names = ["val_acc", "tunable_params", "inference_gflops"]
    expected = [f"{SEARCH}/{t.trial_key}" for t in store.pareto_front(SEARCH, objectives=names)]
    assert traces[figures.FRONT_TRACE]["ids"] == expected
    trials = {f"{SEARCH}/{t.trial_key}": t for t in store.trials(SEARCH)}
    points = traces["trials"]
    assert "colorbar" in points["marker"] and len(points["marker"]["color"]) == len(points["ids"])
    shades = dict(zip(points["ids"], points["marker"]["color"], strict=True))
    for trial_id, shade in shades.items():
        assert math.isclose(shade, trials[trial_id].measures["inference_gflops"])
    # The GFLOPs projection: GFLOPs on a linear x axis.
    at = view.set_value(
        next(o for o in view.options if o.startswith("inference GFLOPs (colour"))
    ).run()
    spec = _spec(at, "pareto_chart")
    assert spec["layout"]["xaxis"]["title"]["text"] == "inference GFLOPs"


def test_data_scales_never_share_a_front_and_the_report_plots_accuracy_against_them(
    search_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autopetl.backbones import SMOKE_BACKBONE

    url = _copy_db(search_db, tmp_path / "scales.db")
    store = open_store(url)
    for fraction, acc in ((0.01, 0.4), (0.1, 0.7)):
        name = f"scale-{fraction}"
        store.upsert_search(name, TASK, "default", {}, SMOKE_BACKBONE.to_dict(),
                            options={"train_fraction": fraction})  # fmt: skip
        store.upsert_trial(name, "0", number=0, method="vpt", config={"method": "vpt"},
                           status="completed", val_acc=acc, tunable_params=50)  # fmt: skip
        store.upsert_evaluation(name, "0", seed=0, split="test", test_acc=acc)
    store.close()
    at = _run(monkeypatch, url)
    unit = at.selectbox(key=f"unit:{TASK}")
    smoke = "vit_tiny_patch16_224 (random init, 32 px)"
    assert set(unit.options) == {smoke, f"{smoke} · 1% of the training set", f"{smoke} · 10% of the training set"}  # fmt: skip
    at = unit.select(f"{smoke} · 10% of the training set").run()
    assert _traces(_spec(at, "pareto_chart"))[figures.FRONT_TRACE]["ids"] == ["scale-0.1/0"]
    at = unit.select(smoke).run()  # the task's own protocol: the smoke search alone
    ids = _traces(_spec(at, "pareto_chart"))[figures.FRONT_TRACE]["ids"]
    assert ids and all(i.startswith(f"{SEARCH}/") for i in ids)
    at = at.radio(key="report_layout").set_value("train_fraction").run()
    assert not at.exception, [e.value for e in at.exception]
    vpt = _traces(_spec(at, "scale_chart:train_fraction"))["vpt"]
    assert vpt["x"] == [1.0, 10.0] and vpt["y"] == pytest.approx([40.0, 70.0])
    at = at.radio(key="report_layout").set_value("backbone").run()
    assert "varies the backbone" in _texts(at)


def test_a_warm_started_search_says_what_seeded_it(
    search_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = _copy_db(search_db, tmp_path / "seeded.db").removeprefix("sqlite:///")
    lineage = {"sources": ["loc-search", "ori-search"], "seeded": 5, "left_out": 1, "capped": 0}
    with sqlite3.connect(copy) as conn:
        conn.execute(
            "UPDATE autopetl_searches SET options = ? WHERE name = ?",
            (json.dumps({"warm_start": lineage}), SEARCH),
        )
    at = _run(monkeypatch, f"sqlite:///{copy}")
    assert "Warm-started from the fronts of loc-search, ori-search (5 configurations)" in _texts(at)
    # A cold search says nothing of it.
    assert "Warm-started" not in _texts(_run(monkeypatch, search_db))
