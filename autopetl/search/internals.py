"""Every use of Ray's and Optuna's private internals, in one place.

Checked against Ray 2.60.0 and Optuna 5.1.0; ``tests/test_internals.py`` fails at once if an
upgrade renames any of them (rather than a search failing mid-run). Each use says why the public
API does not do.

One exception lives apart, since it is a whole class: the replay's TPE
(:mod:`autopetl.search.replay_tpe`, :mod:`autopetl.search.replay_tpe_split`) overrides private
methods of Optuna 5.1's TPESampler to make replays of thousands of trials fast. It is used by
benchmarks only, never by a search, and ``tests/test_replay_tpe.py`` fails if any proposal it
makes differs from Optuna's own.
"""

from __future__ import annotations

from typing import Any

# Optuna: the type of what BaseStorage.get_all_studies returns, which a storage subclass must
# name in its signature; optuna exports it only from the private module.
from optuna.study._frozen import FrozenStudy
from optuna.trial import TrialState

CHECKED_AGAINST = {"ray": "2.60.0", "optuna": "5.1.0"}

__all__ = ["CHECKED_AGAINST", "FrozenStudy", "fail_running_trial", "searcher_state", "stored_trial"]


def searcher_state(searcher: Any) -> tuple[set[str], dict[str, Any], Any]:
    """Ray's OptunaSearch bookkeeping: (finished trial ids, Ray trial id -> Optuna trial, study).

    ParetoOptunaSearch overrides on_trial_complete to tell Optuna PRUNED or FAIL where Ray would
    tell COMPLETE, and so needs the Optuna trial Ray created for a Ray trial: Ray keeps them in
    these attributes only.
    """
    return searcher._completed_trials, searcher._ot_trials, searcher._ot_study


def stored_trial(study: Any, trial: Any) -> Any:
    """What the study's storage holds of ``trial`` now (a tell that raised may have gone through:
    only the storage says, and Study has no public read of one trial by id)."""
    return study._storage.get_trial(trial._trial_id)


def fail_running_trial(study: Any, trial: Any) -> None:
    """Mark a RUNNING trial FAIL without a Trial object (a dead driver's trial: Study.tell needs
    the live trial or its number and refuses a trial the study did not hand out in this run)."""
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
