"""Pareto fronts and hypervolume on (validation accuracy: max, tunable parameters: min).

Pure functions on points ``(val_acc, tunable_params)``; :class:`autopetl.store.Store` feeds them
the completed trials of a search or a task (pruned and failed trials never reach the front, and
neither does a completed trial whose accuracy is NaN or whose parameter count is unknown).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TypeVar

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
