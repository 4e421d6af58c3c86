"""Plain, frozen records the store returns: detached from any session, safe to keep and pickle."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


@dataclass(frozen=True)
class _Record:
    def to_dict(self) -> dict[str, Any]:
        """The record as a dict of plain values (datetimes as ISO 8601 strings)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class SearchRecord(_Record):
    """A search. ``trial_counts`` maps each trial status to its number of trials."""

    id: int
    name: str
    task: str
    space_name: str
    space: dict[str, Any]
    space_text: str | None
    space_sha256: str
    backbone: dict[str, Any]
    weights_source: str | None
    budget: int | None
    options: dict[str, Any]
    status: str
    code_version: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    trial_counts: dict[str, int] = field(default_factory=dict)
    best_val_acc: float | None = None  # over completed trials

    @property
    def kind(self) -> str:
        """``search``, or ``train`` for a one-off `autopetl train` run (a search of one trial)."""
        return "train" if self.options.get("command") == "train" else "search"


@dataclass(frozen=True)
class TrialRecord(_Record):
    """A trial; ``val_acc`` is its objective: validation accuracy after the last epoch it trained."""

    id: int
    search_name: str
    trial_key: str
    number: int | None
    method: str | None
    config: dict[str, Any]
    status: str
    val_acc: float | None
    last_val_acc: float | None
    best_epoch: int | None
    tunable_params: int | None
    tunable_params_without_head: int | None
    wall_time_s: float | None
    images_per_s: float | None
    peak_memory_mb: float | None
    cost: dict[str, Any]
    epochs_done: int
    attempts: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    # The objectives measured once per configuration other than tunable_params, by name
    # (autopetl/objectives.py): inference_gflops, folded_gflops. None where not measured (older
    # trials).
    measures: dict[str, float | None] = field(default_factory=dict)

    def objective(self, name: str) -> float | None:
        """The value of the objective ``name`` (val_acc, tunable_params or a measure)."""
        value = getattr(self, name, None) if name in ("val_acc", "tunable_params") else None
        return value if value is not None else self.measures.get(name)


@dataclass(frozen=True)
class EpochRecord(_Record):
    trial_key: str
    epoch: int
    train_loss: float | None
    val_acc: float | None
    lr: float | None
    seconds: float | None


@dataclass(frozen=True)
class EvaluationRecord(_Record):
    trial_key: str
    seed: int
    split: str
    test_acc: float | None
    metrics: dict[str, Any]


@dataclass(frozen=True)
class ArtifactRecord(_Record):
    trial_key: str
    kind: str
    path: str
    sha256: str | None
    size_bytes: int | None
