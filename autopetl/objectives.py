"""What a search optimises: each objective once, as data, read by every part that needs it.

An :class:`Objective` says its name (the key in a trial's results, the store's column and the CLI
name), its direction, how it is shown, whether it is compared on a log scale, and how it is
measured: ``val_acc`` is reported by training at every epoch; the others are properties of the
adapted model, counted once per configuration before it trains (:func:`measure`). The searcher
(Optuna's directions), the schedulers (MO-ASHA ranks by all of a search's objectives), the
store's front and hypervolume, the CLI's tables and the dashboard read this registry; a search
records the names it ran with (``options["objectives"]``).

Adding one: an entry in :data:`OBJECTIVES` with its measuring function below, a column of that
name in ``store/models.py``, and the Alembic migration that adds the column (3 files).

Importing this module imports no torch (the CLI must start at once); measuring does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from autopetl.errors import ConfigError


@dataclass(frozen=True)
class Objective:
    """One objective of a search.

    Attributes:
        name: Result key, store column and CLI name.
        direction: ``max`` or ``min``.
        label: How tables, charts and messages name it.
        kind: How a value is shown: ``percent`` (a fraction), ``count`` or ``float``.
        log_scale: Compared as ``log10(1 + value)`` (fronts' hypervolume, MO-ASHA's ranks):
            parameter counts span five decades, and on a linear scale every small configuration
            would look alike.
        measure: For objectives of the model itself: ``measure(model, img_size)``, called once
            per configuration before training. None when training reports it (accuracy).
        doc: How it is measured, in a sentence.
    """

    name: str
    direction: Literal["max", "min"]
    label: str
    kind: Literal["percent", "count", "float"]
    log_scale: bool = False
    measure: Callable[[Any, int], float] | None = None
    doc: str = ""

    def show(self, value: float | None) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "-"
        if self.kind == "percent":
            return f"{value:.2%}"
        if self.kind == "count":
            return f"{int(value):,}"
        return f"{value:.3f}"

    def minimised(self, value: float) -> float:
        """The value on the scale every comparison uses: smaller is better, log where asked."""
        v = math.log10(1.0 + max(float(value), 0.0)) if self.log_scale else float(value)
        return -v if self.direction == "max" else v


def _tunable_params(model: Any, img_size: int) -> float:
    return float(model.num_tunable())


def _inference_gflops(model: Any, img_size: int) -> float:
    """GFLOPs of one image's forward pass at the model's input size (torch's FLOP counter).

    Counted on an eval forward in fp32 on the CPU of a (1, 3, S, S) zero image: FLOPs
    depend on shapes, not values. Matrix products count 2 FLOPs per multiply-add, as torch's
    counter does; elementwise work (norms, softmax, GELU) is not counted, which is the usual
    convention (fvcore, timm's tables) and leaves the attention and MLP matmuls that dominate.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters())
    x = torch.zeros(1, 3, img_size, img_size, device=param.device, dtype=param.dtype)
    # timm's fused attention (scaled_dot_product_attention) is not counted by torch's counter
    # on CPU (the attention matmuls went missing). Count the explicit form.
    fused = [m for m in model.modules() if getattr(m, "fused_attn", False) is True]
    for m in fused:
        m.fused_attn = False
    was_training = model.training
    model.eval()
    try:
        # Not under no_grad: the counter's module tracker then fails on modules that are handed
        # a parameter (prompt modules); one image's graph costs nothing, and is dropped at once.
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
        for m in fused:
            m.fused_attn = True
    return counter.get_total_flops() / 1e9


def _folded_gflops(model: Any, img_size: int) -> float:
    """GFLOPs of one image's forward once every increment that folds into the frozen weights is
    merged: what a dedicated one-task deployment of the model costs.

    A wrapper whose term merges into the frozen module it wraps says so (``FOLDS``: LoRA and
    DoRA's low-rank updates, SSF's scales and shifts, FacT's increments); merged, it is that
    module with other weights, so the count is taken with each such wrapper swapped for its
    frozen module (``SHARED``) and swapped back after. FLOPs depend on shapes, not values, so
    no weight is merged for this. What does not fold (prompts, adapters, AdaptFormer's branch)
    costs what it serves.
    """
    swapped: list[tuple[Any, str, Any]] = []
    outer: list[str] = []
    for name, module in list(model.named_modules()):
        if not getattr(type(module), "FOLDS", False) or not name:
            continue
        if any(name.startswith(f"{o}.") for o in outer):
            continue  # inside a wrapper already swapped out
        outer.append(name)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        swapped.append((parent, child, module))
    try:
        for parent, child, module in swapped:
            setattr(parent, child, getattr(module, module.SHARED))
        return _inference_gflops(model, img_size)
    finally:
        for parent, child, module in swapped:
            setattr(parent, child, module)


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective(
            "val_acc",
            "max",
            "val accuracy",
            "percent",
            doc="accuracy on the validation split after the last epoch",
        ),
        Objective(
            "tunable_params",
            "min",
            "tunable parameters",
            "count",
            log_scale=True,
            measure=_tunable_params,
            doc="parameters that train, the task head included",
        ),
        Objective(
            "inference_gflops",
            "min",
            "inference GFLOPs",
            "float",
            measure=_inference_gflops,
            doc="GFLOPs of one image's forward pass at the input size (torch's FLOP counter): "
            "what the adapted model costs to serve",
        ),
        Objective(
            "folded_gflops",
            "min",
            "folded GFLOPs",
            "float",
            measure=_folded_gflops,
            doc="inference GFLOPs once the increments that fold into the frozen weights are "
            "merged (LoRA, DoRA, SSF, FacT: the backbone's own cost): a dedicated one-task "
            "deployment; methods that do not fold cost what they serve",
        ),
    )
}
DEFAULT_OBJECTIVES: tuple[str, ...] = ("val_acc", "tunable_params")
# Measured objectives kept in a trial's ``measures`` (a column each in the store); accuracy and
# parameters predate the registry and are fields of their own everywhere.
MEASURES: tuple[str, ...] = tuple(
    name for name, o in OBJECTIVES.items() if o.measure is not None and name != "tunable_params"
)


def parse_objectives(text: str | Sequence[str]) -> tuple[Objective, ...]:
    """``val_acc,tunable_params[,inference_gflops]``: known names, no repeats, accuracy first.

    Accuracy comes first because single-objective schedulers (ASHA) and every report rank by it.
    """
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise ConfigError(f"unknown objective {unknown[0]!r}; choose from {', '.join(OBJECTIVES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"an objective is named twice in {','.join(names)}")
    if len(names) < 2 or names[0] != "val_acc":
        raise ConfigError(
            "objectives start with val_acc and name at least one cost, "
            f"e.g. {','.join(DEFAULT_OBJECTIVES)} or val_acc,tunable_params,inference_gflops"
        )
    return tuple(OBJECTIVES[n] for n in names)


def objectives_of(options: Mapping[str, Any] | None) -> tuple[Objective, ...]:
    """The objectives a search recorded in its options (searches before them: the default)."""
    return parse_objectives((options or {}).get("objectives") or DEFAULT_OBJECTIVES)


def measure(model: Any, img_size: int) -> dict[str, float]:
    """Every model objective of the registry, counted once for a configuration.

    All are measured whichever a search optimises, so that any search's trials can later be
    compared on any of them (the dashboard, ``autopetl trials``).
    """
    out = {}
    for o in OBJECTIVES.values():
        if o.measure is not None:
            value = o.measure(model, img_size)
            out[o.name] = int(value) if o.kind == "count" else value
    return out


def values_of(record: Any, objectives: Iterable[Objective]) -> tuple[float, ...] | None:
    """A record's values of ``objectives`` (attributes or keys); None if one is missing."""
    out = []
    for o in objectives:
        if isinstance(record, Mapping):
            value = record.get(o.name)
        elif hasattr(record, "objective"):
            value = record.objective(o.name)
        else:
            value = getattr(record, o.name, None)
        if value is None or not math.isfinite(float(value)):
            return None
        out.append(float(value))
    return tuple(out)
