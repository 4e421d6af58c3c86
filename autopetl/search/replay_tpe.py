"""Optuna's TPE for replays: the same proposals, without the work it repeats within a suggestion.

A replay of TPE with ASHA from grace 1 on a small grid runs thousands of one-epoch trials, and
Optuna's TPE (5.x, ``multivariate=True, group=True``) does O(trials) Python work several times
per suggestion: it rebuilds the group-decomposed search space from every finished trial, and it
splits every trial into "below" and "above" once per parameter group, although nothing changes
between the groups of one suggestion. A seed of such a replay ran past 12 CPU-minutes.

:class:`ReplayTPESampler` does that work once: the search space is built from the trials not seen
before (adding a finished trial's distributions again changes nothing, since each group is then
inside or outside the trial's parameters); the trials are read and split once per suggestion, in
the case a replay always is (no constraints, no intermediate values) without Optuna's per-trial
sort keys; and each parameter group's internal values are kept in arrays by trial number, since a
finished trial's parameters never change, so a split's observations are one indexing. Every
number it draws, and so every proposal, is TPESampler's: tests/test_replay_tpe.py replays
searches with both and compares every trial; ``python benchmarks/replay_speed.py`` times both on
one replay (0.3x of dsprites_ori's grid, 1,435 trials: 32.0 s with Optuna's sampler, 5.5 s here).
:func:`replay_sampler` falls back to the plain sampler when Optuna is not 5.x.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers._tpe import sampler as tpe_module
from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace, _SearchSpaceGroup
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autopetl.search.replay_tpe_split import FinishedTrials, NumberedTrials, Split, split


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
        self.add(study._get_trials(deepcopy=False, states=states, use_cache=use_cache))
        return copy.deepcopy(self._search_space)

    def add(self, trials: list[FrozenTrial]) -> None:
        """Add the finished trials not added before, in the order given (number order)."""
        for trial in trials:
            if trial.number not in self._added:
                self._added.add(trial.number)
                self._search_space.add_distributions(trial.distributions)


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
    """TPESampler that keeps what it learnt of the study between suggestions (see above)."""

    def __init__(self, **kwargs: Any) -> None:
        with warnings.catch_warnings():  # multivariate and group are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(**kwargs)
        if self._group_decomposed_search_space is not None:
            self._group_decomposed_search_space = _SeenOnceGroupDecomposedSearchSpace(True)
        self._finished: FinishedTrials | None = None  # made on the first read of a study
        self._trials: list[FrozenTrial] = []  # the storage's list, as last read
        self._split: Split | None = None
        # (names and distributions of a group) -> its values by trial number; a finished
        # trial's parameters never change, so each is converted once.
        self._columns: dict[tuple[Any, ...], _Columns] = {}

    def _fast(self, study: Study) -> bool:
        """Whether this study is the case the kept state covers; else Optuna's own code runs."""
        return (
            (self._finished is None or self._finished.plain)
            and self._group
            and self._constraints_func is None
            and len(study.directions) > 1
            and isinstance(study._storage, optuna.storages.InMemoryStorage)
        )

    def _read(self, study: Study) -> list[int]:
        """Read the storage's trials; the numbers finished since the last read, in order."""
        if self._finished is None:
            signs = [-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in study.directions]
            self._finished = FinishedTrials(signs)
        self._trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
        return self._finished.update(self._trials)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if not self._fast(study):
            return super().infer_relative_search_space(study, trial)
        # TPESampler's, with the group decomposition fed the newly finished trials only.
        space = self._group_decomposed_search_space
        assert isinstance(space, _SeenOnceGroupDecomposedSearchSpace)
        newly = self._read(study)
        if not self._fast(study):
            return super().infer_relative_search_space(study, trial)
        space.add([self._trials[n] for n in newly])
        self._search_space_group = copy.deepcopy(space._search_space)
        search_space: dict[str, BaseDistribution] = {}
        for sub_space in self._search_space_group.search_spaces:
            for name, distribution in sorted(sub_space.items()):
                if not distribution.single():
                    search_space[name] = distribution
        return search_space

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        self._split = None  # the storage changes between suggestions, never within one
        try:
            return super().sample_relative(study, trial, search_space)
        finally:
            self._split = None

    def _sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not self._fast(study):
            return super()._sample_relative(study, trial, search_space)
        # TPESampler's, with the start-up count read from the split made once a suggestion.
        if search_space == {}:
            return {}
        if self._split_of(study, trial).finished < self._n_startup_trials:
            return {}
        return self._sample(study, trial, search_space)

    def _split_of(self, study: Study, trial: FrozenTrial) -> Split:
        if self._split is None or self._split.number != trial.number:
            self._read(study)
            if self._gamma is None:
                self._gamma = tpe_module.default_gamma_multiobjective
            finished = self._finished
            # infer_relative_search_space read the storage first this suggestion, found it
            # plain, and nothing was written since.
            assert finished is not None and finished.plain
            running = (
                [
                    self._trials[n]
                    for n in sorted(finished.open)
                    if n != trial.number and self._trials[n].state == TrialState.RUNNING
                ]
                if self._constant_liar
                else []
            )
            n_below = self._gamma(len(finished.complete) + len(finished.pruned))
            self._split = split(finished, self._trials, trial.number, n_below, running)
        return self._split

    def _sample(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not self._fast(study) or self._split is None:  # sample_independent, or not a replay
            return super()._sample(study, trial, search_space)
        # TPESampler._sample of Optuna 5.1, on the split made once a suggestion.
        split_ = self._split_of(study, trial)
        mpe_below = self._build_parzen_estimator(
            study, search_space, split_.below, handle_below=True
        )
        mpe_above = self._build_parzen_estimator(
            study, search_space, split_.above, handle_below=False
        )
        samples_below = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        acq_func_vals = self._compute_acquisition_func(samples_below, mpe_below, mpe_above)
        ret = optuna.samplers.TPESampler._compare(samples_below, acq_func_vals)
        for param_name, dist in search_space.items():
            ret[param_name] = dist.to_external_repr(ret[param_name])
        return ret

    def _get_internal_repr(
        self, trials: list[FrozenTrial], search_space: dict[str, BaseDistribution], study: Study
    ) -> dict[str, np.ndarray]:
        if not isinstance(trials, NumberedTrials) or self._split is None:
            return super()._get_internal_repr(trials, search_space, study)
        # TPESampler._get_internal_repr of Optuna 5.1, from columns kept by trial number.
        split_ = self._split
        numbers = trials.numbers
        key = tuple(search_space.items())
        columns = self._columns.setdefault(key, _Columns(list(search_space)))
        if len(numbers):
            columns.grow(int(numbers.max()) + 1)
        for number in numbers[~columns.filled[numbers]].tolist():
            if number not in split_.running:
                row = self._row(self._trials[number].params, search_space)
                for name, value in zip(search_space, row, strict=True):
                    columns.values[name][number] = value
                columns.filled[number] = True
        values = {name: column[numbers] for name, column in columns.values.items()}
        for number, running in split_.running.items():  # their parameters may still grow
            at = int(np.searchsorted(numbers, number))
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
            # Optuna's arrays: a categorical's indices are ints, other values floats.
            categorical = isinstance(dist, optuna.distributions.CategoricalDistribution)
            out[name] = kept.astype(np.int64) if categorical and len(kept) else kept
        return out

    @staticmethod
    def _row(params: dict[str, Any], search_space: dict[str, BaseDistribution]) -> list[float]:
        if not search_space.keys() <= params.keys():
            return [math.nan] * len(search_space)
        return [float(d.to_internal_repr(params[n])) for n, d in search_space.items()]


def replay_sampler(**kwargs: Any) -> optuna.samplers.TPESampler:
    """A :class:`ReplayTPESampler` where Optuna's internals are those it was written against
    (Optuna 5.x), else the plain TPESampler: slower, the same proposals."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if optuna.__version__.split(".")[0] == "5" and hasattr(tpe_module, "_split_trials"):
            return ReplayTPESampler(**kwargs)
        return optuna.samplers.TPESampler(**kwargs)
