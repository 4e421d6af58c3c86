"""``autopetl report``: the papers' Table 1 shape, its three averages, and the published rows."""

from __future__ import annotations

import csv
import io

import pytest

from autopetl.backbones import SMOKE_BACKBONE
from autopetl.cli import main
from autopetl.evaluation import best_configuration
from autopetl.report import build_report, published_rows, row_averages, to_csv, to_markdown
from autopetl.store import open_store
from autopetl.tasks import TASKS, resolve_tasks

# (task, method, trial key, test accuracies over seeds, tunable params without head, with head)
EVALUATED = [
    ("vtab/cifar", "vpt", "0", [0.60, 0.62], 1000, 2000),
    ("vtab/cifar", "vpt", "1", [0.70, 0.72], 5000, 6000),  # vpt's best on cifar: 71
    ("vtab/cifar", "linear", "2", [0.50], 0, 100),
    ("vtab/dtd", "vpt", "0", [0.40, 0.44, 0.42], 1000, 2000),
    ("vtab/eurosat", "vpt", "0", [0.90], 1000, 2000),
    ("vtab/eurosat", "linear", "1", [0.80], 0, 100),
    ("vtab/dsprites_loc", "vpt", "0", [0.30], 1000, 2000),
    ("vtab/kitti", "vpt", "0", [0.60], 3000, 4000),
]


def _store(url: str):
    store = open_store(url)
    for task, method, key, accs, params, with_head in EVALUATED:
        name = f"s-{task.split('/')[1]}"
        if store.get_search(name) is None:
            store.upsert_search(name, task, "default", {}, SMOKE_BACKBONE.to_dict())
        store.upsert_trial(
            name,
            key,
            number=int(key),
            method=method,
            config={"method": method},
            status="completed",
            val_acc=0.5,
            tunable_params=with_head,
            tunable_params_without_head=params,
        )
        for seed, acc in enumerate(accs):
            metrics = {"tunable_params": with_head, "tunable_params_without_head": params}
            store.upsert_evaluation(
                name, key, seed=seed, split="test", test_acc=acc, metrics=metrics
            )
    # A failed run and a validation-split row never count.
    store.upsert_evaluation("s-cifar", "2", seed=5, split="test", test_acc=None)
    store.upsert_evaluation("s-cifar", "2", seed=6, split="val200", test_acc=1.0)
    return store


def test_cells_and_the_three_averages(sqlite_url):
    report = build_report(_store(sqlite_url))
    assert [t.folder for t in report.tasks] == [
        "cifar",
        "dtd",
        "eurosat",
        "kitti",
        "dsprites_loc",
    ]  # VTAB order, only tasks present
    assert report.groups == ("natural", "specialized", "structured")
    linear, vpt = report.rows  # in the papers' row order
    assert (linear.label, vpt.label) == ("linear", "vpt")
    assert vpt.cells["cifar"].acc == pytest.approx(71.0)  # the better configuration's mean
    assert vpt.cells["cifar"].trial_key == "1" and vpt.cells["cifar"].seeds == 2
    assert vpt.cells["dtd"].acc == pytest.approx(42.0)
    assert linear.cells["cifar"].acc == pytest.approx(50.0) and linear.cells["cifar"].seeds == 1

    avg = report.averages(vpt)
    natural, specialized, structured = (71 + 42) / 2, 90.0, (60 + 30) / 2
    assert avg.groups == pytest.approx(
        {"natural": natural, "specialized": specialized, "structured": structured}
    )
    assert avg.tasks_mean == pytest.approx((71 + 42 + 90 + 60 + 30) / 5)
    assert avg.groups_mean == pytest.approx((natural + specialized + structured) / 3)
    # Parameters: the mean over the shown tasks of the chosen configurations, head excluded.
    assert report.params(vpt) == pytest.approx((5000 + 1000 + 1000 + 3000 + 1000) / 5)

    # linear misses tasks: only its complete group has a mean; no overall averages.
    lin = report.averages(linear)
    assert lin.groups == {"natural": None, "specialized": pytest.approx(80.0), "structured": None}
    assert (lin.tasks_mean, lin.groups_mean) == (None, None)

    md = to_markdown(report)
    lines = md.splitlines()
    assert lines[0] == (
        "| method | params | cifar | dtd | natural mean | eurosat | specialized mean | kitti | "
        "dsprites_loc | structured mean | mean (5 tasks) | mean of group means |"
    )
    # One rounding (1 decimal), mean ± std where several seeds ran, the backbone with the method.
    tiny = "vit_tiny_patch16_224 (random init, 32 px)"
    assert lines[2] == f"| linear · {tiny} | 0 | 50.0 | - | - | 80.0 | 80.0 | - | - | - | - | - |"
    assert lines[3] == (
        f"| vpt · {tiny} | 2.2 K | 71.0 ± 1.4 | 42.0 ± 2.0 | 56.5 | 90.0 | 90.0 | 60.0 | 30.0 "
        "| 45.0 | 58.6 | 63.8 |"
    )

    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert rows[1]["source"] == "autopetl" and rows[1]["params"] == "2200"
    assert rows[1]["cifar"] == "71.00" and rows[0]["dtd"] == "-"


def test_task_and_group_filters(sqlite_url):
    store = _store(sqlite_url)
    report = build_report(store, resolve_tasks("vtab/natural"))
    assert len(report.tasks) == 7 and report.groups == ("natural",)
    vpt = report.rows[1]
    # Natural tasks without evaluations are shown as missing, so the group has no mean.
    assert report.averages(vpt).groups == {"natural": None}
    report = build_report(store, resolve_tasks("eurosat"))
    assert [r.label for r in report.rows] == ["linear", "vpt"]
    assert report.averages(report.rows[0]).tasks_mean == pytest.approx(80.0)
    # A budget (head included) leaves vpt's cheaper cifar configuration.
    report = build_report(store, resolve_tasks("cifar"), max_params=2000)
    assert report.rows[1].cells["cifar"].acc == pytest.approx(61.0)


def test_report_cli(sqlite_url, capsys):
    _store(sqlite_url)
    assert main(["report", "--format", "md", "--group", "specialized", "--db", sqlite_url]) == 0
    out = capsys.readouterr().out
    assert (
        "| vpt · vit_tiny_patch16_224 (random init, 32 px) | 1.0 K | - | 90.0 | - | - | - | - | - |"
        in out
    )  # 3 tasks missing
    assert main(["report", "--db", sqlite_url]) == 0
    assert "dSpr-L" in capsys.readouterr().out
    assert main(["report", "--format", "md", "--published", "--task", "dsprites_loc"]) == 0
    out = capsys.readouterr().out
    assert "| DVPT (DVPT Tab. 1) | - | 76.5 |" in out and "arXiv:2307.09787" in out
    assert "| DTL (V-PETL) | 0.04 M | 93.9 |" in out


def test_nothing_to_report_is_a_clear_error(sqlite_url, capsys):
    open_store(sqlite_url).close()  # an existing, empty database
    assert main(["report", "--db", sqlite_url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no evaluations in" in err[0] and "autopetl evaluate" in err[0]
    assert main(["report", "--group", "weird", "--db", sqlite_url]) == 2
    assert "unknown group 'weird'" in capsys.readouterr().err


def test_published_rows_are_transcribed_consistently():
    """Each DVPT row's 19 cells average to the group means the paper printed (cells are rounded
    to 0.1, so within 0.05), and V-PETL's 19-task means agree with DVPT's cells where both
    report the same method."""
    rows = published_rows()
    dvpt = [r for r in rows if r.source == "dvpt"]
    assert len(dvpt) == 11 and all(len(r.cells) == 19 for r in dvpt)
    everything = list(TASKS.values())
    for row in dvpt:
        avg = row_averages(row, everything)
        for group in ("natural", "specialized", "structured"):
            assert avg.groups[group] == pytest.approx(row.reported[group], abs=0.05), row.label
    by_label = {r.label: r for r in rows}
    for ours, theirs in [("Linear", "Linear"), ("Full", "Full"), ("VPT (deep)", "VPT-deep")]:
        mean19 = row_averages(by_label[f"{ours} (DVPT Tab. 1)"], everything).tasks_mean
        assert mean19 == pytest.approx(by_label[f"{theirs} (V-PETL)"].reported["mean19"], abs=0.01)
    # With all 19 tasks shown, V-PETL rows fall back to the 19-task mean they published.
    dtl = row_averages(by_label["DTL (V-PETL)"], everything)
    assert dtl.tasks_mean == 74.58 and dtl.groups == dict.fromkeys(dtl.groups)


def test_best_configuration_for_serving(sqlite_url):
    store = _store(sqlite_url)
    best = best_configuration(store, "vtab/cifar")
    assert (best.method, best.trial_key, best.mean) == ("vpt", "1", pytest.approx(0.71))
    assert best.seeds == (0, 1) and best.std == pytest.approx(0.0141421, rel=1e-4)
    # The budget counts tunable parameters with the head, as the search's objective.
    assert best_configuration(store, "cifar", max_params=5999).trial_key == "0"
    assert best_configuration(store, "cifar", max_params=100).method == "linear"
    assert best_configuration(store, "cifar", max_params=99) is None
    assert best_configuration(store, "vtab/svhn") is None


def test_each_backbone_is_its_own_row(sqlite_url):
    store = _store(sqlite_url)
    bigger = {**SMOKE_BACKBONE.to_dict(), "img_size": 64}
    store.upsert_search("s-64", "vtab/cifar", "default", {}, bigger)
    store.upsert_trial("s-64", "0", number=0, method="vpt", config={"method": "vpt"},
                       status="completed", val_acc=0.9, tunable_params=10)  # fmt: skip
    store.upsert_evaluation("s-64", "0", seed=0, split="test", test_acc=0.99, metrics={})
    rows = [r for r in build_report(store).rows if r.label == "vpt"]
    assert [r.backbone for r in rows] == [
        "vit_tiny_patch16_224 (random init, 32 px)",
        "vit_tiny_patch16_224 (random init, 64 px)",
    ]
    # The 64 px row's 99% does not become the 32 px row's cifar cell (71%): never pooled.
    assert [r.cells["cifar"].acc for r in rows] == [pytest.approx(71.0), pytest.approx(99.0)]
