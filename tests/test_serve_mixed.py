"""One backbone pass for a batch of mixed tasks (issue 32, item 1-2): each sample's logits are
those of its own task's model alone, on the tiny ViT and the tiny Swin."""

from __future__ import annotations

import pytest
import torch

from autopetl.methods.io import WEIGHTS_FILE, file_sha256
from autopetl.serving.mixed import MixedTaskModel
from autopetl.serving.models import SharedBackbone

from .conftest import TINY, TINY_SWIN
from .test_serve_models import _normalise, _perturb, artifacts  # noqa: F401  (the fixture)


@pytest.fixture(scope="module")
def served(artifacts):  # noqa: F811
    import json

    from autopetl.methods.io import CONFIG_FILE

    init = json.loads((artifacts["vpt"][0] / CONFIG_FILE).read_text())["backbone_init"]
    shared = SharedBackbone(TINY.to_dict(), init)
    models = {
        variant: shared.load(variant, path, file_sha256(path / WEIGHTS_FILE))
        for variant, (path, _) in artifacts.items()
    }
    return shared, models


def _check(shared, chosen, per_task: int = 2, seed: int = 0) -> MixedTaskModel:
    mixed = MixedTaskModel(shared.base, [tm.model for tm in chosen]).eval()
    g = torch.Generator().manual_seed(seed)
    tasks = torch.arange(len(chosen)).repeat(per_task)
    tasks = tasks[torch.randperm(len(tasks), generator=g)]  # every order of tasks in a batch
    x = _normalise(torch.randint(0, 256, (len(tasks), 3, 32, 32), generator=g, dtype=torch.uint8))
    with torch.inference_mode():
        got = mixed(x, tasks)
        for i, tm in enumerate(chosen):
            rows = (tasks == i).nonzero().squeeze(1)
            alone = tm.model(x[rows])
            for row, expected in zip(rows.tolist(), alone, strict=True):
                assert got[row].shape == expected.shape, tm.task
                torch.testing.assert_close(got[row], expected, rtol=0, atol=1e-5, msg=tm.task)
    return mixed


def test_a_batch_of_every_method_gives_each_sample_its_own_tasks_logits(served) -> None:
    shared, models = served
    mixed = _check(shared, list(models.values()))
    # Methods that keep the backbone's token sequence share one pass; prompt methods (their own
    # forward_features) take one each, for now.
    # Every method shares the one pass (prompt methods padded and masked) but full, which trains
    # the embeddings every token starts from, and side-tuning, a network beside the backbone.
    own = {list(models)[i] for i in mixed.own_pass}
    assert own == {"full", "sidetune"}, own
    assert mixed.passes_per_batch == 3


@pytest.mark.parametrize(
    "variants",
    [("lora", "lora-all", "adapter", "linear"), ("bias", "partial-2", "lora", "mlp")],
)
def test_mixed_batches_of_methods_that_share_the_pass(served, variants) -> None:
    shared, models = served
    mixed = _check(shared, [models[v] for v in variants], per_task=3, seed=len(variants))
    assert mixed.passes_per_batch == 1


def test_the_frozen_maps_run_once_for_the_whole_batch(served) -> None:
    shared, models = served
    chosen = [models[v] for v in ("lora", "lora-all", "adapter", "linear")]
    mixed = MixedTaskModel(shared.base, [tm.model for tm in chosen]).eval()
    calls = []
    qkv = shared.base.blocks[0].attn.qkv  # the frozen Linear every LoRA wraps
    handle = qkv.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        x = _normalise(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8))
        with torch.inference_mode():
            mixed(x, torch.tensor([0, 1, 2, 3, 3, 2, 1, 0]))
    finally:
        handle.remove()
    assert calls == [8]  # one call, all eight samples of four tasks


def test_a_sample_of_no_task_is_refused(served) -> None:
    shared, models = served
    mixed = MixedTaskModel(shared.base, [models["lora"].model]).eval()
    with pytest.raises(ValueError, match=r"samples \[1\] name no task"):
        mixed(torch.zeros(2, 3, 32, 32), torch.tensor([0, 5]))


def test_the_serving_benchmark_compares_both_ways_in_one_run(tmp_path) -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "tasks.json"
    command = [sys.executable, "benchmarks/serve_tasks.py", "--quick", "--repeats", "1"]
    command += ["--tasks", "1,4", "--threads", "1", "--out", str(out)]
    run = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["one_pass_8_over_1"] > 0 and report["one_pass_8_over_1_shared_pass_set"] > 0
    shared = report["sets"]["shared_pass"]["rows"]
    # LoRA, adapter, linear, MLP head and BitFit share one pass, however many tasks.
    assert shared["4"]["passes_one_pass"] == 1 < shared["4"]["passes_per_task_way"]
    assert all(r["images_per_s_one_pass"] > 0 for r in shared.values())


def test_prompts_of_different_lengths_and_depths_share_one_pass_exactly() -> None:
    import copy

    from autopetl.methods import build_method
    from autopetl.methods.io import rebuildable_backbone

    base = rebuildable_backbone(TINY, 16).eval().requires_grad_(False)
    shared = {id(t): t for t in [*base.parameters(), *base.buffers()]}
    variants = [
        ("vpt", {"prompt_length": 1, "deep": False}),
        ("vpt", {"prompt_length": 10, "deep": True}),
        ("vpt", {"prompt_length": 3, "deep": True, "readout": "prompt_pool"}),
        ("dvpt", {"prompt_length": 5, "dynamic": "specific"}),
        ("lora", {}),
        ("linear", {}),
    ]
    models = []
    for i, (name, values) in enumerate(variants):
        net = copy.deepcopy(base, dict(shared))
        net.reset_classifier(4 + i)
        model = build_method(name, values).attach(net).eval()
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for _, p in model.tunable_named_parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        models.append(model)
    mixed = MixedTaskModel(base, models).eval()
    assert mixed.passes_per_batch == 1
    tasks = torch.tensor([5, 1, 0, 3, 2, 4, 1, 0, 3, 5, 2, 4])
    x = _normalise(torch.randint(0, 256, (len(tasks), 3, 32, 32), dtype=torch.uint8))
    with torch.inference_mode():
        got = mixed(x, tasks)
        for i, model in enumerate(models):
            rows = (tasks == i).nonzero().squeeze(1)
            for row, expected in zip(rows.tolist(), model(x[rows]), strict=True):
                torch.testing.assert_close(got[row], expected, rtol=0, atol=1e-5, msg=str(i))


# The methods that apply to a Swin, VPT also deep with the official Swin code's readout.
SWIN_VARIANTS = {
    "bias": {},
    "full": {},
    "linear": {},
    "vpt": {"prompt_length": 3, "deep": False},
    "vpt-deep": {"prompt_length": 2, "readout": "image_prompt_pool"},
}
# On a Swin, VPT's prompts sit inside every window (their own encode) and full shares no frozen
# tensor: a pass of their own. BitFit and the linear probe share the pass; BitFit's blocks run
# whole on its rows, since a block's window attention sees windows, not samples, as rows.
SWIN_OWN_PASS = {"full", "vpt", "vpt-deep"}


@pytest.fixture(scope="module")
def swin_served(tmp_path_factory):

    from autopetl.methods import build_method
    from autopetl.methods.io import backbone_init_record, rebuildable_backbone, save_tunable
    from autopetl.pipeline import attach

    base = rebuildable_backbone(TINY_SWIN, 16)
    init = backbone_init_record(TINY_SWIN, base)
    root = tmp_path_factory.mktemp("swin-arts")
    paths = {}
    for i, (variant, values) in enumerate(SWIN_VARIANTS.items()):
        classes = 16 if i % 2 == 0 else 5  # tasks with other class counts share the trunk
        base.reset_classifier(classes)
        method = build_method(variant.split("-")[0], values)
        model = attach(base, method, seed=i)
        _perturb(model, i)
        paths[variant] = save_tunable(
            model, method, TINY_SWIN.to_dict(), classes, root / variant, backbone_init=init
        )
    shared = SharedBackbone(TINY_SWIN.to_dict(), init)
    models = {v: shared.load(v, p, file_sha256(p / WEIGHTS_FILE)) for v, p in paths.items()}
    return shared, models


@pytest.mark.parametrize("variant", list(SWIN_VARIANTS))
def test_each_swin_method_alone_gives_each_sample_its_own_tasks_logits(
    swin_served, variant
) -> None:
    shared, models = swin_served
    mixed = _check(shared, [models[variant]], per_task=3)
    assert mixed.own_pass == ([0] if variant in SWIN_OWN_PASS else [])
    assert mixed.passes_per_batch == 1


def test_a_batch_of_every_swin_method_gives_each_sample_its_own_tasks_logits(swin_served) -> None:
    shared, models = swin_served
    mixed = _check(shared, list(models.values()), per_task=2, seed=1)
    own = {list(models)[i] for i in mixed.own_pass}
    assert own == SWIN_OWN_PASS, own
    assert mixed.passes_per_batch == 1 + len(SWIN_OWN_PASS)


def test_on_a_swin_bitfit_runs_its_blocks_whole_and_the_probe_the_frozen_ones(swin_served) -> None:
    shared, models = swin_served
    mixed = _check(shared, [models["linear"], models["bias"]], per_task=3, seed=2)
    assert mixed.passes_per_batch == 1
    calls = []
    qkv = shared.base.layers[0].blocks[0].attn.qkv  # the frozen window attention's
    handle = qkv.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        x = _normalise(torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8))
        with torch.inference_mode():
            mixed(x, torch.tensor([0, 1, 0, 1, 0]))
    finally:
        handle.remove()
    assert calls == [3 * 4]  # once, the probe's three images' four windows each
