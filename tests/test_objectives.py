"""Objectives as data (autopetl/objectives.py): parsing, measuring, n-objective fronts and
hypervolume, and a real three-objective smoke search whose front is non-dominated in 3-D."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from autopetl.errors import ConfigError
from autopetl.objectives import MEASURES, OBJECTIVES, measure, parse_objectives
from autopetl.store import open_store
from autopetl.store.queries import front, hypervolume, hypervolume_of

THREE = "val_acc,tunable_params,inference_gflops"


def test_objectives_parse_with_clear_errors() -> None:
    assert [o.name for o in parse_objectives(THREE)] == THREE.split(",")
    for bad, message in [
        ("val_acc,latency", "unknown objective 'latency'"),
        ("val_acc,tunable_params,tunable_params", "named twice"),
        ("tunable_params,val_acc", "start with val_acc"),
        ("val_acc", "start with val_acc and name at least one cost"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_objectives(bad)


def test_prompts_cost_inference_flops_and_lora_barely_does(tiny_backbone) -> None:
    import autopetl

    img = tiny_backbone.patch_embed.img_size[0]
    linear = measure(autopetl.attach(tiny_backbone, "linear"), img)
    lora = measure(autopetl.attach(tiny_backbone, "lora", rank=2), img)
    deep = measure(autopetl.attach(tiny_backbone, "vpt", prompt_length=32, deep=True), img)
    assert set(linear) == {"tunable_params", *MEASURES}
    # 16 patches + [CLS] -> 49 tokens: the blocks' matmuls scale with the tokens (and attention
    # with their square), so 32 deep prompts cost well over twice the plain forward.
    assert deep["inference_gflops"] > 2.5 * linear["inference_gflops"] > 0
    assert linear["inference_gflops"] < lora["inference_gflops"] < 1.1 * linear["inference_gflops"]


def test_n_objective_front_and_hypervolume_agree_with_brute_force() -> None:
    rng = random.Random(0)
    two = [OBJECTIVES["val_acc"], OBJECTIVES["tunable_params"]]
    three = [*two, OBJECTIVES["inference_gflops"]]
    points = [(rng.random(), rng.randint(1, 10**6), rng.uniform(1, 10)) for _ in range(60)]
    kept = front(points, points, three)

    def dominated(p: tuple, q: tuple) -> bool:  # q dominates p
        better = (q[0] >= p[0], q[1] <= p[1], q[2] <= p[2])
        return all(better) and q != p

    assert set(kept) == {p for p in points if not any(dominated(p, q) for q in points)}
    pairs = [p[:2] for p in points]
    assert math.isclose(
        hypervolume_of(pairs, two, (0.0, 2e6)), hypervolume(pairs, (0.0, 2e6)), rel_tol=1e-12
    )
    # 3-D: a Monte Carlo estimate of the dominated box fraction brackets the exact volume.
    ref = (0.0, 2e6, 11.0)
    exact = hypervolume_of(points, three, ref)
    box = [(0.0, 1.0), (0.0, math.log10(1 + 2e6)), (0.0, 11.0)]
    hits, n = 0, 20_000
    minimised = [(-p[0], math.log10(1 + p[1]), p[2]) for p in points]
    for _ in range(n):
        s = (-rng.uniform(*box[0]), rng.uniform(*box[1]), rng.uniform(*box[2]))
        hits += any(all(a <= b for a, b in zip(m, s, strict=True)) for m in minimised)
    volume = math.prod(hi - lo for lo, hi in box)
    assert abs(exact - volume * hits / n) < 0.03 * volume


@pytest.mark.slow
def test_a_three_objective_smoke_search_has_a_3d_non_dominated_front(
    ray_session, tmp_path, sqlite_url, capsys
) -> None:
    from autopetl.cli import main

    args = ["search", "--task", "vtab/dsprites_loc", "--budget", "8", "--smoke-test"]
    args += ["--objectives", THREE, "--db", sqlite_url, "--name", "three"]
    assert main([*args, "--storage", str(tmp_path / "ray")]) == 0
    store = open_store(sqlite_url)
    search = store.get_search("three")
    assert search.options["objectives"] == THREE.split(",")
    trials = store.trials("three")
    assert len([t for t in trials if t.status in ("completed", "pruned")]) == 8
    done = [t for t in trials if t.status == "completed"]
    assert all(t.measures["inference_gflops"] > 0 for t in done)
    pareto = store.pareto_front("three")
    assert pareto
    values = {
        t.trial_key: (t.val_acc, t.tunable_params, t.measures["inference_gflops"]) for t in done
    }
    for p, q in itertools.product(pareto, done):
        a, b = values[p.trial_key], values[q.trial_key]
        assert not (b[0] >= a[0] and b[1] <= a[1] and b[2] <= a[2] and b != a), (p, q)
    # Every completed trial off the front is dominated by one on it.
    on = {t.trial_key for t in pareto}
    for t in done:
        if t.trial_key not in on:
            v = values[t.trial_key]
            assert any(
                values[k][0] >= v[0] and values[k][1] <= v[1] and values[k][2] <= v[2] for k in on
            )
    assert store.hypervolume("three") > 0
    out = capsys.readouterr().out
    assert "inference GFLOPs" in out and "Pareto front of three" in out
    # Resuming it with other objectives is refused in one line, before Ray is touched.
    assert main(["search", "--task", "vtab/dsprites_loc", "--budget", "8", "--smoke-test",
                 "--db", sqlite_url, "--name", "three"]) == 2  # fmt: skip
    assert "--objectives val_acc,tunable_params,inference_gflops" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("method", "values", "folds"),
    [
        ("lora", {"targets": ["q", "v", "fc1"]}, True),
        ("dora", {}, True),
        ("ssf", {}, True),
        ("fact", {"form": "tk"}, True),
        ("adapter", {}, False),
        ("adaptformer", {}, False),
        ("vpt", {"prompt_length": 4}, False),
    ],
)
def test_folded_cost_is_the_backbones_where_a_method_merges_into_it(
    tiny_backbone, method, values, folds
) -> None:
    # issue 33, item 7: SSF, LoRA, DoRA and FacT merged into the frozen weights cost what the
    # backbone costs; adapters and prompts cost what they serve.
    import torch

    import autopetl

    img = tiny_backbone.patch_embed.img_size[0]
    probe = measure(autopetl.attach(tiny_backbone, "linear"), img)
    model = autopetl.attach(tiny_backbone, method, seed=0, **values)
    x = torch.randn(2, 3, img, img, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model.eval()(x)
    got = measure(model, img)
    # Served, each costs more than the backbone but SSF, whose scales and shifts are elementwise
    # work (not counted: the convention of torch's counter, fvcore and timm).
    assert got["inference_gflops"] > probe["inference_gflops"] or method == "ssf"
    if folds:
        assert got["folded_gflops"] == pytest.approx(probe["inference_gflops"], rel=1e-12)
    else:
        assert got["folded_gflops"] == got["inference_gflops"]
    with torch.no_grad():  # measuring swapped the wrappers out and back: the model is intact
        assert torch.equal(model.eval()(x), before)
