"""Choosing configurations to evaluate: by validation accuracy only, never by a test result."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from autopetl.evaluation.jobs import SELECTIONS, EvaluationError

if TYPE_CHECKING:
    from autopetl.store import SearchRecord, Store, TrialRecord


# -- selection (validation accuracy only) ---------------------------------------------------------
def _by_val(t: TrialRecord) -> tuple[float, float, int]:
    """Higher val accuracy first; then fewer parameters, then the earlier trial."""
    params = t.tunable_params if t.tunable_params is not None else math.inf
    return (float(t.val_acc or 0.0), -params, -(t.number if t.number is not None else 0))


def select_configurations(
    store: Store, search_name: str, selection: str = "pareto", trial_key: str | None = None
) -> list[TrialRecord]:
    """The trials of a search to evaluate, chosen from validation accuracy alone.

    Args:
        store: The store.
        search_name: The search.
        selection: ``pareto`` (the front on val accuracy and tunable parameters), ``best`` (the
            highest val accuracy; fewer parameters break ties), ``best-per-method`` (``best``
            within each method: a table of methods, as the papers' Table 1 and Fig. 3) or
            ``trial`` (``trial_key``).
        trial_key: The trial, with ``selection="trial"``.

    Raises:
        StoreError: There is no such search.
        EvaluationError: No completed trial, an unknown or unfinished trial, a bad selection.
    """
    if selection not in SELECTIONS:
        raise EvaluationError(
            f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}"
        )
    completed = store.trials(search_name, status="completed")  # raises on an unknown search
    if selection == "trial":
        if trial_key is None:
            raise EvaluationError("selection 'trial' needs a trial key")
        trial = store.trial(search_name, str(trial_key))
        if trial is None:
            raise EvaluationError(
                f"search {search_name!r} has no trial {trial_key!r}; "
                f"`autopetl trials --search {search_name}` lists them"
            )
        if trial.status != "completed":
            raise EvaluationError(
                f"trial {trial_key!r} of search {search_name!r} is {trial.status}; "
                f"only completed trials (trained to their last epoch) can be evaluated"
            )
        return [trial]
    ranked = [t for t in completed if t.val_acc is not None and not math.isnan(t.val_acc)]
    if not ranked:
        raise EvaluationError(
            f"search {search_name!r} has no completed trials to evaluate; "
            f"run or resume it first (`autopetl search --name {search_name} ...`)"
        )
    if selection == "best":
        return [max(ranked, key=_by_val)]
    if selection == "best-per-method":
        methods = sorted({t.method or "" for t in ranked})
        return [max((t for t in ranked if (t.method or "") == m), key=_by_val) for m in methods]
    front = store.pareto_front(search_name=search_name)
    if not front:
        raise EvaluationError(f"search {search_name!r} has no Pareto front to evaluate")
    return front


def search_named(store: Store, name: str) -> SearchRecord:
    found = store.get_search(name)
    if found is None:
        from autopetl.store import StoreError

        raise StoreError(f"no search named {name!r}; `autopetl searches` lists them")
    return found
