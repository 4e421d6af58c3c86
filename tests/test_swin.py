"""VPT on a Swin (prompts in every window), the methods that apply to one, and the refusals of
those that do not: in the API, in ``autopetl train`` and in ``autopetl search`` before Ray."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from autopetl.backbones import BackboneSpec, build_backbone, family_of, input_stats
from autopetl.cli import main
from autopetl.errors import ConfigError
from autopetl.methods import METHODS, build_method
from autopetl.methods._swin_prompting import SwinPromptedModel, prompted_block, swin_blocks
from autopetl.methods.registry import methods_for
from autopetl.pipeline import attach
from autopetl.tasks import SplitData
from autopetl.training import TrainConfig, train

from .conftest import TINY_SWIN

SWIN_ARGS = ["--backbone", "swin_tiny_patch4_window7_224", "--weights", "none", "--img-size", "32"]


def _images(n: int = 3, side: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


class _NoPrompts(SwinPromptedModel):
    """Every block gets zero prompts: the prompted path with nothing to prompt."""

    def prompts_for(self, block: int) -> torch.Tensor:
        return torch.zeros(0, swin_blocks(self.backbone)[block][1].dim)


def _set_fused(model: torch.nn.Module, fused: bool) -> None:
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "explicit"])
@pytest.mark.parametrize("side", [32, 40], ids=["windows-fit", "windows-padded"])
def test_the_prompted_path_without_prompts_is_timm_swin(fused: bool, side: int) -> None:
    # At 40 px the 10 x 10 patch grid is padded to 12 x 12 for 4 x 4 windows, and stage 1's
    # 5 x 5 grid to 8 x 8: the padding, the shift and its mask all run.
    torch.manual_seed(0)
    swin = build_backbone(BackboneSpec(**{**TINY_SWIN.to_dict(), "img_size": side}), 5).eval()
    _set_fused(swin, fused)
    x = _images(side=side)
    with torch.no_grad():
        torch.testing.assert_close(_NoPrompts(swin, 0.0, "cls")(x), swin(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("block", [0, 1], ids=["plain", "shifted"])
def test_a_prompted_block_keeps_each_image_to_its_own_prompts(block, tiny_swin_backbone) -> None:
    # The official Swin VPT code hands window w of image i the prompts of image w mod B (window-
    # major against batch-major windows); here a batch of images with their own prompts gives each
    # image what it gets alone. Stage 0 has four windows an image; block 1 is the shifted one.
    swin_block = swin_blocks(tiny_swin_backbone)[block][1].eval()
    g = torch.Generator().manual_seed(4)
    x, prompts = torch.randn(3, 8, 8, 16, generator=g), torch.randn(3, 5, 16, generator=g)
    with torch.no_grad():
        image, prompt_out = prompted_block(swin_block, x, prompts)
        for i in range(3):
            alone = prompted_block(swin_block, x[i : i + 1], prompts[i : i + 1])
            torch.testing.assert_close(image[i : i + 1], alone[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(prompt_out[i : i + 1], alone[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "values",
    [{"deep": True}, {"deep": False, "readout": "image_prompt_pool"}, {"readout": "prompt_pool"}],
    ids=["deep", "shallow-image_prompt_pool", "deep-prompt_pool"],
)
def test_each_image_gets_the_output_it_gets_alone(values, tiny_swin_backbone) -> None:
    model = attach(tiny_swin_backbone, build_method("vpt", {"prompt_length": 3, **values}), seed=0)
    with torch.no_grad():
        for _, p in model.tunable_named_parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    model.eval()
    x = _images(4)
    with torch.no_grad():
        batch = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, alone, rtol=1e-4, atol=1e-5)


def test_prompts_change_the_output_and_cross_patch_merging(tiny_swin_backbone) -> None:
    x = _images()
    probe = attach(tiny_swin_backbone, build_method("linear"), seed=3).eval()
    shallow = attach(tiny_swin_backbone, build_method("vpt", {"deep": False}), seed=3).eval()
    with torch.no_grad():
        tokens, prompts = shallow.encode(x)
        assert not torch.allclose(shallow(x), probe(x))
    # Shallow prompts enter at stage 0's width (16) and leave the merging layer at stage 1's (32).
    assert tokens.shape == (3, 4, 4, 32) and prompts is not None and prompts.shape == (3, 10, 32)


def test_shallow_and_deep_prompts_are_counted_per_stage_width(tiny_swin_backbone) -> None:
    head = 32 * 5 + 5  # the last stage's width, 5 classes
    shallow = attach(tiny_swin_backbone, build_method("vpt", {"deep": False}), seed=0)
    deep = attach(tiny_swin_backbone, build_method("vpt", {"deep": True}), seed=0)
    last = attach(
        tiny_swin_backbone, build_method("vpt", {"deep_layers": 1, "deep_from": "last"}), seed=0
    )
    assert shallow.num_tunable() == 10 * 16 + head
    assert deep.num_tunable() == 10 * (16 + 16 + 32 + 32) + head  # two blocks a stage
    assert last.num_tunable() == 10 * 32 + head
    assert [tuple(p.shape) for p in deep.prompts] == [(2, 10, 16), (2, 10, 32)]


@pytest.mark.parametrize("name", sorted(set(METHODS) - set(methods_for("swin"))))
def test_a_method_written_for_a_vit_is_refused_on_a_swin_in_one_line(
    name, tiny_swin_backbone
) -> None:
    with pytest.raises(ConfigError) as info:
        attach(tiny_swin_backbone, build_method(name), seed=0)
    said = str(info.value)
    assert "\n" not in said and f"method {name} does not apply to a swin backbone" in said
    assert said.endswith(", ".join(sorted(methods_for("swin"))))
    assert sorted(methods_for("swin")) == ["bias", "full", "linear", "ssf", "vpt"]


def test_vpt_added_to_every_token_is_refused_on_a_swin(tiny_swin_backbone) -> None:
    with pytest.raises(ConfigError, match=r"location add .* on a Swin use location prepend"):
        attach(tiny_swin_backbone, build_method("vpt", {"location": "add"}), seed=0)


def test_a_swin_weights_file_loads_every_weight(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = build_backbone(TINY_SWIN, 1000)
    assert family_of(source) == "swin"
    state = source.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "swin.safetensors"))
    spec = BackboneSpec(**{**TINY_SWIN.to_dict(), "weights": str(tmp_path / "swin.safetensors")})
    loaded = build_backbone(spec, 5).state_dict()
    trunk = [k for k in state if not k.startswith("head.")]
    assert trunk and all(torch.equal(loaded[k], state[k]) for k in trunk)
    assert loaded["head.fc.weight"].shape == (5, 32)  # the task's own head


def _toy_data(n: int, seed: int) -> SplitData:
    """Dim noise vs bright noise, which a random-init Swin's mean of image tokens can see."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.randint(0, 100, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return SplitData(images + (labels * 120).to(torch.uint8).view(-1, 1, 1, 1), labels)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_vpt_on_a_swin_trains(precision: str) -> None:
    torch.manual_seed(0)
    swin = build_backbone(TINY_SWIN, 2)
    model = attach(swin, build_method("vpt", {"prompt_length": 4}), seed=0)
    mean, std = input_stats(swin)
    config = TrainConfig(epochs=3, batch_size=32, lr=3e-2, seed=0, precision=precision)
    epochs: list = []
    data = (_toy_data(128, 0), _toy_data(64, 1))
    result = train(model, *data, config, mean=mean, std=std, on_epoch=epochs.append)
    assert [e.epoch for e in epochs] == [1, 2, 3] and all(
        math.isfinite(e.train_loss) for e in epochs
    )
    assert result.best_val_acc > 0.75  # chance is 0.5


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


@pytest.mark.parametrize(
    ("space", "said"),
    [
        ("default", "searches dvpt, adapter, lora, adaptformer, fact, dora, which do not apply"),
        ("vpt_design", "has vpt.location add, which swin_tiny_patch4_window7_224 cannot run"),
    ],
)
def test_search_refuses_a_space_a_swin_cannot_run_before_ray(
    space, said, capsys, tmp_path, monkeypatch
) -> None:
    from autopetl.search import cluster

    connected: list[object] = []  # a spy on the one way the driver reaches Ray; never reached
    monkeypatch.setattr(cluster, "connect", lambda *a, **k: connected.append(a))
    start = time.perf_counter()
    argv = ["search", "--task", "vtab/dsprites_loc", "--smoke-test", "--space", space, *SWIN_ARGS]
    assert main([*argv, "--db", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    line = _one_error(capsys)
    assert said in line and "--space swin" in line
    assert not connected and time.perf_counter() - start < 30


def test_train_refuses_lora_on_a_swin_in_one_line(capsys, tmp_path) -> None:
    argv = ["train", "--task", "vtab/dsprites_loc", "--method", "lora", "--smoke-test", *SWIN_ARGS]
    assert main([*argv, "--db", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    assert "method lora does not apply to a swin backbone" in _one_error(capsys)


def test_the_linear_probe_on_a_swin_trains_its_fc_on_cached_features() -> None:
    # Without drop-path the frozen Swin's pooled features are computed once; its head is timm's
    # pool -> dropout -> fc, so the fc alone trains on them, and the whole model agrees after.
    from autopetl.training import _cacheable_head, evaluate

    spec = BackboneSpec(
        **{**TINY_SWIN.to_dict(), "overrides": {**TINY_SWIN.overrides, "drop_path_rate": 0.0}}
    )
    torch.manual_seed(0)
    swin = build_backbone(spec, 2)
    model = attach(swin, build_method("linear"), seed=0)
    assert _cacheable_head(model) is model.backbone.head.fc
    mean, std = input_stats(swin)
    config = TrainConfig(epochs=2, batch_size=32, lr=0.1, seed=0, precision="fp32")
    val = _toy_data(64, 1)
    result = train(model, _toy_data(128, 0), val, config, mean=mean, std=std)
    assert result.last_val_acc > 0.75
    assert evaluate(model, val, mean, std, precision="fp32") == result.last_val_acc
