"""Frozen features shared between the head-only runs of one process (a search worker)."""

from __future__ import annotations

import copy

import torch

from autopetl.backbones import input_stats
from autopetl.feature_cache import FeatureCache, content_digest
from autopetl.methods import build_method
from autopetl.pipeline import attach
from autopetl.tasks import SplitData
from autopetl.training import TrainConfig, train


def _data(n: int, seed: int) -> SplitData:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.randint(0, 100, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    images += (labels * 120).to(torch.uint8).view(-1, 1, 1, 1)
    return SplitData(images, labels)


def _count_backbone_passes(backbone: torch.nn.Module) -> list[int]:
    calls = [0]
    backbone.blocks[0].register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _run(backbone, method: str, lr: float, cache: FeatureCache | None, tr, va):
    model = attach(backbone, build_method(method), seed=0, copy_backbone=False)
    config = TrainConfig(epochs=2, batch_size=32, lr=lr, precision="fp32")
    mean, std = input_stats(backbone)
    result = train(model, tr, va, config, mean=mean, std=std, feature_cache=cache)
    return result, model.tunable_state_dict()


def test_later_runs_reuse_the_features_with_the_same_result(tiny_backbone):
    tiny_backbone.reset_classifier(2)
    tr, va = _data(96, 0), _data(32, 1)
    cache = FeatureCache()
    calls = _count_backbone_passes(tiny_backbone)
    runs = [("linear", 1e-3), ("mlp", 3e-3), ("linear", 1e-2)]
    shared = [_run(tiny_backbone, m, lr, cache, tr, va) for m, lr in runs]
    passes_with_cache = calls[0]
    alone = [_run(tiny_backbone, m, lr, None, tr, va) for m, lr in runs]
    assert (cache.misses, cache.hits) == (2, 4)  # train and val once, then hits only
    # With the cache the three runs made one run's backbone passes; alone, three runs' worth.
    assert calls[0] - passes_with_cache == 3 * passes_with_cache > 0
    for (a, wa), (b, wb) in zip(shared, alone, strict=True):
        assert [e.val_acc for e in a.epochs] == [e.val_acc for e in b.epochs]
        for name in wa:
            assert torch.equal(wa[name], wb[name]), name


def test_other_images_backbones_or_settings_miss(tiny_backbone):
    cache = FeatureCache()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    other_images = images.clone()
    other_images[0, 0, 0, 0] ^= 1
    twin = copy.deepcopy(tiny_backbone)
    computed = []

    def compute() -> torch.Tensor:
        computed.append(1)
        return torch.randn(4, 8)

    first = cache.features(tiny_backbone, images, "fp32", compute)
    assert torch.equal(cache.features(tiny_backbone, images.clone(), "fp32", compute), first)
    cache.features(tiny_backbone, other_images, "fp32", compute)
    cache.features(twin, images, "fp32", compute)
    cache.features(tiny_backbone, images, "bf16", compute)
    assert len(computed) == 4 and cache.hits == 1


def test_least_recently_used_entries_go_first(tiny_backbone):
    cache = FeatureCache(max_entries=2)
    batches = [torch.full((1, 3, 2, 2), i, dtype=torch.uint8) for i in range(3)]
    for b in batches:
        cache.features(tiny_backbone, b, None, lambda: torch.zeros(1))
    cache.features(tiny_backbone, batches[0], None, lambda: torch.zeros(1))
    assert cache.misses == 4  # the first batch had been evicted


def test_content_digest_sees_values_shape_and_dtype():
    x = torch.arange(12, dtype=torch.uint8).view(3, 4)
    assert content_digest(x) == content_digest(x.clone())
    assert content_digest(x) != content_digest(x.view(4, 3))
    assert content_digest(x) != content_digest(x.to(torch.int16))
    y = x.clone()
    y[2, 3] += 1
    assert content_digest(x) != content_digest(y)
