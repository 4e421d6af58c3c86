"""ORM rows to plain records (done inside the session, so nothing lazy-loads after it closes)."""

from __future__ import annotations

from autopetl.objectives import MEASURES as MEASURE_COLUMNS
from autopetl.store.models import (
    ArtifactModel,
    EpochModel,
    EvaluationModel,
    SearchModel,
    TrialModel,
)
from autopetl.store.records import (
    ArtifactRecord,
    EpochRecord,
    EvaluationRecord,
    SearchRecord,
    TrialRecord,
)


def search(row: SearchModel, counts: dict[str, int], best: float | None) -> SearchRecord:
    return SearchRecord(
        id=row.id,
        name=row.name,
        task=row.task,
        space_name=row.space_name,
        space=row.space,
        space_text=row.space_text,
        space_sha256=row.space_sha256,
        backbone=row.backbone,
        weights_source=row.weights_source,
        budget=row.budget,
        options=row.options,
        status=row.status,
        code_version=row.code_version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        trial_counts=dict(counts),
        best_val_acc=best,
    )


def trial(row: TrialModel, search_name: str) -> TrialRecord:
    return TrialRecord(
        id=row.id,
        search_name=search_name,
        trial_key=row.trial_key,
        number=row.number,
        method=row.method,
        config=row.config,
        status=row.status,
        val_acc=row.val_acc,
        last_val_acc=row.last_val_acc,
        best_epoch=row.best_epoch,
        tunable_params=row.tunable_params,
        tunable_params_without_head=row.tunable_params_without_head,
        wall_time_s=row.wall_time_s,
        images_per_s=row.images_per_s,
        peak_memory_mb=row.peak_memory_mb,
        cost=row.cost,
        epochs_done=row.epochs_done,
        attempts=row.attempts,
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        measures={name: getattr(row, name) for name in MEASURE_COLUMNS},
    )


def epoch(row: EpochModel, trial_key: str) -> EpochRecord:
    return EpochRecord(
        trial_key=trial_key,
        epoch=row.epoch,
        train_loss=row.train_loss,
        val_acc=row.val_acc,
        lr=row.lr,
        seconds=row.seconds,
    )


def evaluation(row: EvaluationModel, trial_key: str) -> EvaluationRecord:
    return EvaluationRecord(
        trial_key=trial_key,
        seed=row.seed,
        split=row.split,
        test_acc=row.test_acc,
        metrics=row.metrics,
    )


def artifact(row: ArtifactModel, trial_key: str) -> ArtifactRecord:
    return ArtifactRecord(
        trial_key=trial_key,
        kind=row.kind,
        path=row.path,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
    )
