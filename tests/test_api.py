"""The Python API: the README's example runs as printed, and the API's errors are clear."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest
import timm
import torch

import autopetl
from autopetl.errors import AutopetlError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_example_runs(tmp_path, monkeypatch) -> None:
    block = re.search(r"<!-- python-api -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README.md lost its python-api example"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(lines) <= 12, "the example is meant to be about ten lines"
    script = tmp_path / "example.py"
    script.write_text(block.group(1))
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script))
    assert (tmp_path / "my-lora" / "tunable.safetensors").is_file()
    assert (tmp_path / "my-lora" / "method.json").is_file()


def test_attach_freezes_a_copy_and_load_restores_the_weights(tmp_path) -> None:
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=3)
    before = {n: p.clone() for n, p in vit.named_parameters()}
    model = autopetl.attach(vit, "vpt", prompt_length=5, deep=True, num_classes=7, seed=1)
    assert vit.num_classes == 3 and all(p.requires_grad for p in vit.parameters())
    assert all(torch.equal(p, before[n]) for n, p in vit.named_parameters())
    d, blocks = vit.embed_dim, len(vit.blocks)
    assert model.num_tunable(include_head=False) == 5 * d * blocks
    with torch.no_grad():
        model.prompts.add_(0.5)
    autopetl.save(model, tmp_path / "vpt", weights="none")
    fresh = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=3)
    fresh.load_state_dict(vit.state_dict())
    again = autopetl.load(tmp_path / "vpt", fresh)
    x = torch.randn(2, 3, 32, 32)
    model.eval(), again.eval()
    assert torch.allclose(model(x), again(x), atol=1e-6)
    assert set(autopetl.list_methods()) >= {"vpt", "dvpt", "lora", "adapter", "linear"}
    assert {"rank", "alpha", "targets"} <= set(autopetl.list_methods()["lora"])


def test_bad_input_is_a_clear_error() -> None:
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=3)
    with pytest.raises(AutopetlError, match="unknown method 'lorra'"):
        autopetl.attach(vit, "lorra")
    with pytest.raises(AutopetlError, match="rnak"):
        autopetl.attach(vit, "lora", rnak=4)
    with pytest.raises(TypeError, match="VisionTransformer"):
        autopetl.attach(torch.nn.Linear(2, 2), "lora")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"autopetl\.attach"):
        autopetl.save(torch.nn.Linear(2, 2), "x")  # type: ignore[arg-type]
