"""A learning-curve table from a recorded search in the store (benchmarks/learning_curves.py)."""

from __future__ import annotations

from autopetl.errors import ConfigError
from autopetl.search.replay import Curve, CurveTable, config_key
from autopetl.search.space import parse_space, restricted_to
from autopetl.store import Store


def table_from_store(
    store: Store, search_name: str, methods: list[str] | None = None
) -> CurveTable:
    """The curves a recorded search holds: its completed trials, every epoch of each.

    A table is complete when every configuration of its space has a curve (``meta["missing"]``
    is 0); a search still being recorded exports what it has so far. ``methods`` keeps some
    methods of the space only: a sub-table, complete before the whole is.
    """
    search = store.get_search(search_name)
    if search is None:
        raise ConfigError(f"no search named {search_name!r}; `autopetl searches` lists them")
    space = parse_space(search.space, name=search.space_name, where=f"search {search_name}")
    if methods:
        space = restricted_to(space, methods)
    curves = []
    for trial in store.trials(search_name, status="completed"):
        epochs = store.epochs(search_name, trial.trial_key)
        if trial.tunable_params is None or any(
            e.val_acc is None or e.seconds is None for e in epochs
        ):
            continue
        curves.append(
            Curve(
                trial.config,
                trial.tunable_params,
                tuple(float(e.val_acc) for e in epochs),  # type: ignore[arg-type]  # checked
                tuple(float(e.seconds) for e in epochs),  # type: ignore[arg-type]
            )
        )
    recorded = {config_key(c.config) for c in curves}
    wanted = {config_key(c) for c in space.configurations()}
    meta = {
        "search": search_name,
        "methods": list(space.methods),
        "task": search.task,
        "backbone": search.backbone,
        "options": search.options,
        "configurations": len(wanted),
        "missing": len(wanted - recorded),
    }
    return CurveTable(
        search_name, space, [c for c in curves if config_key(c.config) in wanted], meta
    )
