"""The training loop: learns, reports every epoch, seeds, and stops on divergence."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from autopetl.backbones import input_stats
from autopetl.errors import ConfigError, TrainingDivergedError
from autopetl.methods import build_method
from autopetl.pipeline import attach
from autopetl.precision import resolve_precision
from autopetl.tasks import SplitData
from autopetl.training import TrainConfig, train


def _toy_data(n: int, seed: int) -> SplitData:
    """Dim noise vs bright noise. A random-init ViT's [CLS] is close to the mean of its patches
    (attention is near uniform), so brightness, unlike position, is visible to it."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.randint(0, 100, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    images += (labels * 120).to(torch.uint8).view(-1, 1, 1, 1)
    return SplitData(images, labels)


def _fit(backbone, config):
    model = attach(backbone, build_method("vpt", {"prompt_length": 4}), seed=config.seed)
    mean, std = input_stats(backbone)
    epochs = []
    result = train(
        model,
        _toy_data(128, 0),
        _toy_data(64, 1),
        config,
        mean=mean,
        std=std,
        on_epoch=epochs.append,
    )
    return model, result, epochs


def test_training_learns_and_reports_every_epoch(tiny_backbone):
    tiny_backbone.reset_classifier(2)
    _, result, epochs = _fit(
        tiny_backbone, TrainConfig(epochs=4, batch_size=32, lr=3e-3, warmup_epochs=0.5)
    )
    assert [e.epoch for e in epochs] == [1, 2, 3, 4]
    assert result.best_val_acc >= 0.9
    assert result.best_val_acc == max(e.val_acc for e in epochs)
    assert result.last_val_acc == epochs[-1].val_acc
    assert result.tunable_params == result.tunable_params_without_head + 64 * 2 + 2
    assert result.images_per_s > 0 and result.wall_time_s > 0 and result.peak_memory_mb > 0
    assert (result.device, result.precision) == (
        "cpu",
        resolve_precision(torch.device("cpu"), "auto"),
    )
    assert epochs[-1].lr == pytest.approx(0.0, abs=1e-9)  # cosine decays to zero


def test_same_seed_same_result(tiny_backbone):
    tiny_backbone.reset_classifier(2)
    config = TrainConfig(epochs=1, batch_size=32, lr=1e-3, seed=3)
    a, ra, _ = _fit(tiny_backbone, config)
    b, rb, _ = _fit(tiny_backbone, config)
    assert ra.epochs[0].train_loss == rb.epochs[0].train_loss
    assert all(
        torch.equal(p, q)
        for p, q in zip(
            a.tunable_state_dict().values(), b.tunable_state_dict().values(), strict=True
        )
    )


def test_bf16_autocast_runs_on_cpu(tiny_backbone):
    tiny_backbone.reset_classifier(2)
    _, result, _ = _fit(tiny_backbone, TrainConfig(epochs=1, batch_size=32, precision="bf16"))
    assert result.precision == "bf16" and math.isfinite(result.epochs[0].train_loss)


def test_divergence_is_an_error_not_a_result(tiny_backbone):
    tiny_backbone.reset_classifier(2)
    with pytest.raises(TrainingDivergedError, match="lower learning rate"):
        _fit(
            tiny_backbone,
            TrainConfig(epochs=2, batch_size=32, lr=1e30, optimizer="sgd", warmup_epochs=0),
        )


@pytest.mark.parametrize(
    "bad", [dict(epochs=0), dict(lr=-1.0), dict(batch_size=0), dict(weight_decay=-1.0)]
)
def test_bad_training_options_are_config_errors(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad)


def test_resuming_from_a_checkpoint_ends_exactly_as_an_uninterrupted_run(tiny_backbone):
    tiny_backbone.reset_classifier(2)
    config = TrainConfig(epochs=4, batch_size=32, lr=3e-3, warmup_epochs=1)
    straight, result, _ = _fit(tiny_backbone, config)

    states = {}
    model = attach(tiny_backbone, build_method("vpt", {"prompt_length": 4}), seed=config.seed)
    mean, std = input_stats(tiny_backbone)

    def stop_after_two(metrics, state):
        states[metrics.epoch] = state
        if metrics.epoch == 2:
            raise KeyboardInterrupt  # the worker dies here

    with pytest.raises(KeyboardInterrupt):
        train(
            model,
            _toy_data(128, 0),
            _toy_data(64, 1),
            config,
            mean=mean,
            std=std,
            on_checkpoint=stop_after_two,
        )
    fresh = attach(tiny_backbone, build_method("vpt", {"prompt_length": 4}), seed=99)  # other init
    epochs = []
    resumed = train(
        fresh,
        _toy_data(128, 0),
        _toy_data(64, 1),
        config,
        mean=mean,
        std=std,
        resume=states[2],
        on_epoch=epochs.append,
    )
    assert [e.epoch for e in epochs] == [3, 4]  # continues, does not start over
    assert [e.epoch for e in resumed.epochs] == [1, 2, 3, 4]
    assert [e.val_acc for e in resumed.epochs] == [e.val_acc for e in result.epochs]
    for (name, a), b in zip(
        straight.tunable_state_dict().items(), fresh.tunable_state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("method", ["linear", "mlp"])
def test_head_only_methods_compute_frozen_features_once_with_the_same_result(tiny_backbone, method):
    tiny_backbone.reset_classifier(2)
    mean, std = input_stats(tiny_backbone)
    results, weights = {}, {}
    for cache in (True, False):
        model = attach(tiny_backbone, build_method(method), seed=0)
        config = TrainConfig(epochs=3, batch_size=32, lr=3e-3, cache_features=cache)
        results[cache] = train(
            model, _toy_data(128, 0), _toy_data(64, 1), config, mean=mean, std=std
        )
        weights[cache] = model.tunable_state_dict()
    assert results[True].cached_features and not results[False].cached_features
    assert [e.val_acc for e in results[True].epochs] == [e.val_acc for e in results[False].epochs]
    for a, b in zip(results[True].epochs, results[False].epochs, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)
    for name in weights[True]:
        torch.testing.assert_close(weights[True][name], weights[False][name], rtol=1e-4, atol=1e-5)


def test_methods_that_change_the_backbone_never_cache(tiny_backbone):
    tiny_backbone.reset_classifier(2)
    mean, std = input_stats(tiny_backbone)
    for method in ("vpt", "bias", "sidetune"):
        model = attach(tiny_backbone, build_method(method), seed=0)
        result = train(
            model,
            _toy_data(64, 0),
            _toy_data(32, 1),
            TrainConfig(epochs=1, batch_size=32),
            mean=mean,
            std=std,
        )
        assert not result.cached_features, method


def _high_water_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1)) / 1024


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux only")
def test_a_runs_peak_memory_is_its_own_not_the_processs(tiny_backbone):
    # A run after something large (another trial of the worker, here 400 MB) reports its own
    # peak: it once reported the process's lifetime high-water mark, growing trial by trial.
    config = TrainConfig(epochs=1, batch_size=32, lr=1e-2, seed=0)
    _, first, _ = _fit(tiny_backbone, config)
    large = torch.ones(100_000_000)  # 400 MB, resident
    large.add_(1)
    del large
    before = _high_water_mb()  # the process's peak so far, the 400 MB included
    _, second, _ = _fit(tiny_backbone, config)
    assert second.peak_memory_mb < before - 300, (second.peak_memory_mb, before)
    assert abs(second.peak_memory_mb - first.peak_memory_mb) < 150, (first, second)
