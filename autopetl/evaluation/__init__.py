"""The VTAB-1k protocol's last step: re-train chosen configurations on train800val200, test once.

A search ranks configurations by their accuracy on val200 after training on train800. What papers
publish is different: each chosen configuration is trained again, with the same hyper-parameters
and epochs, on all 1000 images (train800val200), once per seed, and its accuracy on the test split
is measured once, after training has ended (docs/PROTOCOL.md).

The test split is reachable from one function only, :func:`_test_split`, called by
:func:`run_job` after :func:`autopetl.training.train` has returned; training gets no evaluation
split at all (``val_data=None``), so no epoch can be chosen by test accuracy. Selection
(:func:`select_configurations`) reads trials and their validation accuracy, never evaluations.

Runs go to Ray as tasks (``num_cpus`` / ``num_gpus`` per run; a run asking for a GPU falls back to
the CPU where CUDA is missing), or run in this process with ``use_ray=False``. The driver is the
only writer to the store: each finished run becomes an evaluation row (split ``test``) and its
tunable weights an artifact (``weights-seed<k>``) that serving loads with
:func:`autopetl.methods.io.load_tunable`.

The package's modules, one job each: :mod:`~.jobs` (the types and constants), :mod:`~.select`,
:mod:`~.plan`, :mod:`~.run` (one run; the only reader of the test split), :mod:`~.many` (Ray
tasks or this process) and :mod:`~.results` (reading back, ranking).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from autopetl.evaluation.jobs import (
    DATA_SEED,
    PROCEDURAL_TEST_SIZE,
    SELECTIONS,
    SMOKE_TEST_SIZE,
    SMOKE_TRAIN_LIMIT,
    TRAIN_SPLIT,
    ConfigurationResult,
    EvaluationError,
    EvaluationJob,
    EvaluationRun,
)
from autopetl.evaluation.results import (
    best_configuration,
    configuration_results,
    evaluated_configurations,
    rank_key,
)
from autopetl.evaluation.select import select_configurations
from autopetl.recording import TEST_SPLIT, record_run

if TYPE_CHECKING:
    from autopetl.evaluation.many import evaluate_jobs
    from autopetl.evaluation.plan import artifact_dir, default_artifacts_dir, plan_evaluation
    from autopetl.evaluation.run import load_train_split, run_job

# What needs torch is imported on first use, so that reading results back (`evaluate` refusing a
# search that is not there, `serve` finding nothing to serve) answers without loading it.
_LAZY = {
    "evaluate_jobs": "many",
    "artifact_dir": "plan",
    "default_artifacts_dir": "plan",
    "plan_evaluation": "plan",
    "load_train_split": "run",
    "run_job": "run",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DATA_SEED", "PROCEDURAL_TEST_SIZE", "SELECTIONS", "SMOKE_TEST_SIZE", "SMOKE_TRAIN_LIMIT",
    "TEST_SPLIT", "TRAIN_SPLIT", "ConfigurationResult", "EvaluationError", "EvaluationJob",
    "EvaluationRun", "artifact_dir", "best_configuration", "configuration_results",
    "default_artifacts_dir", "evaluate_jobs", "evaluated_configurations", "load_train_split",
    "plan_evaluation", "rank_key", "record_run", "run_job", "select_configurations",
]  # fmt: skip
