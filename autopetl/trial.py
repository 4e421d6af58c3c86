"""What a search's trials and an evaluation's runs share, with no Ray, Optuna or store.

A trial's configuration is a :class:`TrialConfig`. It travels flat
(``{"method": "vpt", "vpt.prompt_length": 10, "lr": ...}``, the form Optuna samples, Tune passes
and the store records), and in Tune also with its Optuna number (:func:`tune_config`,
:func:`trial_number_of`). Both forms are made and parsed here only. :class:`TrialSetup` is what every trial of a search has
in common; :func:`cached_backbone` is this process's frozen backbone; :func:`train_config_of`
the training config of one configuration (its warm-up default included). Both the Ray
trainable (autopetl/search/trainable.py) and autopetl/evaluation/ stand on this module, so
``evaluate --in-process`` imports no Ray.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

# Light at import (the CLI imports the config shape): torch and timm load when a backbone or a
# training config is built.
if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

    from autopetl.backbones import BackboneSpec
    from autopetl.training import TrainConfig

# Training hyper-parameters a space may set (TrainConfig fields that make sense to search).
TRAIN_KEYS = ("lr", "weight_decay", "epochs", "batch_size", "optimizer", "warmup_epochs")
# A method's own training parameters are named <method>.train.<key> (split_config).
TRAIN_PREFIX = ".train."

# Tune carries a trial's Optuna trial number in its config, next to the flat configuration. The
# number stays the same when a Tuner is restarted; Ray's trial ids do not.
NUMBER_KEY = "trial_number"
# ... and, in a multi-task run (several searches in one Tuner), the name of the search the trial
# belongs to: the searcher, the scheduler, the recorder and the trainable route on it.
SEARCH_KEY = "search"
# --smoke-test trains on this many train800 images (and validates on all of val200).
SMOKE_TRAIN_IMAGES = 256
# A --smoke-test search trains each of its many trials on half as many; evaluate re-trains on the
# same. Here, not in pipeline, so that the command line reads them without importing torch.
SMOKE_SEARCH_TRAIN_IMAGES = SMOKE_TRAIN_IMAGES // 2
_BOOKKEEPING = (NUMBER_KEY, SEARCH_KEY)

_BACKBONES: dict[str, VisionTransformer] = {}


@dataclass(frozen=True)
class TrialConfig:
    """One configuration: a method, its options and its training options.

    Its flat form (:meth:`flat`) is the one every writer records and Optuna and Tune carry:
    ``{"method": "vpt", "vpt.prompt_length": 10, "lr": 0.01}``, a method's own training option as
    ``<method>.train.<key>``; :meth:`from_flat` parses it. :meth:`from_record` also reads the
    nested form ``autopetl train`` recorded before (``method_config`` and ``train``).
    """

    method: str
    options: dict[str, Any]
    train: dict[str, Any]

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> TrialConfig:
        """Parse the flat form. Keys that are not configuration are dropped: the trial number,
        and the NaN that Ray's result tables put in a column a trial lacks."""
        method, options, train = split_config(flat)
        return cls(method, options, train)

    @classmethod
    def from_record(cls, config: dict[str, Any]) -> TrialConfig:
        if "method_config" in config and isinstance(config.get("train"), dict):
            train = {k: v for k, v in config["train"].items() if k in TRAIN_KEYS}
            return cls(str(config["method"]), dict(config.get("method_config") or {}), train)
        return cls.from_flat(config)

    def flat(self) -> dict[str, Any]:
        options = {f"{self.method}.{k}": v for k, v in self.options.items()}
        return {
            "method": self.method,
            **options,
            **{k: v for k, v in self.train.items() if k in TRAIN_KEYS},
        }


def flat_of(config: dict[str, Any]) -> dict[str, Any]:
    """The flat configuration in a config that Tune or a result table holds: the trial number
    and the search name left out, and the NaN that Ray's result tables put in a column a trial
    lacks. The Optuna names stay as sampled (``linear.train.lr`` stays a method's own learning
    rate)."""
    return {k: v for k, v in config.items() if k not in _BOOKKEEPING and not _unset(v)}


def flat_key(config: dict[str, Any]) -> str:
    """A configuration's identity as text: equal configurations give equal keys."""
    return json.dumps(flat_of(config), sort_keys=True, default=str)


def tune_config(flat: dict[str, Any], number: int) -> dict[str, Any]:
    """The config Tune carries for Optuna trial ``number``: the flat form, plus the number."""
    return {**flat_of(flat), NUMBER_KEY: int(number)}


def trial_number_of(config: dict[str, Any]) -> int:
    """The Optuna trial number in a config made by :func:`tune_config`."""
    return int(config[NUMBER_KEY])


def search_of(config: dict[str, Any]) -> str:
    """The search a Tune config belongs to (set by the multi-study searcher)."""
    return str(config[SEARCH_KEY])


def warmup_within(requested: float, epochs: int) -> float:
    """The warm-up a run of ``epochs`` gets: at most all epochs but the last (a warm-up as long
    as the run would never reach the full learning rate); none for a one-epoch run. Searches,
    evaluations and ``autopetl train`` all use this one rule."""
    return max(0.0, min(float(requested), epochs - 1.0))


def split_config(config: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A trial's flat config to (method name, method options, training options).

    ``<method>.train.<key>`` is the method's own training parameter (``linear.train.lr``); it
    takes the place of the shared ``<key>``.
    """
    method = config["method"]
    prefix, own_train = f"{method}.", f"{method}{TRAIN_PREFIX}"
    config = flat_of(config)
    options = {
        k[len(prefix) :]: v
        for k, v in config.items()
        if k.startswith(prefix) and not k.startswith(own_train)
    }
    train = {k: v for k, v in config.items() if k in TRAIN_KEYS}
    train |= {k[len(own_train) :]: v for k, v in config.items() if k.startswith(own_train)}
    return method, options, train


def shown_config(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's configuration as a person reads it, the method's name left out: its options,
    then its training options by their one name, whether the space gave them to every method
    (``lr``) or to this method alone (``linear.train.lr``). ``trials``, the search's summary and
    the dashboard all show this, each float with :func:`shown_value`."""
    if not isinstance(config.get("method"), str):
        return flat_of(config)
    _, options, train = split_config(config)
    order = {k: i for i, k in enumerate(TRAIN_KEYS)}
    return {**options, **dict(sorted(train.items(), key=lambda kv: order.get(kv[0], len(order))))}


def shown_value(value: Any) -> str:
    """One rounding for every number of a configuration: 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _unset(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of one search shares (small; the data travel separately)."""

    backbone: BackboneSpec
    num_classes: int
    seed: int
    precision: str = "auto"
    cpus_per_trial: float = 1.0


def cached_backbone(spec: BackboneSpec, num_classes: int) -> VisionTransformer:
    """The frozen backbone of this worker process, built on first use.

    Kept across tasks: a worker of a multi-task run takes trials of several tasks, and their
    class counts differ only in the head, which every trial replaces anyway (pipeline.attach).
    So a task with another class count gets a head of its size, not a new backbone.
    """
    from autopetl.methods.io import rebuildable_backbone

    key = json.dumps(spec.to_dict(), sort_keys=True)
    if key not in _BACKBONES:
        _BACKBONES.clear()  # one backbone per worker: a new backbone replaces the old one
        # A random-init backbone comes from a fixed seed, so every worker of a search (and later
        # evaluate and serve) holds the same frozen weights, whatever its random state.
        _BACKBONES[key] = rebuildable_backbone(spec, num_classes)
    backbone = _BACKBONES[key]
    if backbone.num_classes != num_classes:
        backbone.reset_classifier(num_classes)
        backbone.requires_grad_(False)
    return backbone


def train_config_of(config: TrialConfig, setup: TrialSetup, device: str) -> TrainConfig:
    from autopetl.training import TrainConfig

    train_values = dict(config.train)
    epochs = int(train_values.get("epochs", 10))
    train_values["warmup_epochs"] = warmup_within(train_values.get("warmup_epochs", 1.0), epochs)
    # TrainConfig checks the value; the cast only tells mypy it will.
    precision = cast(Any, setup.precision)
    return TrainConfig(seed=setup.seed, precision=precision, device=device, **train_values)
