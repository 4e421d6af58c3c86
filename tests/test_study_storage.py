"""The driver's Optuna storage: reads from memory, every write in the database, same numbers."""

from __future__ import annotations

import optuna
import pytest

from autopetl.errors import SearchConflictError
from autopetl.search.samplers import make_sampler
from autopetl.search.space import load_space, with_epochs
from autopetl.search.study_storage import DriverStudyStorage
from autopetl.store import open_store

DIRECTIONS = ["maximize", "minimize"]


def _view(study: optuna.Study) -> list[tuple]:
    return [(t.number, t.state, t.params, t.values, t.user_attrs) for t in study.trials]


@pytest.fixture
def database(db_url):
    store = open_store(db_url)
    yield store.optuna_storage()
    store.close()


def _ask_tell(study: optuna.Study, n: int, offset: int = 0) -> None:
    space = with_epochs(load_space("default"), 1)
    for i in range(n):
        trial = study.ask()
        space(trial)
        trial.set_user_attr("i", offset + i)
        if i % 3 == 2:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, [0.1 * (i % 7), 1000 + i])


def test_writes_reach_the_database_with_the_same_numbers(database):
    optuna.create_study(storage=database, study_name="s", directions=DIRECTIONS)
    driver = DriverStudyStorage(database, "s")
    space = load_space("default")
    study = optuna.load_study(
        study_name="s", storage=driver, sampler=make_sampler("tpe", space, seed=0)
    )
    _ask_tell(study, 14)
    running = study.ask()  # a trial still running when the driver stops
    from_db = optuna.load_study(study_name="s", storage=database)
    assert _view(from_db) == _view(study)
    assert from_db.trials[-1].number == running.number
    assert from_db.trials[-1].state == optuna.trial.TrialState.RUNNING


def test_a_resumed_driver_sees_every_earlier_trial(database):
    first = optuna.create_study(storage=database, study_name="s", directions=DIRECTIONS)
    _ask_tell(first, 5)
    first.set_user_attr("owner", "test")
    driver = DriverStudyStorage(database, "s")
    resumed = optuna.load_study(study_name="s", storage=driver)
    assert _view(resumed) == _view(first)
    assert resumed.user_attrs == {"owner": "test"}
    _ask_tell(resumed, 4, offset=5)
    # New trials continue the numbering, in memory and in the database alike.
    assert [t.number for t in resumed.trials] == list(range(9))
    assert _view(optuna.load_study(study_name="s", storage=database)) == _view(resumed)


def test_reads_come_from_memory(database, monkeypatch):
    optuna.create_study(storage=database, study_name="s", directions=DIRECTIONS)
    driver = DriverStudyStorage(database, "s")
    study = optuna.load_study(study_name="s", storage=driver)
    _ask_tell(study, 3)
    reads = []

    def no_history_reads(*args, **kwargs):
        raise AssertionError("read the study's trials from the database")

    def counted_get_trial(trial_id):
        reads.append(trial_id)
        return type(database).get_trial(database, trial_id)

    monkeypatch.setattr(database, "get_all_trials", no_history_reads)
    monkeypatch.setattr(database, "get_trial", counted_get_trial)
    assert len(study.trials) == 3
    _ask_tell(study, 3)  # sampling, including TPE's reads of the history
    assert len(study.get_trials(deepcopy=False)) == 6
    assert len(reads) == 3  # one per new trial: the check that its number is the same


def test_a_second_writer_is_detected(database):
    optuna.create_study(storage=database, study_name="s", directions=DIRECTIONS)
    driver = DriverStudyStorage(database, "s")
    optuna.load_study(study_name="s", storage=database).ask()  # another process's trial
    with pytest.raises(SearchConflictError, match="one `autopetl search` per --name"):
        optuna.load_study(study_name="s", storage=driver).ask()
