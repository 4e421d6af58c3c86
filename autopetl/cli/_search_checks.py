"""What ``autopetl search`` checks before Ray starts: that the backbone can run the space, and
whether a search being resumed has budget left."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from autopetl.cli._console import console
from autopetl.cli._invocation import command
from autopetl.errors import ConfigError, SearchConflictError

if TYPE_CHECKING:
    from autopetl.backbones import BackboneSpec
    from autopetl.search.space import SearchSpace
    from autopetl.store import Store
    from autopetl.tasks import TaskSpec


def check_methods_apply(space: SearchSpace, spec: BackboneSpec, family: str) -> None:
    """Refuse, before Ray starts, a space that asks the backbone for what it cannot run: a method
    not written for its family, or an option value (a fixed value, a choice, an end of a range)
    that its method refuses there (vpt's location add on a Swin). A refusal that only a
    combination of values shows is left to each trial's attach, which says it in the same words.
    """
    from autopetl.methods.registry import build_method, methods_for, not_applicable
    from autopetl.search.space import edge_values
    from autopetl.trial import TRAIN_PREFIX

    refused = [m for m in space.methods if not_applicable(m, family)]
    if refused:
        raise ConfigError(
            f"space {space.name!r} searches {', '.join(refused)}, which do not apply to "
            f"{spec.name} (a {family} backbone); on {family} the methods are "
            f"{', '.join(methods_for(family))}: use --space {family} or a space of those"
        )
    for name, params in space.methods.items():
        for param in params:
            if TRAIN_PREFIX in param.name:
                continue
            for value in edge_values(param):
                reason = build_method(name, {param.name.partition(".")[2]: value}).refuses(family)
                if reason:
                    raise ConfigError(
                        f"space {space.name!r} has {param.name} {value}, which {spec.name} "
                        f"cannot run: {reason}; use --space {family} or a space without it"
                    )


def already_met(
    store: Store,
    name: str,
    task: TaskSpec,
    space: SearchSpace,
    spec: BackboneSpec,
    args: argparse.Namespace,
    fraction: float | None = None,
) -> bool:
    """Check a search being resumed before its data load or Ray: the same search, budget left."""
    from autopetl.search.plan import conflict_message, resume_conflicts

    existing = store.get_search(name)
    if existing is None:
        return False
    conflicts = resume_conflicts(
        existing,
        task=task.name,
        space=space,
        backbone=spec,
        smoke_test=args.smoke_test,
        objectives=[o.name for o in args.objectives],
        train_fraction=fraction,
    )
    if conflicts:
        raise SearchConflictError(conflict_message(name, conflicts))
    finished = sum(existing.trial_counts.get(s, 0) for s in ("completed", "pruned"))
    if finished < args.budget:
        return False
    console.print(
        f"search {name} already has {finished} finished trials, so a budget of "
        f"{args.budget} is met: nothing to run (a larger --budget continues it)",
        markup=False,
    )
    console.print("  " + command(f"trials --search {name} --pareto"), markup=False)
    return True
