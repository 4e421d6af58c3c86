"""Pareto fronts and hypervolume on (validation accuracy: max, tunable parameters: min).

Pure functions on points ``(val_acc, tunable_params)``; :class:`autopetl.store.Store` feeds them
the completed trials of a search or a task (pruned and failed trials never reach the front, and
neither does a completed trial whose accuracy is NaN or whose parameter count is unknown).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from autopetl.objectives import Objective

T = TypeVar("T")
Point = tuple[float, float]  # (val_acc, tunable_params)


def dominates(a: Point, b: Point) -> bool:
    """``a`` is at least as good as ``b`` on both objectives and strictly better on one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def non_dominated(items: Sequence[T], points: Sequence[Point]) -> list[T]:
    """The items whose points no other point dominates, ordered by tunable parameters, ascending.

    Equal points do not dominate each other, so duplicates are all kept. Points with a non-finite
    coordinate are dropped first. O(n²), fine for the hundreds of trials a search runs.
    """
    valid = [(item, p) for item, p in zip(items, points, strict=True) if all(map(math.isfinite, p))]
    front = [
        (item, p) for item, p in valid if not any(dominates(q, p) for _, q in valid if q is not p)
    ]
    front.sort(key=lambda ip: (ip[1][1], -ip[1][0]))
    return [item for item, _ in front]


def default_reference(points: Iterable[Point]) -> Point:
    """Accuracy 0 and 1.1 times the largest parameter count (1.0 when there are no points)."""
    params = [p for _, p in points if math.isfinite(p)]
    return (0.0, 1.1 * max(params) if params else 1.0)


def hypervolume(
    points: Iterable[Point], reference: Point | None = None, *, log_params: bool = True
) -> float:
    """The area dominated by ``points`` and bounded by ``reference``, in (accuracy, params) units.

    For a front sorted by parameters x₁ < … < xₙ (accuracies a₁ < … < aₙ) and reference (r_a, r_x)
    this is Σᵢ (xᵢ₊₁ − xᵢ)·(aᵢ − r_a) with xₙ₊₁ = r_x: the union of the rectangles
    [xᵢ, r_x] × [r_a, aᵢ]. Points not strictly better than the reference on both objectives add
    nothing; dominated points add nothing either.

    Args:
        points: ``(val_acc, tunable_params)`` pairs; any order, dominated ones allowed.
        reference: ``(val_acc, tunable_params)`` of the worst corner; default
            :func:`default_reference` of the points. Fix it to compare searches with each other.
        log_params: Measure parameters as ``log10(1 + params)`` (the default): PETL parameter
            counts span orders of magnitude (a linear head vs full fine-tuning), and on a linear
            axis the area would be almost all the gap to the largest model's count.
    """
    pts = [(float(a), float(p)) for a, p in points]
    if reference is None:
        reference = default_reference(pts)
    ref_acc, ref_params = float(reference[0]), float(reference[1])

    def x(params: float) -> float:
        return math.log10(1.0 + params) if log_params else params

    inside = [(a, p) for a, p in pts if a > ref_acc and p < ref_params and math.isfinite(a)]
    front: list[Point] = non_dominated(inside, inside)
    area = 0.0
    for i, (acc, params) in enumerate(front):
        next_x = x(front[i + 1][1]) if i + 1 < len(front) else x(ref_params)
        area += (next_x - x(params)) * (acc - ref_acc)
    return area


# -- any number of objectives (autopetl/objectives.py) --------------------------------------------
def minimised(values: Sequence[float], objectives: Sequence[Objective]) -> tuple[float, ...]:
    """Values on the scale every comparison uses: each smaller-is-better, log where asked."""
    return tuple(o.minimised(v) for o, v in zip(objectives, values, strict=True))


def front(
    items: Sequence[T], values: Sequence[Sequence[float]], objectives: Sequence[Objective]
) -> list[T]:
    """The items no other dominates on ``objectives`` (n of them), cheapest on the second first.

    Values with a non-finite coordinate are dropped; equal points are all kept.
    """
    valid = [
        (item, minimised(v, objectives))
        for item, v in zip(items, values, strict=True)
        if all(math.isfinite(float(x)) for x in v)
    ]

    def beats(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and any(
            x < y for x, y in zip(a, b, strict=True)
        )

    kept = [(item, p) for item, p in valid if not any(beats(q, p) for _, q in valid if q is not p)]
    kept.sort(key=lambda ip: (*ip[1][1:], ip[1][0]))
    return [item for item, _ in kept]


def default_reference_of(
    values: Sequence[Sequence[float]], objectives: Sequence[Objective]
) -> tuple[float, ...]:
    """The worst corner: 0 for an accuracy-like objective (max), 1.1 x the largest value else."""
    out = []
    for i, o in enumerate(objectives):
        if o.direction == "max":
            out.append(0.0)
        else:
            seen = [float(v[i]) for v in values if math.isfinite(float(v[i]))]
            out.append(1.1 * max(seen) if seen else 1.0)
    return tuple(out)


def hypervolume_of(
    values: Sequence[Sequence[float]],
    objectives: Sequence[Objective],
    reference: Sequence[float] | None = None,
) -> float:
    """The volume dominated by ``values`` up to ``reference``, on the comparison scale.

    Exact, by slicing along the last objective (HSO): O(n^d), fine for the fronts of hundreds of
    trials on 2 or 3 objectives. With (val_acc, tunable_params) it equals :func:`hypervolume`.
    """
    ref = minimised(reference or default_reference_of(values, objectives), objectives)
    points = [minimised(v, objectives) for v in values if all(math.isfinite(float(x)) for x in v)]
    inside = [p for p in points if all(x < r for x, r in zip(p, ref, strict=True))]
    return _hso(inside, ref)


def _hso(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    if not points:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in points)
    ordered = sorted(points, key=lambda p: p[-1])
    volume = 0.0
    for i, p in enumerate(ordered):
        upper = ordered[i + 1][-1] if i + 1 < len(ordered) else ref[-1]
        if upper > p[-1]:
            volume += (upper - p[-1]) * _hso([q[:-1] for q in ordered[: i + 1]], ref[:-1])
    return volume
