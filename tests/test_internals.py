"""The private parts of Ray and Optuna that autopetl uses (autopetl/search/internals.py) are
still there in the installed versions: an upgrade that renames one fails here, in a second."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from autopetl.search import internals
from autopetl.search.searcher import ParetoOptunaSearch
from autopetl.search.space import load_space


def test_ray_optuna_search_keeps_its_bookkeeping_where_we_read_it() -> None:
    searcher = ParetoOptunaSearch(
        space=load_space("default"), metric=["val_acc", "tunable_params"], mode=["max", "min"]
    )
    searcher.set_search_properties(None, None, {})  # builds its study, as Tune does
    searcher.suggest("t1")
    completed, ot_trials, study = internals.searcher_state(searcher)
    assert isinstance(completed, set) and "t1" in ot_trials and isinstance(study, optuna.Study)
    searcher.on_trial_complete(
        "t1", {"val_acc": 0.5, "tunable_params": 10, "epoch": 2, "epochs": 2}
    )
    assert "t1" in completed
    assert internals.stored_trial(study, ot_trials["t1"]).state == TrialState.COMPLETE


def test_optuna_storage_internals() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    internals.fail_running_trial(study, trial)
    assert study.trials[0].state == TrialState.FAIL
    assert internals.FrozenStudy.__name__ == "FrozenStudy"
