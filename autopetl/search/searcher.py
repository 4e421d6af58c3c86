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

from autopetl.search.internals import searcher_state, stored_trial

log = logging.getLogger(__name__)


def finished_training(result: dict | None) -> bool:
    """Whether a trial's last result is its final epoch."""
    if not result:
        return False
    return result.get("epoch") is not None and result.get("epoch") == result.get("epochs")


class ParetoOptunaSearch(OptunaSearch):
    """OptunaSearch over a search's objectives (its ``metric`` and ``mode`` lists, from
    autopetl/objectives.py) that keeps unfinished trials off the front."""

    def _objectives(self) -> list[str]:
        metric = self._metric  # OptunaSearch keeps the metric list it was given
        return [metric] if isinstance(metric, str) else list(metric or ())

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        completed, ot_trials, study = searcher_state(self)
        if trial_id in completed or trial_id not in ot_trials:
            return
        ot_trial = ot_trials[trial_id]
        assert study is not None  # set up by OptunaSearch before any trial exists
        if error or (result or {}).get("error"):
            state, values = TrialState.FAIL, None
        elif result and finished_training(result):
            state, values = TrialState.COMPLETE, [float(result[m]) for m in self._objectives()]
        else:
            state, values = TrialState.PRUNED, None
        try:
            study.tell(ot_trial, values, state=state)
        except Exception as exc:  # the trial must not stop the search
            # Either the values were refused (NaN), or the tell went through and a sampler hook
            # failed after it: GridSampler calls study.stop() when the grid is done, which raises
            # outside study.optimize(). Only an unrecorded trial is marked FAIL.
            stored = stored_trial(study, ot_trial)
            if not stored.state.is_finished():
                log.warning("optuna could not record trial %s: %s", ot_trial.number, exc)
                study.tell(ot_trial, None, state=TrialState.FAIL)
        completed.add(trial_id)
