"""The read side of :class:`autopetl.store.Store`: plain records, Pareto fronts, hypervolume.

Reads run in their own short session and convert rows to frozen records before it closes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.orm import Session

from autopetl.objectives import Objective, objectives_of, parse_objectives, values_of
from autopetl.store import queries
from autopetl.store._engine import StoreError
from autopetl.store._rows import artifact, epoch, evaluation, search, trial
from autopetl.store.models import (
    TRIAL_STATUSES,
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


def check_choice(value: str | None, allowed: tuple[str, ...], what: str) -> None:
    if value is not None and value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")


def find_search_id(conn: Connection | Session, name: str) -> int:
    """The id of the search ``name``.

    Raises:
        StoreError: There is no such search (a user's typo, on the command line).
    """
    found = conn.scalar(select(SearchModel.id).where(SearchModel.name == name))
    if found is None:
        raise StoreError(f"no search named {name!r}; `autopetl searches` lists them")
    return found


class StoreReads:
    """Queries of the store; :class:`autopetl.store.Store` adds the writes."""

    _engine: Engine

    # -- reads ------------------------------------------------------------------------------
    def _searches(self, conn: Session, where: Any = True) -> list[SearchRecord]:
        rows = conn.scalars(select(SearchModel).where(where).order_by(SearchModel.id)).all()
        counts: dict[int, dict[str, int]] = {}
        count_q = select(TrialModel.search_id, TrialModel.status, func.count()).group_by(
            TrialModel.search_id, TrialModel.status
        )
        for search_id, status, n in conn.execute(count_q):
            counts.setdefault(search_id, {})[status] = n
        best: dict[int, float] = {}
        best_q = select(TrialModel.search_id, TrialModel.val_acc).where(
            (TrialModel.status == "completed") & TrialModel.val_acc.is_not(None)
        )
        for search_id, acc in conn.execute(best_q):
            if acc is not None and not math.isnan(acc) and acc > best.get(search_id, -math.inf):
                best[search_id] = acc
        return [search(r, counts.get(r.id, {}), best.get(r.id)) for r in rows]

    def get_search(self, name: str) -> SearchRecord | None:
        """The search ``name``, or None when there is none."""
        with Session(self._engine) as conn:
            found = self._searches(conn, SearchModel.name == name)
        return found[0] if found else None

    def list_searches(self) -> list[SearchRecord]:
        """Every search, oldest first."""
        with Session(self._engine) as conn:
            return self._searches(conn)

    def _trials(self, conn: Session, where: Any) -> list[TrialRecord]:
        q = (
            select(TrialModel, SearchModel.name)
            .join(SearchModel, TrialModel.search_id == SearchModel.id)
            .where(where)
            .order_by(TrialModel.search_id, TrialModel.number, TrialModel.id)
        )
        return [trial(row, name) for row, name in conn.execute(q)]

    def trials(self, search_name: str, status: str | None = None) -> list[TrialRecord]:
        """The trials of a search (optionally of one status), by trial number."""
        check_choice(status, TRIAL_STATUSES, "trial status")
        with Session(self._engine) as conn:
            where = TrialModel.search_id == find_search_id(conn, search_name)
            if status is not None:
                where = where & (TrialModel.status == status)
            return self._trials(conn, where)

    def trial(self, search_name: str, trial_key: str) -> TrialRecord | None:
        with Session(self._engine) as conn:
            where = (TrialModel.search_id == find_search_id(conn, search_name)) & (
                TrialModel.trial_key == trial_key
            )
            found = self._trials(conn, where)
        return found[0] if found else None

    def _children(self, model: Any, search_name: str, trial_key: str | None) -> list[Any]:
        with Session(self._engine) as conn:
            where = TrialModel.search_id == find_search_id(conn, search_name)
            if trial_key is not None:
                where = where & (TrialModel.trial_key == trial_key)
            q = (
                select(model, TrialModel.trial_key)
                .join(TrialModel, model.trial_id == TrialModel.id)
                .where(where)
                .order_by(model.trial_id, model.id)
            )
            return [tuple(r) for r in conn.execute(q)]

    def epochs(self, search_name: str, trial_key: str) -> list[EpochRecord]:
        rows = self._children(EpochModel, search_name, trial_key)
        return sorted((epoch(r, k) for r, k in rows), key=lambda e: e.epoch)

    def evaluations(self, search_name: str, trial_key: str | None = None) -> list[EvaluationRecord]:
        return [
            evaluation(r, k) for r, k in self._children(EvaluationModel, search_name, trial_key)
        ]

    def artifacts(self, search_name: str, trial_key: str | None = None) -> list[ArtifactRecord]:
        return [artifact(r, k) for r, k in self._children(ArtifactModel, search_name, trial_key)]

    # -- Pareto -----------------------------------------------------------------------------
    def _completed(self, search_name: str | None, task: str | None) -> list[TrialRecord]:
        if (search_name is None) == (task is None):
            raise ValueError("give exactly one of search_name and task")
        with Session(self._engine) as conn:
            where = TrialModel.status == "completed"
            if search_name is not None:
                where = where & (TrialModel.search_id == find_search_id(conn, search_name))
            else:
                where = where & (SearchModel.task == task)
            return self._trials(conn, where)

    def pareto_front(
        self,
        search_name: str | None = None,
        task: str | None = None,
        backbone: Mapping[str, Any] | None = None,
        objectives: Sequence[str] | None = None,
    ) -> list[TrialRecord]:
        """Completed trials that no other dominates on the objectives, cheapest first.

        ``objectives`` (names from autopetl/objectives.py) default to the search's own (what it
        was run with), or (val_acc, tunable_params) for a task.

        Give a search, or a task to pool every search of that task on one backbone: accuracies
        compare only within one backbone, weights and input size, so a task whose searches ran on
        several needs ``backbone`` (a search's ``backbone`` dict) to say which. Trials with NaN
        accuracy or an unknown parameter count are left out.

        Raises:
            StoreError: ``task`` has searches on several backbones and ``backbone`` is None.
        """
        chosen = self._objectives(search_name, objectives)
        done = [t for t in self._completed(search_name, task) if values_of(t, chosen) is not None]
        if task is not None:
            backbones = {s.name: s.backbone for s in self.list_searches() if s.task == task}
            if backbone is not None:
                done = [t for t in done if backbones.get(t.search_name) == dict(backbone)]
            elif len({json.dumps(backbones[t.search_name], sort_keys=True) for t in done}) > 1:
                from autopetl.backbones import describe

                shown = sorted({describe(backbones[t.search_name]) for t in done})
                raise StoreError(
                    f"the searches of {task} ran on {len(shown)} backbones ({'; '.join(shown)}): "
                    "their accuracies do not share one front; pass backbone= to choose one"
                )
        values = [values_of(t, chosen) or () for t in done]
        return queries.front(done, values, chosen)

    def _objectives(
        self, search_name: str | None, names: Sequence[str] | None
    ) -> tuple[Objective, ...]:
        if names is not None:
            return parse_objectives(names)
        search = self.get_search(search_name) if search_name is not None else None
        return objectives_of(search.options if search is not None else None)

    def hypervolume(
        self,
        search_name: str | None = None,
        task: str | None = None,
        reference: Sequence[float] | None = None,
        *,
        log_params: bool = True,
        objectives: Sequence[str] | None = None,
    ) -> float:
        """Hypervolume of :meth:`pareto_front` on its objectives (see
        :func:`autopetl.store.queries.hypervolume_of`); ``log_params=False`` measures parameters
        on a linear scale (2 objectives only, :func:`autopetl.store.queries.hypervolume`)."""
        chosen = self._objectives(search_name, objectives)
        front = self.pareto_front(search_name, task, objectives=[o.name for o in chosen])
        values = [values_of(t, chosen) or () for t in front]
        if not log_params:
            if len(chosen) != 2:
                raise StoreError("log_params=False is for (val_acc, tunable_params) only")
            return queries.hypervolume(values, reference, log_params=False)  # type: ignore[arg-type]
        return queries.hypervolume_of(values, chosen, reference)
