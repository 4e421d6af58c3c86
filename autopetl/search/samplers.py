"""The Optuna samplers a search can use, made in one place for the search and the replay."""

from __future__ import annotations

import threading
import warnings
from typing import Any

import optuna

from autopetl.errors import ConfigError
from autopetl.search.space import SearchSpace


def quiet_optuna() -> None:
    """Optuna logs every study and trial at INFO."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_sampler(
    name: str, space: SearchSpace, seed: int, *, constant_liar: bool = True, replay: bool = False
) -> optuna.samplers.BaseSampler:
    """The sampler ``name`` for ``space``, seeded.

    Args:
        name: tpe, nsga2, random or grid.
        space: The search space (a grid checks here that it is finite).
        seed: The sampler's seed.
        constant_liar: TPE only: count running trials as the worst outcome, so parallel workers
            spread out (benchmarks/multitask.py measures it against off).
        replay: TPE only: the same proposals, made faster for replays of thousands of trials
            (:mod:`autopetl.search.replay_tpe`).
    """
    if name == "tpe":
        # multivariate+group model the method's conditional parameters jointly; constant_liar
        # keeps parallel workers from sampling the same point while others are still running.
        # Both are marked experimental, and Optuna warns of it on every construction.
        options: dict[str, Any] = {
            "multivariate": True,
            "group": True,
            "constant_liar": constant_liar,
        }
        if replay:
            try:  # written against Optuna 5.1's private TPE internals
                from autopetl.search.replay_tpe import replay_sampler
            except ImportError:  # another Optuna moved them: Optuna's own, slower, same proposals
                pass
            else:
                return replay_sampler(**options, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(**options, seed=seed)
    if name == "nsga2":
        return _NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        space.configurations()  # a continuous range is a ConfigError here, not in a worker
        # Exhaustive over the define-by-run space, so a grid may hold several methods, each with
        # its own options (GridSampler crosses every parameter with every other). Experimental.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _GridSampler(seed=seed)
    raise ConfigError(f"unknown sampler {name!r}; choose tpe, nsga2, random or grid")


class _GridSampler(optuna.samplers.BruteForceSampler):
    """Optuna's BruteForceSampler, blind to finished trials that hold no parameters.

    A trial that failed before its first suggestion (its worker died at once, or an earlier
    autopetl marked a queued trial failed) reaches BruteForceSampler as a leaf at the root of
    its tree, and every later suggestion raises "param_name mismatch: method != None" (Optuna
    5.0). Such a trial tried no configuration, so leaving it out of the tree loses nothing.
    Overrides a private static method of Optuna 5.0's sampler.
    """

    @staticmethod
    def _populate_tree(tree: Any, trials: list[Any], params: dict[str, Any]) -> None:
        optuna.samplers.BruteForceSampler._populate_tree(
            tree, [t for t in trials if t.params or not t.state.is_finished()], params
        )


class _NSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGAIISampler, picklable again.

    Ray Tune pickles the searcher, and with it the sampler, when a Tuner is built (to save the
    experiment for resuming). Optuna 5.1 gave the genetic samplers a ``threading.Lock``
    (``_thread_lock``), which cannot be pickled, so every NSGA-II search failed before its first
    trial with "cannot pickle '_thread.lock' object". The lock guards a cache only: a copy gets a
    fresh one.
    """

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()  # unused by Optuna before 5.1, harmless there
