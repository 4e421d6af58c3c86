"""Optuna's TPE for replays: the same proposals, without the work it repeats within a suggestion.

A replay of TPE with ASHA from grace 1 on a small grid runs thousands of one-epoch trials, and
Optuna's TPE (5.x, ``multivariate=True, group=True``) does O(trials) Python work several times
per suggestion: it rebuilds the group-decomposed search space from every finished trial, and it
splits every trial into "below" and "above" once per parameter group, although nothing changes
between the groups of one suggestion. A seed of such a replay took ~13 minutes on one core.

:class:`ReplayTPESampler` does that work once: the search space is built from the trials not seen
before (adding a finished trial's distributions again changes nothing, since each group is then
inside or outside the trial's parameters), and the split is made once per suggestion. Every
number it draws, and so every proposal, is TPESampler's: tests/test_replay_tpe.py replays a search
with both and compares every trial. :func:`replay_sampler` falls back to the plain sampler when
Optuna's internals are not the ones this was written against.
"""

from __future__ import annotations

import copy
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


class ReplayTPESampler(optuna.samplers.TPESampler):
    """TPESampler with the split into below and above made once per suggestion (see above)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self._group_decomposed_search_space is not None:
            self._group_decomposed_search_space = _SeenOnceGroupDecomposedSearchSpace(True)
        self._split_memo: tuple[int, Any] | None = None
        # (names and distributions of a group) -> trial number -> its values' internal forms,
        # or None when it lacks one: a finished trial's parameters never change.
        self._repr_cache: dict[tuple[Any, ...], dict[int, tuple[Any, ...] | None]] = {}

    def _get_internal_repr(
        self, trials: list[FrozenTrial], search_space: dict[str, BaseDistribution], study: Study
    ) -> dict[str, np.ndarray]:
        # TPESampler._get_internal_repr of Optuna 5.1, with each finished trial's row kept.
        cache = self._repr_cache.setdefault(tuple(search_space.items()), {})
        names = list(search_space)
        rows: list[tuple[Any, ...]] = []
        for trial in trials:
            finished = trial.state.is_finished()
            if finished and trial.number in cache:
                row = cache[trial.number]
            else:
                params = self._get_params(trial, study)
                row = (
                    tuple(d.to_internal_repr(params[n]) for n, d in search_space.items())
                    if search_space.keys() <= params.keys()
                    else None
                )
                if finished:
                    cache[trial.number] = row
            if row is not None:
                rows.append(row)
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
        return {n: np.asarray(list(c)) for n, c in zip(names, columns, strict=True)}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        self._split_memo = None  # storage changes between suggestions, never within one
        try:
            return super().sample_relative(study, trial, search_space)
        finally:
            self._split_memo = None

    def _sample(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        # TPESampler._sample of Optuna 5.1, the trials and their split read once a suggestion.
        if self._constant_liar:
            states = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING]
        else:
            states = [TrialState.COMPLETE, TrialState.PRUNED]
        if self._split_memo is None or self._split_memo[0] != trial.number:
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
            self._split_memo = (
                trial.number,
                tpe_module._split_trials(study, trials, self._gamma(n)),
            )
        below_trials, above_trials = self._split_memo[1]

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


def replay_sampler(**kwargs: Any) -> optuna.samplers.TPESampler:
    """A :class:`ReplayTPESampler` where Optuna's internals are those it was written against
    (Optuna 5.x), else the plain TPESampler: slower, the same proposals."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if optuna.__version__.split(".")[0] == "5" and hasattr(tpe_module, "_split_trials"):
            return ReplayTPESampler(**kwargs)
        return optuna.samplers.TPESampler(**kwargs)
