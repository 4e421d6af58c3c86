"""Optuna's TPE for replays: the same proposals, without the work it repeats within a suggestion.

A replay of TPE with ASHA from grace 1 on a small grid runs thousands of one-epoch trials, and
Optuna's TPE (5.x, ``multivariate=True, group=True``) does O(trials) Python work several times
per suggestion: it rebuilds the group-decomposed search space from every finished trial, and it
splits every trial into "below" and "above" once per parameter group, although nothing changes
between the groups of one suggestion. A seed of such a replay took ~13 minutes on one core.

:class:`ReplayTPESampler` does that work once: the search space is built from the trials not seen
before (adding a finished trial's distributions again changes nothing, since each group is then
inside or outside the trial's parameters); the trials are read and split once per suggestion, in
the case a replay always is (no constraints, no intermediate values) without Optuna's per-trial
sort keys; and each parameter group's internal values are kept in arrays by trial number, since a
finished trial's parameters never change, so a split's observations are one indexing. Every
number it draws, and so every proposal, is TPESampler's: tests/test_replay_tpe.py replays
searches with both and compares every trial. A TPE+ASHA replay at 0.3x of dsprites_ori's grid
(1,435 trials) took 34 s with Optuna's sampler and 7.6 s with this one.
:func:`replay_sampler` falls back to the plain sampler when Optuna is not 5.x.
"""

from __future__ import annotations

import copy
import math
import operator
import warnings
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers._tpe import sampler as tpe_module
from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace, _SearchSpaceGroup
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


class _SeenOnceGroupDecomposedSearchSpace(_GroupDecomposedSearchSpace):
    """Optuna's group decomposition, adding each finished trial once.

    Optuna re-adds every finished trial on each call. Adding a parameter set the partition already
    refines leaves the groups and their order unchanged, and finished trials never gain
    parameters, so skipping the trials already added gives the same groups.
    """

    def __init__(self, include_pruned: bool = False) -> None:
        super().__init__(include_pruned)
        self._added: set[int] = set()

    def calculate(self, study: Study, use_cache: bool = False) -> _SearchSpaceGroup:
        states = (
            (TrialState.COMPLETE, TrialState.PRUNED)
            if self._include_pruned
            else (TrialState.COMPLETE,)
        )
        for trial in study._get_trials(deepcopy=False, states=states, use_cache=use_cache):
            if trial.number not in self._added:
                self._added.add(trial.number)
                self._search_space.add_distributions(trial.distributions)
        return copy.deepcopy(self._search_space)


class _Split:
    """One suggestion's trials split as TPESampler splits them, with their numbers in order."""

    def __init__(self, number: int, below: list[FrozenTrial], above: list[FrozenTrial]) -> None:
        self.number = number  # the trial being suggested for
        self.below, self.above = below, above
        self.numbers = {
            id(part): np.fromiter((t.number for t in part), dtype=np.int64, count=len(part))
            for part in (below, above)
        }
        self.running = {t.number: t for t in above if t.state == TrialState.RUNNING}
        self._by_number: dict[int, FrozenTrial] | None = None

    def trial(self, number: int) -> FrozenTrial:
        if self._by_number is None:
            self._by_number = {t.number: t for t in (*self.below, *self.above)}
        return self._by_number[number]


class _Columns:
    """A parameter group's internal values, by trial number (NaN: the trial lacks the group)."""

    def __init__(self, names: list[str]) -> None:
        self.values = {n: np.full(0, np.nan) for n in names}
        self.filled = np.zeros(0, dtype=bool)

    def grow(self, size: int) -> None:
        if size > len(self.filled):
            size = max(size, 2 * len(self.filled))
            for name, column in self.values.items():
                self.values[name] = np.concatenate([column, np.full(size - len(column), np.nan)])
            self.filled = np.concatenate([self.filled, np.zeros(size - len(self.filled), bool)])


class ReplayTPESampler(optuna.samplers.TPESampler):
    """TPESampler that reads and splits the trials once per suggestion (see above)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self._group_decomposed_search_space is not None:
            self._group_decomposed_search_space = _SeenOnceGroupDecomposedSearchSpace(True)
        self._split: _Split | None = None
        # (names and distributions of a group) -> its values by trial number; a finished
        # trial's parameters never change, so each is converted once.
        self._columns: dict[tuple[Any, ...], _Columns] = {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        self._split = None  # the storage changes between suggestions, never within one
        try:
            return super().sample_relative(study, trial, search_space)
        finally:
            self._split = None

    def _sample(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        # TPESampler._sample of Optuna 5.1, the trials read and split once a suggestion.
        if self._split is None or self._split.number != trial.number:
            self._split = self._split_for(study, trial)
        below_trials, above_trials = self._split.below, self._split.above

        mpe_below = self._build_parzen_estimator(
            study, search_space, below_trials, handle_below=True
        )
        mpe_above = self._build_parzen_estimator(
            study, search_space, above_trials, handle_below=False
        )
        samples_below = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        acq_func_vals = self._compute_acquisition_func(samples_below, mpe_below, mpe_above)
        ret = optuna.samplers.TPESampler._compare(samples_below, acq_func_vals)
        for param_name, dist in search_space.items():
            ret[param_name] = dist.to_external_repr(ret[param_name])
        return ret

    def _split_for(self, study: Study, trial: FrozenTrial) -> _Split:
        if self._constant_liar:
            states = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING]
        else:
            states = [TrialState.COMPLETE, TrialState.PRUNED]
        use_cache = not self._constant_liar
        trials = study._get_trials(deepcopy=False, states=states, use_cache=use_cache)
        if self._constant_liar:
            trials = [t for t in trials if trial.number != t.number]
        if self._gamma is None:
            if len(study.directions) <= 1:
                self._gamma = tpe_module.default_gamma
            else:
                self._gamma = tpe_module.default_gamma_multiobjective
        n = sum(t.state != TrialState.RUNNING for t in trials)
        n_below = self._gamma(n)
        # Optuna's _split_trials, in the case a replay always is: no constraints (so no trial is
        # infeasible) and no intermediate values (so every stopped trial scores the same, and
        # its stable sort keeps them in number order). Anything else goes to Optuna's own.
        complete, pruned, running = [], [], []
        for t in trials:
            state = t.state
            if state == TrialState.COMPLETE:
                complete.append(t)
            elif state == TrialState.PRUNED:
                pruned.append(t)
            else:
                running.append(t)
        if self._constraints_func is not None or any(t.intermediate_values for t in pruned):
            below, above = tpe_module._split_trials(study, trials, n_below)
            return _Split(trial.number, below, above)
        below_complete, above_complete = tpe_module._split_complete_trials(complete, study, n_below)
        k = min(max(0, n_below - len(below_complete)), len(pruned))
        by_number = operator.attrgetter("number")
        below = sorted(below_complete + pruned[:k], key=by_number)
        above = sorted(above_complete + pruned[k:] + running, key=by_number)
        return _Split(trial.number, below, above)

    def _get_internal_repr(
        self, trials: list[FrozenTrial], search_space: dict[str, BaseDistribution], study: Study
    ) -> dict[str, np.ndarray]:
        # TPESampler._get_internal_repr of Optuna 5.1, from columns kept by trial number.
        split = self._split
        if split is None or id(trials) not in split.numbers:  # sample_independent
            return super()._get_internal_repr(trials, search_space, study)
        numbers = split.numbers[id(trials)]
        columns = self._columns.setdefault(
            tuple(search_space.items()), _Columns(list(search_space))
        )
        if len(numbers):
            columns.grow(int(numbers.max()) + 1)
        for number in numbers[~columns.filled[numbers]].tolist():
            if number not in split.running:
                self._fill(columns, number, split.trial(number).params, search_space)
        values = {name: column[numbers] for name, column in columns.values.items()}
        for number, running in split.running.items():  # their parameters may still grow
            at = np.searchsorted(numbers, number)
            if at < len(numbers) and numbers[at] == number:
                row = self._row(self._get_params(running, study), search_space)
                for name, value in zip(search_space, row, strict=True):
                    values[name][at] = value
        keep = np.ones(len(numbers), dtype=bool)
        for column in values.values():
            keep &= ~np.isnan(column)
        out = {}
        for name, dist in search_space.items():
            kept = values[name][keep]
            categorical = isinstance(dist, optuna.distributions.CategoricalDistribution)
            out[name] = kept.astype(np.int64) if categorical and len(kept) else kept
        return out

    @staticmethod
    def _row(params: dict[str, Any], search_space: dict[str, BaseDistribution]) -> list[float]:
        if not search_space.keys() <= params.keys():
            return [math.nan] * len(search_space)
        return [float(d.to_internal_repr(params[n])) for n, d in search_space.items()]

    def _fill(
        self,
        columns: _Columns,
        number: int,
        params: dict[str, Any],
        search_space: dict[str, BaseDistribution],
    ) -> None:
        for name, value in zip(search_space, self._row(params, search_space), strict=True):
            columns.values[name][number] = value
        columns.filled[number] = True


def replay_sampler(**kwargs: Any) -> optuna.samplers.TPESampler:
    """A :class:`ReplayTPESampler` where Optuna's internals are those it was written against
    (Optuna 5.x), else the plain TPESampler: slower, the same proposals."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if optuna.__version__.split(".")[0] == "5" and hasattr(tpe_module, "_split_trials"):
            return ReplayTPESampler(**kwargs)
        return optuna.samplers.TPESampler(**kwargs)
