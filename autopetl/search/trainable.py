"""The Ray Tune trainable: one trial = one configuration trained on a worker.

Every task's tensors go to Ray's object store once, when the run starts; the trainable gets a
reference per search (``tune.with_parameters``) and fetches its own search's only, keeping it
while the worker's next trials belong to the same task (:func:`task_data`). The frozen
backbone is built once per worker process and kept in :data:`_BACKBONES`, so with
``reuse_actors=True`` a worker's later trials reuse it: as it is for methods that only read it,
as a copy for those that change it (``Method.changes_backbone``), and head-only trials share its
features (:data:`_FEATURES`). Each epoch is reported to Tune with a checkpoint of the training
state, so a trial whose worker dies resumes from its last epoch; the last report carries the
trial's cost figures. A configuration that fails by itself (a NaN loss, an exception in its
own code: a bad option, a CUDA out-of-memory) reports an ``error`` instead of raising, so Tune
retries only trials whose worker or node died (those never reach this code's ``except``).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from autopetl.backbones import input_stats
from autopetl.errors import TrainingDivergedError
from autopetl.feature_cache import FeatureCache
from autopetl.methods import build_method
from autopetl.objectives import MEASURES, measure
from autopetl.pipeline import TaskData, attach
from autopetl.training import EpochMetrics, train
from autopetl.trial import TrialConfig, TrialSetup, cached_backbone, search_of, train_config_of

# When this worker process had imported the trial code (torch, timm, Ray Tune: most of a worker's
# start). Recorded with each trial, with the process id: trials that share a worker (Tune's
# reuse_actors) share both, and the gap to the search's start is what the worker start cost it.
WORKER_READY_AT = time.time()
# Head-only trials (linear, mlp) of this worker share the frozen features of its backbone.
_FEATURES = FeatureCache()
STATE_FILE = "trainer_state.pt"
# The one task's data this worker holds: object reference (hex) -> the fetched splits.
_DATA: dict[str, TaskData] = {}


def task_data(ref: ray.ObjectRef) -> TaskData:
    """The splits behind ``ref``, fetched from the object store once per run of trials of one
    task on this worker; a trial of another task replaces them, so a worker never holds more
    than one task's tensors."""
    key = ref.hex()
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = ray.get(ref)
    return _DATA[key]


def run_trial(
    config: dict[str, Any],
    *,
    data: dict[str, ray.ObjectRef],
    setups: dict[str, TrialSetup],
) -> None:
    """Train one configuration of search ``config[SEARCH_KEY]`` and report every epoch to Tune.

    ``data`` and ``setups`` hold every search of the run, by name; the trial reads its own.

    An exception of the trial's own (a bad option, a bug, running out of memory) is reported as
    the trial's ``error``, with ``raised`` set and the traceback's last lines, instead of raised:
    Tune's retries (``FailureConfig.max_failures``) are for workers and nodes that died, and
    would otherwise run a configuration that cannot work three times, each on a new worker.
    """
    # What the trial knows about itself before training: filled in by _train_trial, and reported
    # with an error too (Tune requires the objectives' keys in every result).
    params: dict[str, Any] = {
        "tunable_params": None,
        "tunable_params_without_head": None,
        **dict.fromkeys(MEASURES),
    }
    try:
        search = search_of(config)
        _train_trial(config, data=task_data(data[search]), setup=setups[search], params=params)
    except Exception as exc:
        if _device_broken(exc):
            raise  # the worker's CUDA context is unusable: Tune must replace the worker
        lines = [line for line in traceback.format_exc().splitlines() if line.strip()]
        if len(lines) > 12:  # the header, then the innermost frames and the exception
            lines = [lines[0], "  ...", *lines[-11:]]
        tune.report(
            {
                "epoch": 0,
                "val_acc": math.nan,
                **params,
                "error": "\n".join(lines)[-4000:],
                "raised": True,
                "exception": type(exc).__name__,
            }
        )


def _device_broken(exc: Exception) -> bool:
    """A CUDA error other than out-of-memory (a device-side assert, an illegal address) leaves
    the process's CUDA context unusable; a reused worker would fail every later trial."""
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return True
    return not isinstance(exc, torch.OutOfMemoryError) and "CUDA error" in str(exc)


def _train_trial(
    config: dict[str, Any], *, data: TaskData, setup: TrialSetup, params: dict[str, Any]
) -> None:
    torch.set_num_threads(max(1, int(setup.cpus_per_trial)))
    trial = TrialConfig.from_flat(config)  # parsed once per trial
    gpus = tune.get_context().get_trial_resources().required_resources.get("GPU", 0)
    device = "cuda" if gpus and torch.cuda.is_available() else "cpu"
    train_config = train_config_of(trial, setup, device)
    backbone = cached_backbone(setup.backbone, setup.num_classes)
    method = build_method(trial.method, trial.options)
    # A worker runs one trial at a time, so methods that only read the backbone use it as it is.
    model = attach(backbone, method, seed=setup.seed, copy_backbone=method.changes_backbone)
    params.update(
        measure(model, setup.backbone.img_size),  # every measured objective, once per trial
        tunable_params_without_head=model.num_tunable(include_head=False),
        epochs=train_config.epochs,
    )

    def report(m: EpochMetrics, state: dict[str, Any] | None = None, **extra: Any) -> None:
        metrics = dict(
            epoch=m.epoch,
            val_acc=m.val_acc,
            train_loss=m.train_loss,
            lr=m.lr,
            seconds=m.seconds,  # the epoch's, as EpochMetrics and the store name it
        )
        if state is None:
            tune.report({**metrics, **params, **extra})
            return
        with tempfile.TemporaryDirectory() as tmp:  # Tune copies it to the trial's storage
            torch.save(state, Path(tmp) / STATE_FILE)
            tune.report(
                {**metrics, **params, **extra}, checkpoint=tune.Checkpoint.from_directory(tmp)
            )

    states: dict[int, dict[str, Any]] = {}

    def on_checkpoint(m: EpochMetrics, state: dict[str, Any]) -> None:
        states[m.epoch] = state

    def on_epoch(m: EpochMetrics) -> None:
        if m.epoch < train_config.epochs:  # the last epoch is reported below, with the costs
            report(m, states.pop(m.epoch))

    mean, std = input_stats(backbone)
    try:
        result = train(
            model,
            data.train,
            data.eval,
            train_config,
            mean=mean,
            std=std,
            on_epoch=on_epoch,
            on_checkpoint=on_checkpoint,
            resume=_resume_state(),
            feature_cache=_FEATURES,
        )
    except TrainingDivergedError as exc:
        # A property of the configuration, not of the worker: report it as this trial's failed
        # outcome instead of raising, so Tune does not retry it (retries are for dead workers).
        tune.report({"epoch": 0, "val_acc": math.nan, **params, "error": str(exc)})
        return
    report(
        result.epochs[-1],
        best_val_acc=result.best_val_acc,
        best_epoch=result.best_epoch,
        wall_time_s=result.wall_time_s,
        images_per_s=result.images_per_s,
        peak_memory_mb=result.peak_memory_mb,
        device=result.device,
        precision=result.precision,
        node_id=ray.get_runtime_context().get_node_id(),  # where it ran, for the cluster view
        worker_pid=os.getpid(),  # with node_id: the Ray worker whose log holds this trial
        worker_ready_at=WORKER_READY_AT,
    )


def _resume_state() -> dict[str, Any] | None:
    """The state of this trial's last finished epoch, when Tune restarts it after a failure."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        # weights_only: tensors and plain containers only, no arbitrary pickled objects.
        return torch.load(Path(directory) / STATE_FILE, weights_only=True)
