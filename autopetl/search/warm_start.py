"""Warm starts: a new search begins with the configurations on related searches' fronts.

Before the sampler proposes anything, the study is seeded (Optuna's ``enqueue_trial``) with the
distinct configurations on the Pareto fronts of source searches: named ones, or with ``auto``
every finished search in the database on the same backbone, weights and input size for another
task. They are ranked by how many of those fronts they sit on and capped at a share of the
budget. Their results on the new task are ordinary trials of the new search: nothing of a source
task's accuracy enters the new study or its front (Feurer et al. 2015's meta-learned initial
designs; Syne Tune's ``ZeroShotTransfer`` does the same from other tasks' best configurations).

Light: no torch or Ray, so a wrong source is refused before anything heavy starts.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autopetl.backbones import describe
from autopetl.errors import ConfigError
from autopetl.search.space import Param, SearchSpace
from autopetl.trial import flat_key, flat_of

if TYPE_CHECKING:  # the store (SQLAlchemy) only where a database is read, not to parse options
    from autopetl.store import Store

# At most this share of the budget is seeded (docs/SEARCH.md, "Warm starts", measures it).
DEFAULT_WARM_SHARE = 0.25
CHOICES_HELP = "auto, none, or NAME[,NAME...] of finished searches"


@dataclass(frozen=True)
class WarmStart:
    """What a search is seeded with, and from where (its lineage)."""

    sources: tuple[str, ...]  # the searches whose fronts were read
    configs: tuple[dict[str, Any], ...]  # enqueued, best ranked first
    left_out: int  # distinct front configurations the new space cannot hold
    capped: int  # distinct ones beyond the cap

    def lineage(self) -> dict[str, Any]:
        """What the search records of it (its options' ``warm_start``)."""
        return {
            "sources": list(self.sources),
            "seeded": len(self.configs),
            "left_out": self.left_out,
            "capped": self.capped,
        }

    def summary(self) -> str:
        """The one line a search prints when it starts."""
        if not self.sources:
            return "warm start: no finished search on this backbone for another task; starting cold"
        names = ", ".join(self.sources)
        line = (
            f"warm start: {len(self.configs)} configurations from the fronts of {names}, "
            "each trained to its last epoch"
        )
        notes = []
        if self.left_out:
            notes.append(f"{self.left_out} left out: this space cannot hold them")
        if self.capped:
            notes.append(f"{self.capped} beyond the cap")
        return line + (f" ({'; '.join(notes)})" if notes else "")


def seeded_from(options: dict[str, Any]) -> str:
    """A search's warm-start lineage (its options' ``warm_start``) in a few words: the searches
    whose fronts seeded it and how many configurations they gave; "" for a cold start."""
    lineage = options.get("warm_start") or {}
    if not lineage.get("sources"):
        return ""
    return f"{', '.join(lineage['sources'])} ({lineage.get('seeded', 0)} configurations)"


def holds(space: SearchSpace, config: dict[str, Any]) -> bool:
    """Whether ``space`` can propose ``config`` exactly: its method is in the space, every
    searched parameter's value lies in that parameter's distribution, and it has no parameter
    the space lacks. Fixed values are the new space's to set (epochs, say)."""
    flat = flat_of(config)
    method = flat.get("method")
    if method not in space.methods:
        return False
    params = {p.name: p for p in space.params_of(method)}
    if set(flat) - {"method"} - set(params):
        return False
    return all(p.kind == "fixed" or _contains(p, flat.get(p.name)) for p in params.values())


def _contains(param: Param, value: Any) -> bool:
    if value is None:
        return False
    if param.kind == "categorical":
        return value in param.choices
    assert param.low is not None and param.high is not None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if not param.low <= value <= param.high:
        return False
    if param.kind == "int" and value != int(value):
        return False
    if param.step is not None:
        steps = (value - param.low) / param.step
        return math.isclose(steps, round(steps), abs_tol=1e-9)
    return True


def optuna_params(space: SearchSpace, config: dict[str, Any]) -> dict[str, Any]:
    """The parameters Optuna samples for ``config`` in ``space`` (what ``enqueue_trial`` takes):
    no fixed values, and no ``method`` when the space has one method only."""
    flat = flat_of(config)
    method = flat["method"]
    out = {"method": method} if len(space.methods) > 1 else {}
    out.update({p.name: flat[p.name] for p in space.params_of(method) if p.kind != "fixed"})
    return out


def parse_choice(text: str) -> str | tuple[str, ...]:
    """``--warm-start``'s value: "auto", "none", or the names it lists."""
    value = text.strip()
    if value in ("auto", "none"):
        return value
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names:
        raise ConfigError(f"--warm-start takes {CHOICES_HELP}, got {text!r}")
    return names


def plan_warm_start(
    store: Store,
    choice: str | tuple[str, ...],
    *,
    task: str,
    backbone: dict[str, Any],
    space: SearchSpace,
    budget: int,
    share: float = DEFAULT_WARM_SHARE,
    exclude: tuple[str, ...] = (),
) -> WarmStart | None:
    """The configurations to seed a new search of ``task`` with (None for ``none``).

    Raises:
        ConfigError: a named search is not there, is not finished, or ran on another backbone,
            weights or input size (its accuracies say nothing of this one's).
    """
    if choice == "none":
        return None
    if choice == "auto":
        sources = [
            s.name
            for s in store.list_searches()
            if s.kind == "search"
            and s.status == "completed"
            and s.task != task
            and s.name not in exclude
            and describe(s.backbone) == describe(backbone)
        ]
    else:
        sources = list(dict.fromkeys(choice))
        check_sources(store, sources, backbone)
    counts: Counter[str] = Counter()
    configs: dict[str, dict[str, Any]] = {}
    for name in sources:
        for trial in store.pareto_front(search_name=name):
            key = flat_key(trial.config)
            counts[key] += 1
            configs.setdefault(key, flat_of(trial.config))
    # Most fronts first; ties keep the order they were found in (Counter is insertion-ordered).
    ranked = [key for key, _ in counts.most_common()]
    held = [key for key in ranked if holds(space, configs[key])]
    cap = max(1, math.floor(share * budget))
    return WarmStart(
        sources=tuple(sources),
        configs=tuple(configs[key] for key in held[:cap]),
        left_out=len(ranked) - len(held),
        capped=max(0, len(held) - cap),
    )


def check_sources(store: Store, names: Sequence[str], backbone: dict[str, Any]) -> None:
    """Refuse, in one line, a named source that cannot seed a search on ``backbone``."""
    for name in names:
        _check_source(store, name, backbone)


def _check_source(store: Store, name: str, backbone: dict[str, Any]) -> None:
    source = store.get_search(name)
    if source is None:
        raise ConfigError(f"--warm-start: no search named {name!r}; `autopetl searches` lists them")
    if source.status != "completed":
        raise ConfigError(
            f"--warm-start: search {name!r} is {source.status}, not completed: its front is not "
            "final; finish it (`autopetl search --resume --name ...`) or leave it out"
        )
    if describe(source.backbone) != describe(backbone):
        raise ConfigError(
            f"--warm-start: search {name!r} ran on {describe(source.backbone)}, this one runs on "
            f"{describe(backbone)}: accuracies on another backbone or input size say nothing here"
        )
