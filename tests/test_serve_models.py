"""Serving without Ray: every method on one shared frozen backbone, exact and memory-sharing;
the rebuildable random-init backbone; image decoding and its limits."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import autopetl.methods  # noqa: F401  (registers every method)
from autopetl.errors import ConfigError, WeightsError
from autopetl.methods import build_method
from autopetl.methods.io import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    backbone_init_record,
    file_sha256,
    frozen_digest,
    load_tunable,
    rebuildable_backbone,
    save_tunable,
)
from autopetl.methods.registry import METHODS
from autopetl.pipeline import attach
from autopetl.serving.images import ImageError, ImageLimits, preprocess
from autopetl.serving.models import SharedBackbone

from .conftest import TINY

# Every method, DVPT in both variants, BitFit and Partial (which train the backbone's own tensors).
VARIANTS = {name: {} for name in METHODS} | {
    "dvpt-specific": {"dynamic": "specific"},
    "partial-2": {"k": 2},
    "lora-all": {"targets": ["q", "k", "v", "o", "fc1", "fc2"]},
}


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Move the tunable weights off their init (zero-init parts would hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.tunable_named_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    base = rebuildable_backbone(TINY, 16)
    init = backbone_init_record(TINY, base)
    out = {}
    root = tmp_path_factory.mktemp("arts")
    for i, (variant, values) in enumerate(VARIANTS.items()):
        name = variant.split("-")[0]
        classes = 16 if i % 2 == 0 else 5  # tasks with other class counts share the trunk
        base.reset_classifier(classes)
        method = build_method(name, values)
        model = attach(base, method, seed=i)
        _perturb(model, i)
        out[variant] = (
            save_tunable(
                model, method, TINY.to_dict(), classes, root / variant, backbone_init=init
            ),
            classes,
        )
    return out


def test_random_init_backbone_is_rebuilt_exactly_and_checked(artifacts) -> None:
    path, _ = artifacts["vpt"]
    torch.manual_seed(123)  # the caller's random state must not matter
    a = load_tunable(path)  # no backbone=: rebuilt from the recorded seed
    b = rebuildable_backbone(TINY, 3)
    assert frozen_digest(a.model.backbone) == frozen_digest(b)
    meta = json.loads((path / CONFIG_FILE).read_text())
    meta["backbone_init"]["sha256"] = "0" * 64
    (path / CONFIG_FILE).write_text(json.dumps(meta))
    try:
        with pytest.raises(WeightsError, match="other weights"):
            load_tunable(path)
        del meta["backbone_init"]
        (path / CONFIG_FILE).write_text(json.dumps(meta))
        with pytest.raises(WeightsError, match="cannot be rebuilt"):
            load_tunable(path)
    finally:
        meta["backbone_init"] = backbone_init_record(TINY, b)
        (path / CONFIG_FILE).write_text(json.dumps(meta))


def test_every_method_shares_the_frozen_backbone_and_predicts_exactly(artifacts) -> None:
    init = json.loads((artifacts["vpt"][0] / CONFIG_FILE).read_text())["backbone_init"]
    shared = SharedBackbone(TINY.to_dict(), init)
    before = frozen_digest(shared.base)
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    models = []
    for variant, (path, classes) in artifacts.items():
        tm = shared.load(variant, path, file_sha256(path / WEIGHTS_FILE))
        models.append(tm)
        # The same artifact loaded alone, on its own rebuilt backbone: identical outputs.
        alone = load_tunable(path).model.eval()
        with torch.no_grad():
            expected = torch.softmax(alone(_normalise(x)), -1)
        got = shared.predict(tm, x)
        assert got.shape == (3, classes)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6, msg=variant)
    # Loading every task changed nothing in the shared frozen tensors.
    assert frozen_digest(shared.base) == before
    # Predictions still match after all other tasks were attached (no cross-talk).
    for tm, (_variant, (path, _)) in zip(models, artifacts.items(), strict=True):
        alone = load_tunable(path).model.eval()
        with torch.no_grad():
            torch.testing.assert_close(
                shared.predict(tm, x), torch.softmax(alone(_normalise(x)), -1), rtol=0, atol=1e-6
            )
    mem = shared.memory(models)
    frozen = mem["shared_frozen_bytes"]
    # A prompt method's own tensors are a small fraction of the frozen backbone...
    assert mem["task_private_bytes"]["vpt"] < frozen / 4
    # ...while `full` copies (and trains) everything, so it shares nothing.
    assert mem["task_private_bytes"]["full"] >= frozen
    assert mem["without_sharing_bytes"] > mem["total_bytes"]
    assert mem["saved_bytes"] >= (len(models) - 2) * frozen * 0.5


def _normalise(x: torch.Tensor) -> torch.Tensor:
    from autopetl.tasks.data import normalize

    return normalize(x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_an_altered_or_foreign_artifact_is_refused(artifacts, tmp_path) -> None:
    path, _ = artifacts["lora"]
    init = json.loads((path / CONFIG_FILE).read_text())["backbone_init"]
    shared = SharedBackbone(TINY.to_dict(), init)
    with pytest.raises(ConfigError, match="SHA-256"):
        shared.load("lora", path, "f" * 64)
    other = SharedBackbone(
        {**TINY.to_dict(), "img_size": 64},
        init
        | {
            "sha256": frozen_digest(
                rebuildable_backbone(TINY.__class__(**{**TINY.to_dict(), "img_size": 64}), 1)
            )
        },
    )
    with pytest.raises(ConfigError, match="not on the served backbone"):
        other.load("lora", path)


def _png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_image_limits_and_formats() -> None:
    rgb = Image.new("RGB", (40, 30), (200, 10, 10))
    assert preprocess(_png(rgb), 32).shape == (3, 32, 32)
    for fmt in ("JPEG", "WEBP", "GIF", "BMP"):
        assert preprocess(_png(rgb, fmt), 32).dtype == torch.uint8
    rgba = Image.new("RGBA", (8, 8), (255, 255, 255, 0))
    assert int(preprocess(_png(rgba), 8).max()) == 0  # transparent -> black
    big = Image.new("L", (300, 300))
    with pytest.raises(ImageError) as e:
        preprocess(_png(big), 32, ImageLimits(max_pixels=200 * 200))
    assert e.value.status == 413
    with pytest.raises(ImageError) as e:
        preprocess(_png(rgb, "TIFF"), 32)
    assert e.value.status == 415 and "TIFF" in e.value.detail
    with pytest.raises(ImageError) as e:
        preprocess(_png(rgb)[:60], 32)
    assert e.value.status == 400


def test_long_thin_images_are_refused_before_decoding_or_shrunk_per_side() -> None:
    import time

    from autopetl.tasks.data import resize_uint8

    # 1 x 16,000,000 is inside --max-pixels (16.8M) but cost 45 s and 6.4 GB to resize once.
    tall = _png(Image.new("L", (1, 16_000_000)))
    start = time.perf_counter()
    with pytest.raises(ImageError) as e:
        preprocess(tall, 32)
    assert e.value.status == 413 and e.value.code == "side_too_long"
    assert time.perf_counter() - start < 1.0  # refused from the header, nothing decoded
    with pytest.raises(ImageError) as e:
        preprocess(_png(Image.new("L", (100, 2000))), 32)  # 20:1
    assert e.value.status == 400 and e.value.code == "bad_aspect_ratio"
    # 15:1 is accepted; each side is box-filtered by its own factor, close to the full resize.
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3000, 200, 3), dtype=np.uint8)
    got = preprocess(_png(Image.fromarray(pixels)), 32)
    full = resize_uint8(torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0), 32)[0]
    assert got.shape == (3, 32, 32)
    assert (got.int() - full.int()).abs().float().mean() < 3.0
