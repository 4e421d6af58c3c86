"""Ray's OptunaSearch, told the truth about trials that did not finish training.

Ray's OptunaSearch tells Optuna COMPLETE with the last reported metrics for any trial that ends
with a result, including trials ASHA stopped after one epoch and trials that crashed after a few:
their half-trained accuracy would then sit on Optuna's Pareto front. Here a trial is COMPLETE only
when it reported its last epoch; stopped early it is PRUNED, crashed it is FAIL.
"""

from __future__ import annotations

import logging

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

log = logging.getLogger(__name__)


def finished_training(result: dict | None) -> bool:
    """Whether a trial's last result is its final epoch."""
    if not result:
        return False
    return result.get("epoch") is not None and result.get("epoch") == result.get("epochs")


class ParetoOptunaSearch(OptunaSearch):
    """OptunaSearch over a search's objectives (its ``metric`` and ``mode`` lists, from
    autopetl/objectives.py) that keeps unfinished trials off the front."""

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        study = self._ot_study
        assert study is not None  # set up by OptunaSearch before any trial exists
        if error or (result or {}).get("error"):
            state, values = TrialState.FAIL, None
        elif result and finished_training(result):
            state, values = TrialState.COMPLETE, [float(result[m]) for m in self._metric]
        else:
            state, values = TrialState.PRUNED, None
        try:
            study.tell(ot_trial, values, state=state)
        except Exception as exc:  # the trial must not stop the search
            # Either the values were refused (NaN), or the tell went through and a sampler hook
            # failed after it: GridSampler calls study.stop() when the grid is done, which raises
            # outside study.optimize(). Only an unrecorded trial is marked FAIL.
            stored = study._storage.get_trial(ot_trial._trial_id)
            if not stored.state.is_finished():
                log.warning("optuna could not record trial %s: %s", ot_trial.number, exc)
                study.tell(ot_trial, None, state=TrialState.FAIL)
        self._completed_trials.add(trial_id)
