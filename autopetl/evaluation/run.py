"""One run: train a configuration on train800val200, then test it once, after training."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from autopetl.evaluation.jobs import DATA_SEED, TRAIN_SPLIT, EvaluationJob, EvaluationRun
from autopetl.recording import TEST_SPLIT
from autopetl.tasks import SplitData, get_task, load_split

if TYPE_CHECKING:
    pass


# -- one run ------------------------------------------------------------------------------------
def load_train_split(job: EvaluationJob) -> SplitData:
    """train800val200 of the job's task at its backbone's input size (the smoke subset if set;
    the search's fraction of the training set plus val200 with ``train_fraction``)."""
    data = load_split(
        get_task(job.task),
        TRAIN_SPLIT,
        img_size=int(job.backbone["img_size"]),
        seed=DATA_SEED,
        data_root=Path(job.data_root) if job.data_root else None,
        cache_dir=Path(job.cache_dir) if job.cache_dir else None,
        train_fraction=job.train_fraction,
    )
    return data.subset(job.train_limit) if job.train_limit else data


def _test_split(job: EvaluationJob) -> SplitData:
    """The test split: called by :func:`run_job` only, after training has returned."""
    return load_split(
        get_task(job.task),
        TEST_SPLIT,
        img_size=int(job.backbone["img_size"]),
        seed=DATA_SEED,
        test_size=job.test_size,
        data_root=Path(job.data_root) if job.data_root else None,
        cache_dir=Path(job.cache_dir) if job.cache_dir else None,
    )


def run_job(job: EvaluationJob, train_data: SplitData | None = None) -> EvaluationRun:
    """Re-train one configuration with one seed, then measure test accuracy once and save it.

    Runs in a Ray worker or in this process. A diverging loss is returned as a failed run;
    anything else raises.

    Args:
        job: The run.
        train_data: train800val200 already in memory (the driver shares it); loaded when None.
    """
    import torch

    from autopetl.backbones import BackboneSpec, input_stats
    from autopetl.errors import TrainingDivergedError
    from autopetl.methods import build_method
    from autopetl.methods.io import (
        WEIGHTS_FILE,
        backbone_init_record,
        file_sha256,
        save_tunable,
    )
    from autopetl.pipeline import attach
    from autopetl.training import evaluate, train
    from autopetl.trial import TrialConfig, TrialSetup, cached_backbone, train_config_of

    torch.set_num_threads(max(1, int(job.cpus)))
    device = "cuda" if job.gpus > 0 and torch.cuda.is_available() else "cpu"
    task = get_task(job.task)
    spec = BackboneSpec(**job.backbone)
    setup = TrialSetup(spec, task.num_classes, job.seed, job.precision, job.cpus)
    # The searched hyper-parameters and epochs, with this run's seed.
    config = TrialConfig.from_flat(job.config)
    train_config = train_config_of(config, setup, device)
    method = build_method(config.method, config.options)
    train_data = train_data if train_data is not None else load_train_split(job)
    backbone = cached_backbone(spec, task.num_classes)
    # A random-init backbone comes from a fixed seed (cached_backbone); recorded with the
    # artifact, serving rebuilds exactly these frozen weights, and tasks share one trunk.
    backbone_init = backbone_init_record(spec, backbone)
    model = attach(backbone, method, seed=job.seed)
    mean, std = input_stats(backbone)
    try:
        # No evaluation split: nothing during training can look at held-out images.
        result = train(model, train_data, None, train_config, mean=mean, std=std)
    except TrainingDivergedError as exc:
        return EvaluationRun(job, None, {"error": str(exc), "seed": job.seed}, error=str(exc))

    t0 = time.perf_counter()
    test = _test_split(job)  # the only read of the test split, after training has ended
    test_acc = evaluate(
        model,
        test,
        mean,
        std,
        batch_size=train_config.eval_batch_size,
        device=device,
        precision=job.precision,
    )
    test_seconds = time.perf_counter() - t0
    out = save_tunable(
        model, method, job.backbone, task.num_classes, job.artifact_dir, backbone_init=backbone_init
    )
    weights = out / WEIGHTS_FILE
    metrics = {
        "method": job.method,
        "config": job.config,
        "task": job.task,
        "backbone": job.backbone,
        "train_split": TRAIN_SPLIT,
        "train_images": len(train_data),
        "train_fraction": job.train_fraction,
        "test_images": len(test),
        "epochs": train_config.epochs,
        "final_train_loss": result.epochs[-1].train_loss,
        "tunable_params": result.tunable_params,
        "tunable_params_without_head": result.tunable_params_without_head,
        "wall_time_s": result.wall_time_s,
        "test_seconds": test_seconds,
        "images_per_s": result.images_per_s,
        "peak_memory_mb": result.peak_memory_mb,
        "device": result.device,
        "precision": result.precision,
        "smoke_test": job.smoke_test,
        "artifact": str(out),
    }
    return EvaluationRun(job, test_acc, metrics, file_sha256(weights), weights.stat().st_size)
