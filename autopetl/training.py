"""Train and evaluate one PETL configuration on in-memory task tensors.

Knows nothing of Ray, Optuna or SQL: callers get per-epoch metrics through ``on_epoch`` and the
final :class:`TrainResult`. Data are uint8 tensors moved to the device once; each batch is
normalised there (see :func:`autopetl.tasks.normalize`), so no DataLoader workers are needed.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import ClassifierHead

from autopetl.errors import ConfigError, TrainingDivergedError
from autopetl.feature_cache import FeatureCache
from autopetl.methods.base import PetlModel
from autopetl.peak_memory import peak_memory_mb, reset_peak_memory
from autopetl.precision import Resolved, attention_kernel, resolve_precision
from autopetl.precision import autocast as autocast_for
from autopetl.tasks.data import SplitData, normalize
from autopetl.train_config import TrainConfig as TrainConfig


@dataclass
class EpochMetrics:
    epoch: int  # 1-based
    train_loss: float
    val_acc: float
    lr: float
    seconds: float


@dataclass
class TrainResult:
    """What one training run scored and what it cost.

    ``peak_memory_mb`` is this run's peak, from its start to its end: on GPU the CUDA
    allocator's (every tensor on the device, the frozen backbone's included); on CPU the
    process's resident set (Linux; so Python, torch, the backbone and the data the process
    already held count too). Where the peak cannot be reset (not Linux), it is the process's
    peak since it started.
    """

    best_val_acc: float
    best_epoch: int
    last_val_acc: float
    tunable_params: int
    tunable_params_without_head: int
    wall_time_s: float
    images_per_s: float
    peak_memory_mb: float
    device: str
    precision: str
    epochs: list[EpochMetrics] = field(default_factory=list)
    cached_features: bool = False  # the frozen backbone ran once, not every epoch
    # Seconds that one backbone pass over the train and val images took (head-only runs; 0 when
    # the features came from this process's cache). Included in wall_time_s, not in images_per_s.
    feature_seconds: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` as a device this machine has.

    Raises:
        ConfigError: Not a device name, or a GPU this machine does not have.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"--device {device!r} is not a device: use auto, cpu, cuda or cuda:N"
        ) from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count()
        index = resolved.index or 0
        if index >= count:
            has = f"{count} GPU(s) (cuda:0-cuda:{count - 1})" if count else "no GPU"
            raise ConfigError(f"--device {device}: this machine has {has}")
    elif resolved.type != "cpu":
        raise ConfigError(f"--device {device!r}: only cpu and cuda are supported")
    return resolved


def _cosine_with_warmup(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _cacheable_head(model: PetlModel) -> torch.nn.Module | None:
    """The head, when it holds every tunable parameter and what feeds it is frozen and fixed.

    Only a plain PetlModel qualifies (methods that override the forward change what the head
    sees), and only without stochastic layers before the head (dropout or drop-path would make
    the features differ from epoch to epoch).
    """
    if (
        type(model).forward is not PetlModel.forward
        or type(model).forward_features is not PetlModel.forward_features
    ):
        return None
    head = model.backbone.head
    if isinstance(head, ClassifierHead):
        # A Swin's head is timm's pool -> dropout -> fc: forward_head(pre_logits=True) has
        # pooled already, so its fc alone maps the cached features to logits.
        if head.drop.p:
            return None
        head = head.fc
    head_params = {id(p) for p in head.parameters()}
    if not all(id(p) in head_params for _, p in model.tunable_named_parameters()):
        return None
    for name, module in model.backbone.named_modules():
        if name == "head" or name.startswith("head."):
            continue
        rate = (
            getattr(module, "p", None)
            if isinstance(module, torch.nn.Dropout)
            else getattr(module, "drop_prob", None)
        )
        if rate:
            return None
    return head


@torch.no_grad()
def _features(
    model: PetlModel,
    images: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int,
) -> torch.Tensor:
    """The input of the head (pooled, normed features) for every image, in float32."""
    model.eval()
    out = [
        model.backbone.forward_head(
            model.forward_features(normalize(chunk, mean, std)), pre_logits=True
        ).float()
        for chunk in images.split(batch_size)
    ]
    return torch.cat(out)


@torch.no_grad()
def _head_accuracy(
    head: torch.nn.Module, features: torch.Tensor, labels: torch.Tensor, autocast: Any
) -> float:
    head.eval()
    with autocast:
        correct = int((head(features).argmax(dim=-1) == labels).sum())
    return correct / max(1, len(labels))


def _load_state(
    model: PetlModel,
    optimizer: Any,
    scheduler: Any,
    generator: torch.Generator,
    state: dict[str, Any],
) -> None:
    tunable = dict(model.tunable_named_parameters())
    if set(state["model"]) != set(tunable):
        raise ConfigError("the checkpoint does not fit this model's tunable parameters")
    with torch.no_grad():
        for name, value in state["model"].items():
            tunable[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])


@torch.no_grad()
def evaluate(
    model: PetlModel,
    data: SplitData,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    precision: str = "auto",
) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (eval mode), as a fraction in [0, 1]."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    model.eval()
    resolved = resolve_precision(dev, precision)
    correct = 0
    with attention_kernel(model, dev, resolved):
        for start in range(0, len(data), batch_size):
            images = data.images[start : start + batch_size].to(dev, non_blocking=True)
            labels = data.labels[start : start + batch_size].to(dev, non_blocking=True)
            with autocast_for(dev, resolved):
                logits = model(normalize(images, mean, std))
            correct += int((logits.argmax(dim=-1) == labels).sum())
    return correct / max(1, len(data))


def train(
    model: PetlModel,
    train_data: SplitData,
    val_data: SplitData | None,
    config: TrainConfig,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    on_checkpoint: Callable[[EpochMetrics, dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | None = None,
    feature_cache: FeatureCache | None = None,
) -> TrainResult:
    """Train the model's tunable parameters and validate after every epoch.

    Args:
        model: The backbone with a method attached; only ``requires_grad`` parameters train.
        train_data: Training split (uint8 images, int64 labels).
        val_data: Validation split, evaluated after every epoch. None skips validation (the
            final re-training on train800val200 has no held-out split, and must never see the
            test split before it ends): epochs then report a NaN ``val_acc`` and the result's
            ``best_epoch`` is the last one.
        config: Optimiser, schedule, precision and device.
        mean: Normalisation mean of the backbone.
        std: Normalisation std of the backbone.
        on_epoch: Called with each epoch's metrics (progress bars, Ray Tune reports).
        on_step: Called with (step, total steps) after each optimiser step.
        on_checkpoint: Called after each epoch with its metrics and the state to resume from
            (tunable weights, optimiser, schedule, random streams, history): a search saves it
            so a trial whose worker dies continues from its last epoch, not from zero.
        resume: A state given to ``on_checkpoint`` earlier; training continues after its epoch
            and ends exactly as an uninterrupted run would.
        feature_cache: Where head-only runs of this process share their frozen features (a
            search worker passes one for all its trials); None computes them for this run only.

    Raises:
        TrainingDivergedError: The loss became NaN or infinite.
    """
    device = resolve_device(config.device)
    precision = resolve_precision(device, config.precision)
    with attention_kernel(model, device, precision):
        return _train(
            model,
            train_data,
            val_data,
            config,
            device,
            precision,
            mean=mean,
            std=std,
            on_epoch=on_epoch,
            on_step=on_step,
            on_checkpoint=on_checkpoint,
            resume=resume,
            feature_cache=feature_cache,
        )


def _train(
    model: PetlModel,
    train_data: SplitData,
    val_data: SplitData | None,
    config: TrainConfig,
    device: torch.device,
    precision: Resolved,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    on_epoch: Callable[[EpochMetrics], None] | None,
    on_step: Callable[[int, int], None] | None,
    on_checkpoint: Callable[[EpochMetrics, dict[str, Any]], None] | None,
    resume: dict[str, Any] | None,
    feature_cache: FeatureCache | None,
) -> TrainResult:
    reset_peak_memory(device)
    model.to(device)
    params = [p for _, p in model.tunable_named_parameters()]
    if not params:
        raise ConfigError("the model has no tunable parameters")
    optimizer: torch.optim.Optimizer
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_data) / config.batch_size)
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _cosine_with_warmup(total, round(config.warmup_epochs * steps_per_epoch))
    )
    autocast = autocast_for(device, precision)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # dropout masks

    images, labels = train_data.images.to(device), train_data.labels.to(device)
    head = _cacheable_head(model) if config.cache_features else None
    feature_seconds = 0.0
    if head is not None:
        # The frozen part's output never changes: pay for the backbone once, not every epoch
        # (and, with a feature cache, once per process for the same backbone and images).
        settings = (tuple(mean), tuple(std), precision, str(device))

        def features_of(split: torch.Tensor) -> torch.Tensor:
            def compute() -> torch.Tensor:
                with autocast:
                    return _features(model, split.to(device), mean, std, config.eval_batch_size)

            if feature_cache is None:
                return compute()
            return feature_cache.features(model.backbone, split, settings, compute)

        t_features = time.perf_counter()
        train_features = features_of(train_data.images)
        val_features = None if val_data is None else features_of(val_data.images)
        feature_seconds = time.perf_counter() - t_features

    def forward(batch: torch.Tensor) -> torch.Tensor:
        if head is not None:
            return head(train_features[batch])
        return model(normalize(images[batch], mean, std))

    history: list[EpochMetrics] = []
    train_seconds, seen, step = 0.0, 0, 0
    if resume is not None:
        _load_state(model, optimizer, scheduler, generator, resume)
        history = [EpochMetrics(**m) for m in resume["history"]]
        train_seconds, seen, step = resume["train_seconds"], resume["seen"], resume["step"]
    start = time.perf_counter() - (resume["wall_time_s"] if resume is not None else feature_seconds)
    for epoch in range(len(history) + 1, config.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(train_data), generator=generator).to(device)
        loss_sum = torch.zeros((), device=device)
        for batch in order.split(config.batch_size):
            with autocast:
                logits = forward(batch)
                loss = F.cross_entropy(logits.float(), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(batch)
            seen += len(batch)
            step += 1
            if on_step is not None:
                on_step(step, total)
        train_loss = float(loss_sum) / len(train_data)  # one sync per epoch, not per step
        train_seconds += time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise TrainingDivergedError(
                f"loss became {train_loss} in epoch {epoch}; "
                f"try a lower learning rate (now {config.lr:g})"
            )
        val_acc = (
            math.nan
            if val_data is None
            else _head_accuracy(head, val_features, val_data.labels.to(device), autocast)
            if head is not None and val_features is not None
            else evaluate(
                model,
                val_data,
                mean,
                std,
                batch_size=config.eval_batch_size,
                device=device,
                precision=precision,
            )
        )
        metrics = EpochMetrics(
            epoch, train_loss, val_acc, optimizer.param_groups[0]["lr"], time.perf_counter() - t0
        )
        history.append(metrics)
        if on_checkpoint is not None:
            state = {
                "model": {n: p.detach().clone() for n, p in model.tunable_named_parameters()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": [asdict(m) for m in history],
                "train_seconds": train_seconds,
                "seen": seen,
                "step": step,
                "wall_time_s": time.perf_counter() - start,
            }
            on_checkpoint(metrics, state)
        if on_epoch is not None:
            on_epoch(metrics)
    # Without validation there is nothing to rank epochs by: the model is the last epoch's anyway.
    best = history[-1] if val_data is None else max(history, key=lambda m: (m.val_acc, m.epoch))
    return TrainResult(
        best_val_acc=best.val_acc,
        best_epoch=best.epoch,
        last_val_acc=history[-1].val_acc,
        tunable_params=model.num_tunable(),
        tunable_params_without_head=model.num_tunable(include_head=False),
        wall_time_s=time.perf_counter() - start,
        images_per_s=seen / max(train_seconds, 1e-9),
        peak_memory_mb=peak_memory_mb(device),
        device=str(device),
        precision=precision,
        epochs=history,
        cached_features=head is not None,
        feature_seconds=feature_seconds,
    )
