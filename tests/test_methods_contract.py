"""One contract, every method: each registered PETL method (and a few config variants) must
train only its tunable parameters, leave the frozen backbone bit-identical, count its parameters
as its closed form says, round-trip its config through JSON and its weights through an artifact,
on a tiny ViT, a tiny ViT with registers, and (for the methods that apply to one) a tiny Swin.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from autopetl.methods import METHODS, PetlModel, build_method
from autopetl.methods.io import load_tunable, save_tunable
from autopetl.pipeline import attach

from .conftest import TINY, TINY_REG, TINY_SWIN

# (method, config values): every registered method with its defaults, then variants.
VARIANTS: list[tuple[str, dict]] = [
    ("vpt", {"deep": False, "prompt_length": 3}),
    ("vpt", {"deep": True, "dropout": 0.1}),
    ("vpt", {"location": "add", "deep_layers": 2}),
    ("vpt", {"deep_layers": 2, "deep_from": "last", "readout": "prompt_pool"}),
    ("vpt", {"deep": False, "readout": "image_prompt_pool"}),
    ("vpt", {"location": "add", "deep": False, "readout": "image_pool"}),
    ("dvpt", {"dynamic": "specific", "prompt_length": 4}),
    ("dvpt", {"meta_input": "cls", "depth": 2}),
    ("dvpt", {"deep": False, "depth": 6, "hidden": 16}),
    ("lora", {"targets": ["k", "o", "fc1", "fc2"], "rank": 2, "alpha": 4}),
    ("lora", {"targets": ["q", "k", "v"], "dropout": 0.1}),
    ("adapter", {"placement": "sequential", "dim": 4, "scale": 1.0}),
    ("partial", {"k": 2}),
    ("mlp", {"layers": 3, "hidden": 32}),
    ("mlp", {"layers": 1}),
    ("sidetune", {"channels": 4, "convs": 2}),
    ("adaptformer", {"dim": 4, "blocks": [0, 2]}),
    ("ssf", {"init": "identity"}),
    ("fact", {"form": "tk", "rank": 4}),
    ("dora", {"targets": ["q", "o", "fc2"], "rank": 2, "dropout": 0.0}),
]
CASES = [(name, {}) for name in sorted(METHODS)] + VARIANTS


def _case_id(case: tuple[str, dict]) -> str:
    name, values = case
    return name + "".join(f"-{k}={v}" for k, v in values.items()).replace(" ", "")


# The tiny backbones, by test id: (spec, family, the conftest fixture that builds it).
BACKBONES = {
    "tiny": (TINY, "vit", "tiny_backbone"),
    "tiny_reg": (TINY_REG, "vit", "tiny_reg_backbone"),
    "tiny_swin": (TINY_SWIN, "swin", "tiny_swin_backbone"),
}


def _applies(case: tuple[str, dict], family: str) -> bool:
    """Whether the case is a configuration for that family (test_swin checks the refusals)."""
    name, values = case
    return family in METHODS[name].families and not (
        family == "swin" and values.get("location") == "add"
    )


def on_backbones(cases: list[tuple[str, dict]]) -> list:
    """Each case on each tiny backbone it applies to, as (case, backbone id) parameters."""
    return [
        pytest.param(case, key, id=f"{_case_id(case)}-{key}")
        for case in cases
        for key, (_, family, _) in BACKBONES.items()
        if _applies(case, family)
    ]


@pytest.fixture
def spec_and_backbone(request: pytest.FixtureRequest, backbone_id: str):
    spec, _, fixture = BACKBONES[backbone_id]
    return spec, request.getfixturevalue(fixture)


def _images(backbone: VisionTransformer, n: int = 3, seed: int = 1) -> torch.Tensor:
    size = backbone.patch_embed.img_size
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def _model(backbone: VisionTransformer, case: tuple[str, dict], seed: int = 0) -> PetlModel:
    return attach(backbone, build_method(*case), seed=seed)


def test_every_method_module_registers_its_method() -> None:
    # CASES is built from the registry, so the registry itself is checked against the files: a
    # method module that forgot to register (or a registered name without a module) fails here.
    folder = Path(__file__).resolve().parents[1] / "autopetl" / "methods"
    not_methods = {
        "__init__",
        "base",
        "io",
        "artifact_meta",
        "registry",
        "_prompting",
        "_swin_prompting",
    }
    modules = {p.stem for p in folder.glob("*.py")} - not_methods
    assert modules == {type(build_method(name)).__module__.rsplit(".", 1)[1] for name in METHODS}
    assert set(METHODS) == {
        "linear", "full", "vpt", "dvpt", "adapter", "lora", "bias", "partial", "mlp", "sidetune",
        "adaptformer", "ssf", "fact", "dora",
    }  # fmt: skip


@pytest.mark.parametrize(("case", "backbone_id"), on_backbones(CASES))
def test_only_tunable_parameters_train(case, spec_and_backbone) -> None:
    _, backbone = spec_and_backbone
    model = _model(backbone, case)
    tunable = dict(model.tunable_named_parameters())
    assert tunable, "every method trains something"
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = {n: b.clone() for n, b in model.named_buffers()}

    model.train()
    optimizer = torch.optim.SGD(tunable.values(), lr=0.5)
    for _ in range(2):  # two steps: zero-initialised B or up matrices only move the rest later
        optimizer.zero_grad()
        logits = model(_images(backbone))
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
        for name, param in model.named_parameters():
            if param.requires_grad:
                assert param.grad is not None, f"{name} is tunable but got no gradient"
            else:
                assert param.grad is None, f"frozen {name} got a gradient"
        optimizer.step()

    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), f"frozen {name} changed"
    for name, buf in model.named_buffers():
        assert torch.equal(buf, buffers[name]), f"buffer {name} changed"
    # The shared backbone the model was copied from is untouched too.
    assert all(not p.requires_grad for p in backbone.parameters())


def _backbone_state(backbone: VisionTransformer) -> dict[str, object]:
    """Everything of the backbone but its head: module objects, tensors, requires_grad flags."""
    state: dict[str, object] = {}
    for name, module in backbone.named_modules():
        if name != "head" and not name.startswith("head."):
            state[f"module {name}"] = module
    for name, t in [*backbone.named_parameters(), *backbone.named_buffers()]:
        if not name.startswith("head."):
            state[f"tensor {name}"] = (t.detach().clone(), t.requires_grad)
    return state


def _same(a: dict[str, object], b: dict[str, object]) -> list[str]:
    def equal(x: object, y: object) -> bool:
        if isinstance(x, tuple) and isinstance(y, tuple):
            return torch.equal(x[0], y[0]) and x[1] == y[1]
        return x is y

    return [k for k in a.keys() | b.keys() if k not in a or k not in b or not equal(a[k], b[k])]


SHARING_CASES = [c for c in CASES if not build_method(*c).changes_backbone]


def test_methods_that_share_the_backbone_are_declared() -> None:
    assert {name for name, _ in SHARING_CASES} == {"linear", "mlp", "vpt", "dvpt", "sidetune"}


@pytest.mark.parametrize(("case", "backbone_id"), on_backbones(SHARING_CASES))
def test_changes_backbone_false_is_true_to_its_word(case, spec_and_backbone) -> None:
    """Attached without a copy and trained, the backbone (head aside) is the same objects with
    the same values, so the next trial of a search worker can use it as it is."""
    _, backbone = spec_and_backbone
    before = _backbone_state(backbone)
    for seed in (0, 1):  # two trials in a row on the one backbone
        model = attach(backbone, build_method(*case), seed=seed, copy_backbone=False)
        assert model.backbone is backbone
        tunable = [p for _, p in model.tunable_named_parameters()]
        optimizer = torch.optim.SGD(tunable, lr=0.5)
        model.train()
        for _ in range(2):
            optimizer.zero_grad()
            logits = model(_images(backbone))
            torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
            optimizer.step()
        assert not _same(before, _backbone_state(backbone))
    # A fresh attach gives the same start as on a copy: the last trial's head is not inherited.
    shared = attach(backbone, build_method(*case), seed=3, copy_backbone=False).eval()
    copied = attach(copy.deepcopy(backbone), build_method(*case), seed=3).eval()
    with torch.no_grad():
        assert torch.equal(shared(_images(backbone)), copied(_images(backbone)))


@pytest.mark.parametrize(("case", "backbone_id"), on_backbones(CASES))
def test_tunable_count_matches_closed_form(case, spec_and_backbone) -> None:
    _, backbone = spec_and_backbone
    method = build_method(*case)
    model = attach(backbone, method, seed=0)
    assert model.num_tunable() == method.closed_form_params(model.backbone)
    head = sum(p.numel() for p in model.backbone.head.parameters())
    assert model.num_tunable(include_head=False) == model.num_tunable() - head


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_config_round_trips_through_json(case) -> None:
    name, values = case
    method = build_method(name, values)
    text = json.dumps(method.config.to_dict())
    again = METHODS[name].config_cls.from_dict(json.loads(text))
    assert again == method.config
    assert build_method(name, json.loads(text)).config == method.config


@pytest.mark.parametrize(("case", "backbone_id"), on_backbones(CASES))
def test_save_load_reproduces_outputs(case, spec_and_backbone, tmp_path: Path) -> None:
    spec, backbone = spec_and_backbone
    model = _model(backbone, case)
    with torch.no_grad():  # move every tunable weight off its init (zero B, zero up, ...)
        gen = torch.Generator().manual_seed(5)
        for _, p in model.tunable_named_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    model.eval()
    x = _images(backbone)
    expected = model(x)

    method = build_method(*case)
    save_tunable(model, method, spec.to_dict(), backbone.num_classes, tmp_path)
    # No pickle: a safetensors file and a JSON file, nothing else.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["method.json", "tunable.safetensors"]

    loaded = load_tunable(tmp_path, backbone=copy.deepcopy(backbone))
    loaded.model.eval()
    assert loaded.method.name == case[0] and loaded.method.config == method.config
    assert torch.equal(loaded.model(x), expected)
    assert set(dict(loaded.model.tunable_named_parameters())) == set(
        dict(model.tunable_named_parameters())
    )


PROBE_EQUIVALENT = [
    ("adapter", {}),
    ("adapter", {"placement": "sequential", "dim": 4, "scale": 1.0}),
    ("lora", {}),
    ("lora", {"targets": ["q", "k", "v", "o", "fc1", "fc2"], "rank": 2}),
    ("adaptformer", {}),
    ("ssf", {"init": "identity"}),
    ("fact", {}),
    ("fact", {"form": "tk"}),
    ("dora", {}),
]


@pytest.mark.parametrize(("case", "backbone_id"), on_backbones(PROBE_EQUIVALENT))
def test_starts_as_the_linear_probe(case, spec_and_backbone) -> None:
    _, backbone = spec_and_backbone
    x = _images(backbone)
    probe = _model(backbone, ("linear", {}), seed=3).eval()
    model = _model(backbone, case, seed=3).eval()
    with torch.no_grad():
        assert torch.equal(model(x), probe(x))
