"""What an evaluation is made of: jobs (one configuration, one seed), their runs, and the
per-configuration results read back; the protocol's constants."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autopetl.errors import AutopetlError
from autopetl.trial import SMOKE_SEARCH_TRAIN_IMAGES

if TYPE_CHECKING:
    pass


SELECTIONS = ("pareto", "best", "best-per-method", "trial")
TRAIN_SPLIT = "train800val200"
# Searches load their splits with the data seed 0 (the dSprites permutation), whatever --seed is;
# evaluation must read the same images, so the run seed never reaches the data.
DATA_SEED = 0
# Test images of a procedural task (dSprites' full test part is 73,728 images, 11 GB at 224 px).
PROCEDURAL_TEST_SIZE = 4096
# --smoke-test: the same training subset as a smoke search, and a small test set.
SMOKE_TRAIN_LIMIT = SMOKE_SEARCH_TRAIN_IMAGES
SMOKE_TEST_SIZE = 1024


class EvaluationError(AutopetlError):
    """Nothing to evaluate: no completed trials, an unknown trial key, a bad selection."""


@dataclass(frozen=True)
class EvaluationJob:
    """One re-training run: a configuration of a search with one seed (small and picklable).

    Attributes:
        search_name: The search the configuration comes from.
        trial_key: Its trial in that search.
        method: The PETL method's name.
        config: The trial's flat config (method options and training hyper-parameters).
        seed: Seeds the parameter initialisation, the shuffling and dropout.
        task: The task's name (``vtab/...``).
        backbone: The search's ``BackboneSpec.to_dict()``.
        train_limit: Train on the first this many train800val200 images (smoke tests), or all.
        test_size: Test images (None: the whole test split).
        data_root: Root of the VTAB-1k folders, for non-procedural tasks.
        precision: auto, fp32 or bf16.
        cpus: CPUs for the run (also its torch threads).
        gpus: GPUs for the run; 0 trains on the CPU.
        artifact_dir: Where the tunable weights are saved.
        smoke_test: Recorded with the evaluation.
        cache_dir: The driver's tensor cache; a local Ray's workers may have started with
            another environment, and must read the same cache.
        train_fraction: The fraction of the task's training set its search trained on
            (tasks/scale.py): the run trains on that fraction plus the validation split.
    """

    search_name: str
    trial_key: str
    method: str
    config: dict[str, Any]
    seed: int
    task: str
    backbone: dict[str, Any]
    train_limit: int | None
    test_size: int | None
    data_root: str | None
    precision: str
    cpus: float
    gpus: float
    artifact_dir: str
    smoke_test: bool = False
    cache_dir: str | None = None
    train_fraction: float | None = None


@dataclass(frozen=True)
class EvaluationRun:
    """What one run scored (``test_acc`` is None when it failed; ``error`` says why)."""

    job: EvaluationJob
    test_acc: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    artifact_sha256: str | None = None
    artifact_bytes: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class ConfigurationResult:
    """One evaluated configuration: its test accuracy over seeds, from the store.

    ``std`` is the sample standard deviation over seeds (0 with one seed). ``artifacts`` maps each
    seed to the directory of its saved tunable weights.
    """

    search_name: str
    task: str
    trial_key: str
    method: str
    config: dict[str, Any]
    backbone: dict[str, Any]
    seeds: tuple[int, ...]
    test_accs: tuple[float, ...]
    mean: float
    std: float
    tunable_params: int | None
    tunable_params_without_head: int | None
    artifacts: dict[int, str] = field(default_factory=dict)
    # The search's fraction of the task's training set (None: the task's own protocol, VTAB-1k).
    train_fraction: float | None = None
