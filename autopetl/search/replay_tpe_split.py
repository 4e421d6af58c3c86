"""The finished trials of a replayed study, kept up to date, and TPE's split of them.

Optuna's TPE reads every trial of the study several times a suggestion and splits them into
"below" and "above" in Python. In a replay the study only grows, and a finished trial never
changes: :class:`FinishedTrials` looks at each trial until it is finished, then keeps its number
in order. :func:`split` gives TPESampler's split from those numbers, for the case a replay always
is (several objectives, no constraints, no intermediate values); :mod:`autopetl.search.replay_tpe`
uses Optuna's own split otherwise.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np
from optuna.samplers._tpe import sampler as tpe_module
from optuna.study._multi_objective import _fast_non_domination_rank
from optuna.trial import FrozenTrial, TrialState


class NumberedTrials(list):  # type: ignore[type-arg]
    """Trials as TPESampler passes them to its Parzen estimators, with their numbers in order.

    ``above`` holds no trial objects, only numbers: the sampler reads its observations from
    columns by number (ReplayTPESampler._get_internal_repr), so the thousands of stopped trials
    are never listed one by one.
    """

    def __init__(self, trials: list[FrozenTrial], numbers: np.ndarray) -> None:
        super().__init__(trials)
        self.numbers = numbers


@dataclass
class FinishedTrials:
    """Which trials of a study (index = number, as in Optuna's in-memory storage) are finished,
    and the complete ones' losses, kept in number order as they finish."""

    signs: list[float]  # -1.0 for an objective to maximise, 1.0 to minimise: Optuna's losses
    seen: int = 0  # trials[:seen] have been looked at
    open: set[int] = field(default_factory=set)  # numbers not finished when last looked at
    complete: list[int] = field(default_factory=list)  # in number order
    pruned: list[int] = field(default_factory=list)
    plain: bool = True  # index = number, and no stopped trial has intermediate values
    lvals: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # complete, in order
    point_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    points: dict[tuple[float, ...], int] = field(default_factory=dict)  # distinct loss -> id

    def update(self, trials: list[FrozenTrial]) -> list[int]:
        """Look at the trials not finished before; the numbers that finished since, in order."""
        for i in range(self.seen, len(trials)):
            if trials[i].number != i:
                self.plain = False
                return []
            self.open.add(i)
        self.seen = len(trials)
        done = []
        for number in sorted(self.open):
            trial = trials[number]
            if trial.state == TrialState.COMPLETE:
                self._add_complete(number, trial)
            elif trial.state == TrialState.PRUNED:
                bisect.insort(self.pruned, number)
                self.plain = self.plain and not trial.intermediate_values
            elif trial.state != TrialState.FAIL:
                continue  # running or waiting: looked at again next time
            self.open.discard(number)
            if trial.state != TrialState.FAIL:  # TPE reads no failed trial
                done.append(number)
        return done

    def _add_complete(self, number: int, trial: FrozenTrial) -> None:
        at = bisect.bisect(self.complete, number)
        self.complete.insert(at, number)
        # As TPESampler computes it: np.array of the values, times the signs (in place).
        row = np.array([trial.values])
        row *= self.signs
        if self.lvals.shape[1] != row.shape[1]:
            self.lvals = np.zeros((0, row.shape[1]))
        self.lvals = np.insert(self.lvals, at, row[0], axis=0)
        point = self.points.setdefault(tuple(row[0].tolist()), len(self.points))
        self.point_ids = np.insert(self.point_ids, at, point)


@dataclass
class Split:
    """One suggestion's trials split as TPESampler splits them."""

    number: int  # the trial being suggested for
    finished: int  # complete and stopped trials: what TPE's start-up count reads
    below: NumberedTrials
    above: NumberedTrials
    running: dict[int, FrozenTrial]  # the other running trials (constant liar), in ``above``


def split(
    finished: FinishedTrials,
    trials: list[FrozenTrial],
    number: int,
    n_below: int,
    running: list[FrozenTrial],
) -> Split:
    """TPESampler's ``_split_trials`` (Optuna 5.1) where no trial is infeasible and no stopped
    trial reported an intermediate value: the complete trials split by non-domination rank with
    the hypervolume tie-break, then the first stopped trials by number (their scores all tie,
    and Python's sort is stable), running trials above."""
    below_complete, above_complete = _split_complete(finished, n_below)
    pruned = finished.pruned
    k = min(max(0, n_below - len(below_complete)), len(pruned))
    below_numbers = np.sort(
        np.concatenate([below_complete, np.asarray(pruned[:k], dtype=np.int64)])
    )
    above_numbers = np.sort(
        np.concatenate(
            [
                above_complete,
                np.asarray(pruned[k:], dtype=np.int64),
                np.array([t.number for t in running], dtype=np.int64),
            ]
        )
    )
    below = NumberedTrials([trials[n] for n in below_numbers.tolist()], below_numbers)
    return Split(
        number=number,
        finished=len(finished.complete) + len(pruned),
        below=below,
        above=NumberedTrials([], above_numbers),
        running={t.number: t for t in running},
    )


def _split_complete(finished: FinishedTrials, n_below: int) -> tuple[np.ndarray, np.ndarray]:
    """``_split_complete_trials_multi_objective`` of Optuna 5.1 on the kept losses: numbers."""
    numbers = np.asarray(finished.complete, dtype=np.int64)
    n_below = min(n_below, len(numbers))
    if n_below == 0:
        return numbers[:0], numbers
    if n_below == len(numbers):
        return numbers, numbers[:0]
    lvals = finished.lvals
    nondomination_ranks = _nondomination_ranks(finished, n_below)
    counts = np.bincount(nondomination_ranks)
    ranks = np.nonzero(counts)[0]  # np.unique(ranks, return_counts=True), without the sort
    rank_counts = counts[ranks]
    last_rank_before_tiebreak = int(np.max(ranks[np.cumsum(rank_counts) <= n_below], initial=-1))
    indices = np.arange(len(numbers))
    indices_below = indices[nondomination_ranks <= last_rank_before_tiebreak]
    if indices_below.size < n_below:  # tie-break: hypervolume subset selection, as Optuna
        need_tiebreak = nondomination_ranks == last_rank_before_tiebreak + 1
        rank_i_lvals = lvals[need_tiebreak]
        subset_size = n_below - indices_below.size
        selected_indices = tpe_module._solve_hssp_with_cache(
            tuple(rank_i_lvals.ravel()),
            tuple(indices[need_tiebreak]),
            subset_size,
            tuple(tpe_module._get_reference_point(rank_i_lvals)),
        )
        indices_below = np.append(indices_below, selected_indices)
    below = np.zeros(len(numbers), dtype=bool)
    below[indices_below.astype(np.int64)] = True
    return numbers[below], numbers[~below]


def _nondomination_ranks(finished: FinishedTrials, n_below: int) -> np.ndarray:
    """``_fast_non_domination_rank(lvals, n_below=n_below)`` of Optuna 5.1, from the distinct
    losses: Optuna ranks the distinct rows (np.unique) and maps them back, and a replay's
    thousands of complete trials hold at most one distinct loss per configuration."""
    distinct = np.array(list(finished.points), dtype=float).reshape(len(finished.points), -1)
    ranks_of_distinct = _fast_non_domination_rank(distinct, n_below=n_below)
    return ranks_of_distinct[finished.point_ids]
