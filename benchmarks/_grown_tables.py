"""A learning-curve table whose space grew: record only what the table lacks, export the whole.

A table is a recorded grid search, and a search resumes only as the search it was (the same
space). When methods join the space file (issue 33: AdaptFormer, SSF, FacT and DoRA joined
default_grid), the recorded search cannot take them, and re-recording the whole grid would cost
hours for curves the table already holds. So the new methods are recorded as a search of their
own, named ``<table>+<method>+...``, over the space restricted to them (written beside the
database, so every sitting resumes the same search), and ``export`` merges its curves into the
table, which then covers the grown space. Only added methods are handled: a change to a method
the table already recorded (another choice, another learning rate) is refused, since the old
curves would no longer be that method's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autopetl.search.replay import CurveTable, config_key
from autopetl.search.replay_tables import table_from_store
from autopetl.search.space import SearchSpace, parse_space, restricted_to


class GrowthError(Exception):
    """The space changed in a way a table extension cannot record."""


@dataclass(frozen=True)
class Growth:
    """What a grown space adds to a recorded table: its methods, as a search of their own."""

    name: str  # the extension search
    methods: tuple[str, ...]
    space: SearchSpace  # the grown space restricted to the added methods

    def write_space(self, folder: Path) -> Path:
        """The extension's space file (the same bytes every sitting: its search resumes)."""
        path = folder / f"{self.name}.yaml"
        path.write_text(yaml.safe_dump(self.space.source, sort_keys=True))
        return path


def growth(store: Any, name: str, space: SearchSpace) -> Growth | None:
    """What ``space`` adds to the table recorded as search ``name``; None if nothing (or no
    table yet: the first sitting records the whole space under ``name``)."""
    recorded = store.get_search(name)
    if recorded is None:
        return None
    old = parse_space(recorded.space, name=recorded.space_name, where=f"search {name}")
    added = tuple(m for m in space.methods if m not in old.methods)
    gone = [m for m in old.methods if m not in space.methods]
    changed = [
        m for m in old.methods if m in space.methods and _method(old, m) != _method(space, m)
    ]
    if gone or changed or _train(old) != _train(space):
        what = [f"{m} removed" for m in gone] + [f"{m} changed" for m in changed]
        if _train(old) != _train(space):
            what.append("the shared train options changed")
        raise GrowthError(
            f"the space of table {name} changed beyond added methods ({', '.join(what)}): its "
            "curves are no longer that space's; record the changed space under a new table name"
        )
    if not added:
        return None
    return Growth(f"{name}+{'+'.join(added)}", added, restricted_to(space, list(added)))


def merged_table(store: Any, name: str, space: SearchSpace) -> CurveTable:
    """The table of search ``name`` with the curves of its extension (if recorded), over
    ``space``; ``meta["missing"]`` counts the grown space's configurations without a curve."""
    base = table_from_store(store, name)
    grown = growth(store, name, space)
    curves = list(base.curves)
    extension = None
    if grown is not None and store.get_search(grown.name) is not None:
        curves += table_from_store(store, grown.name).curves
        extension = grown.name
    wanted = {config_key(c) for c in space.configurations()}
    recorded = {config_key(c.config) for c in curves}
    meta = {
        **base.meta,
        "extended_by": extension,
        "methods": list(space.methods),
        "configurations": len(wanted),
        "missing": len(wanted - recorded),
    }
    return CurveTable(base.name, space, [c for c in curves if config_key(c.config) in wanted], meta)


def _method(space: SearchSpace, method: str) -> Any:
    return (space.source.get("methods") or {}).get(method) or {}


def _train(space: SearchSpace) -> Any:
    return space.source.get("train") or {}
