"""Training-data scale (--train-fraction): nested seeded subsets of dSprites and FGVC training
sets, one search per fraction recorded with it, evaluate at the search's fraction, and
`report --by train_fraction` / the dashboard laying accuracy out against it."""

from __future__ import annotations

import time

import numpy as np
import pytest

from autopetl.errors import ConfigError
from autopetl.evaluation import ConfigurationResult
from autopetl.scaling import ScaleError, scale_table, to_csv, to_markdown
from autopetl.tasks import dsprites, get_task, load_split
from autopetl.tasks.fgvc import read_fgvc_split
from autopetl.tasks.scale import check_scalable, parse_fractions, subset_size
from tests.test_fgvc import _make


def test_fractions_parse_sorted_and_bad_ones_say_why():
    assert parse_fractions("0.4,0.1, 0.2,0.1") == [0.1, 0.2, 0.4]
    assert parse_fractions("1") == [1.0]
    for bad, why in (("0", "not in"), ("1.5", "not in"), ("-0.1", "not in"), ("ten", "not a number"), ("nan", "not in")):  # fmt: skip
        with pytest.raises(ConfigError, match=why):
            parse_fractions(bad)


def test_dsprites_fractions_are_nested_and_contain_train800():
    small = dsprites.split_indices("train800", train_fraction=0.002)
    large = dsprites.split_indices("train800", train_fraction=0.005)
    assert len(small) == subset_size(dsprites.N_TRAIN, 0.002) == 1180
    assert len(large) == 2949
    assert np.array_equal(large[: len(small)], small)  # the smaller subset is inside the larger
    assert np.array_equal(small[:800], dsprites.split_indices("train800"))
    # Validation and test do not scale: selection and the final test stay the same images.
    final = dsprites.split_indices("train800val200", train_fraction=0.002)
    assert np.array_equal(final, np.concatenate([small, dsprites.split_indices("val200")]))
    assert not set(small) & set(dsprites.split_indices("val200"))


def test_fgvc_fractions_are_nested_and_leave_val_and_test_alone(tmp_path):
    root = _make(tmp_path, "fgvc/cub")  # 200 training images, one per class
    task = get_task("fgvc/cub")
    ten = read_fgvc_split(root, task, "train800", 0.1)
    forty = read_fgvc_split(root, task, "train800", 0.4)
    assert (len(ten), len(forty)) == (20, 80)
    assert forty[:20] == ten
    # The order does not follow the file: not the first 20 classes of train.json.
    assert sorted(label for _, label in ten) != list(range(20))
    assert read_fgvc_split(root, task, "train800", 1.0) != read_fgvc_split(root, task, "train800")
    assert sorted(read_fgvc_split(root, task, "train800", 1.0)) == sorted(read_fgvc_split(root, task, "train800"))  # fmt: skip
    final = read_fgvc_split(root, task, "train800val200", 0.1)
    assert final == ten + read_fgvc_split(root, task, "val200")
    sizes = [
        len(load_split(task, split, img_size=8, data_root=root, train_fraction=0.1, cache_dir=tmp_path / "c"))
        for split in ("train800", "val200", "test")
    ]  # fmt: skip
    assert sizes == [20, 6, 9]


def test_a_vtab_folder_has_no_data_scale():
    with pytest.raises(ConfigError, match=r"vtab/cifar is a VTAB-1k folder \(800 training"):
        check_scalable(get_task("vtab/cifar"))
    check_scalable(get_task("vtab/dsprites_loc"))
    check_scalable(get_task("fgvc/nabirds"))


def _exit_code(args: list[str]) -> int:
    from autopetl.cli import main

    try:
        return main(args)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code or 0)


def test_bad_fractions_fail_in_the_cli_before_ray(capsys, sqlite_url):
    for args, says in (
        (["--task", "vtab/cifar", "--train-fraction", "0.1"], "VTAB-1k folder"),
        (["--task", "vtab/dsprites_loc", "--train-fraction", "2"], "not in (0, 1]"),
    ):
        started = time.perf_counter()
        assert _exit_code(["search", *args, "--smoke-test", "--db", sqlite_url]) == 2
        assert time.perf_counter() - started < 10
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, err


def _result(task: str, method: str, acc: float, fraction: float | None, backbone: str = "b") -> ConfigurationResult:  # fmt: skip
    return ConfigurationResult(
        search_name=f"{task}-{method}-{fraction}-{backbone}",
        task=task,
        trial_key="0",
        method=method,
        config={"method": method},
        backbone={"name": backbone, "weights": "none", "img_size": 32, "overrides": {}},
        seeds=(0,),
        test_accs=(acc,),
        mean=acc,
        std=0.0,
        tunable_params=100,
        tunable_params_without_head=10,
        train_fraction=fraction,
    )


def test_the_scale_table_averages_the_same_tasks_in_every_cell():
    results = [
        _result("vtab/dsprites_loc", "vpt", 0.5, 0.01),
        _result("vtab/dsprites_loc", "vpt", 0.3, 0.01),  # a worse configuration: not chosen
        _result("vtab/dsprites_loc", "vpt", 0.7, 0.1),
        _result("fgvc/cub", "vpt", 0.2, 0.01),
        _result("fgvc/cub", "vpt", 0.4, None),  # FGVC without a fraction: all of train.json
        _result("vtab/dsprites_loc", "vpt", 0.9, None),  # VTAB-1k: not a point of this scale
        _result("vtab/dsprites_loc", "lora", 0.6, 0.1),
    ]
    table = scale_table(results, "train_fraction")
    assert table.values == (0.01, 0.1, 1.0)
    assert [t.name for t in table.tasks] == ["vtab/dsprites_loc", "fgvc/cub"]
    assert table.rows["vpt"][0.01].acc == pytest.approx(35.0)  # (50 + 20) / 2
    assert 0.1 not in table.rows["vpt"]  # no cub result at 10%: no cell, not a 1-task mean
    one = scale_table(results, "train_fraction", [get_task("vtab/dsprites_loc")])
    assert one.rows["vpt"][0.1].acc == pytest.approx(70.0) and one.rows["lora"][0.1].acc == pytest.approx(60.0)  # fmt: skip
    assert "| vpt | 50.0 | 70.0 |" in to_markdown(one)
    assert "lora,0.1,60.00,vtab/dsprites_loc" in to_csv(one)


def test_the_backbone_table_keeps_each_tasks_own_protocol():
    results = [
        _result("vtab/dsprites_loc", "vpt", 0.5, None, "vit_tiny"),
        _result("vtab/dsprites_loc", "vpt", 0.6, None, "vit_small"),
        _result("vtab/dsprites_loc", "vpt", 0.99, 0.1, "vit_small"),  # a data-scale search
    ]
    table = scale_table(results, "backbone")
    assert len(table.values) == 2
    assert sorted(c.acc for c in table.rows["vpt"].values()) == pytest.approx([50.0, 60.0])
    with pytest.raises(ScaleError, match="--train-fraction"):
        scale_table(results[:2], "train_fraction")


@pytest.mark.slow
def test_a_data_scale_study_from_search_to_report(ray_session, tmp_path, sqlite_url, capsys):
    from autopetl.cli import main
    from autopetl.store import open_store

    common = ["--db", sqlite_url]
    space = tmp_path / "linear.yaml"
    space.write_text("methods: {linear: {}}\ntrain: {lr: 0.1}\n")
    search = ["search", "--task", "vtab/dsprites_loc", "--budget", "1", "--epochs", "1",
              "--backbone", "vit_tiny_patch16_224", "--weights", "none", "--img-size", "16",
              "--space", str(space), "--storage", str(tmp_path / "ray")]  # fmt: skip
    assert main([*search, "--train-fraction", "0.002,0.001", "--name", "scale", *common]) == 0
    store = open_store(sqlite_url)
    assert {s.name: s.options.get("train_fraction") for s in store.list_searches()} == {
        "scale-frac0.001": 0.001,
        "scale-frac0.002": 0.002,
    }
    assert len(store.trials("scale-frac0.002")) == 1
    assert "trains on 1,180 images, 0.2% of vtab/dsprites_loc" in capsys.readouterr().err
    # A search resumes only at its own data scale.
    assert main([*search, "--train-fraction", "0.005", "--name", "scale-frac0.002", *common]) == 2
    assert "--train-fraction 0.002 (now --train-fraction 0.005)" in capsys.readouterr().err
    for name, images in (("scale-frac0.001", 590), ("scale-frac0.002", 1180)):
        assert main(["evaluate", "--search", name, "--best", "--seeds", "1", "--in-process",
                     "--test-size", "64", "--artifacts", str(tmp_path / "art"), *common]) == 0  # fmt: skip
        [ev] = store.evaluations(name)
        assert ev.metrics["train_images"] == images + 200  # the fraction, then val200
        assert ev.metrics["train_fraction"] == float(name.removeprefix("scale-frac"))
    assert "report --task vtab/dsprites_loc --by train_fraction" in capsys.readouterr().out
    assert main(["report", "--by", "train_fraction", "--format", "csv", *common]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "method,train_fraction,test_acc,tasks"
    assert [line.split(",")[:2] for line in lines[1:]] == [["linear", "0.001"], ["linear", "0.002"]]
    # The VTAB-1k table leaves them out, and says where they are.
    assert main(["report", *common]) == 2
    assert "report --by train_fraction" in capsys.readouterr().err
