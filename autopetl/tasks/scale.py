"""Training-data scale (VPT, Fig. 3): train on a fraction of a task's whole training set.

A fraction ``F`` takes the first ``round(F * N)`` images of a fixed, seeded order of the task's
``N`` training images, so subsets are nested: the 10% subset lies inside the 20% one, whatever
else changes between runs. It applies to tasks whose training set is larger than VTAB-1k's 1,000
images: procedural dSprites (VTAB's 80% train part, 589,824 images) and the FGVC tasks (VPT's
``train.json``). A VTAB-1k folder has 800 training images, the whole of what it ships.

The split roles keep their meaning: the search trains on the fraction (the ``train800`` role)
and selects on the validation split, unchanged; ``evaluate`` trains on the fraction plus the
validation split (the ``train800val200`` role) and tests once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from autopetl.errors import ConfigError
from autopetl.tasks.registry import TaskSpec

# Tasks with at most this many training images have no data scale to vary.
MIN_TRAIN_IMAGES = 1000
# The order the subsets are taken from: fixed, so a fraction means the same images in every run.
ORDER_SEED = 0


def parse_fractions(text: str) -> list[float]:
    """``--train-fraction 0.1`` or ``0.1,0.2,0.4``: each in (0, 1], each once, ascending."""
    out = []
    for part in (p.strip() for p in str(text).split(",")):
        try:
            value = float(part)
        except ValueError:
            raise ConfigError(
                f"--train-fraction: {part!r} is not a number; give fractions like 0.1,0.2"
            ) from None
        if not (math.isfinite(value) and 0 < value <= 1):
            raise ConfigError(
                f"--train-fraction: {part} is not in (0, 1]; 0.1 trains on 10% of the training set"
            )
        out.append(value)
    return sorted(set(out))


def check_scalable(task: TaskSpec) -> None:
    """Fail at once for a task whose training set has no scale to vary."""
    if task.layout == "vtab":
        raise ConfigError(
            f"--train-fraction needs a task with more than {MIN_TRAIN_IMAGES} training images; "
            f"{task.name} is a VTAB-1k folder (800 training images). Use vtab/dsprites_loc, "
            "vtab/dsprites_ori (generated, 589,824) or an fgvc/* task"
        )


def subset_size(total: int, fraction: float) -> int:
    """How many of ``total`` training images a fraction trains on (at least one)."""
    return max(1, round(fraction * total))


def fraction_label(fraction: float) -> str:
    """A fraction as a name part and a column: ``0.1`` -> ``10%``, ``0.001`` -> ``0.1%``."""
    return f"{100 * fraction:g}%"


def describe_fractions(fractions: Sequence[float]) -> str:
    return ", ".join(fraction_label(f) for f in fractions)
