"""The steps every entry point shares: task data in, backbone built, method attached, trained.

The CLI, the search trainable and the benchmarks all go through these functions, so one
configuration means the same thing everywhere.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from timm.models.vision_transformer import VisionTransformer

from autopetl.backbones import input_stats
from autopetl.methods.base import Method, PetlModel
from autopetl.methods.registry import check_applies
from autopetl.tasks import SplitData, TaskSpec, load_split
from autopetl.training import TrainConfig, TrainResult, seed_everything, train

# Re-exported: the smoke-test sizes live in trial.py, which the command line reads without torch.
from autopetl.trial import SMOKE_SEARCH_TRAIN_IMAGES as SMOKE_SEARCH_TRAIN_IMAGES
from autopetl.trial import SMOKE_TRAIN_IMAGES as SMOKE_TRAIN_IMAGES


@dataclass
class TaskData:
    """The splits of one task at one input size, in memory."""

    task: TaskSpec
    train: SplitData
    eval: SplitData


def load_task_data(
    task: TaskSpec,
    img_size: int,
    *,
    train_split: str = "train800",
    eval_split: str = "val200",
    data_root: Path | None = None,
    seed: int = 0,
    test_size: int | None = 4096,
    train_limit: int | None = None,
    train_fraction: float | None = None,
) -> TaskData:
    """Load (from the cache, or generate once) the training and evaluation splits of a task;
    ``train_fraction``: of its whole training set (autopetl/tasks/scale.py)."""
    tr = load_split(
        task,
        train_split,
        img_size=img_size,
        seed=seed,
        data_root=data_root,
        train_fraction=train_fraction,
    )
    ev = load_split(
        task, eval_split, img_size=img_size, seed=seed, data_root=data_root, test_size=test_size
    )
    return TaskData(task, tr.subset(train_limit) if train_limit else tr, ev)


def attach(
    backbone: VisionTransformer, method: Method, *, seed: int, copy_backbone: bool = True
) -> PetlModel:
    """A fresh model for one run: seeded, on a copy of the frozen backbone by default.

    Copying keeps one frozen backbone reusable across runs: methods that patch layers (LoRA,
    adapters) or train backbone weights change the module tree they are given, and every method
    replaces its head. ``copy_backbone=False`` uses ``backbone`` itself: right only for a method
    whose ``changes_backbone`` is False, and only while no other model built on ``backbone`` is in
    use (a search worker runs one trial at a time); a later attach replaces this model's head.
    """
    check_applies(method, backbone)
    seed_everything(seed)
    net = copy.deepcopy(backbone) if copy_backbone else backbone
    # A fresh head for every run, so trials do not inherit each other's classifier.
    net.reset_classifier(backbone.num_classes)
    net.requires_grad_(False)
    return method.attach(net)


def train_one(
    backbone: VisionTransformer, method: Method, data: TaskData, config: TrainConfig, **callbacks
) -> tuple[PetlModel, TrainResult]:
    """Attach the method to the frozen backbone (in place) and train: ``autopetl train``."""
    model = attach(backbone, method, seed=config.seed, copy_backbone=False)
    mean, std = input_stats(backbone)
    result = train(model, data.train, data.eval, config, mean=mean, std=std, **callbacks)
    return model, result
