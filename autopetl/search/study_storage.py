"""The search driver's Optuna storage: the database keeps every write, memory answers the reads.

Profiling a 64-trial smoke search (docs/PERFORMANCE.md, "Search overhead") showed the driver, not
the workers, setting the pace, and Optuna's RDBStorage was its largest cost: the TPE sampler and
Ray's OptunaSearch re-read the study's trials several times per suggestion (about 6 queries
through the SQLAlchemy ORM per trial), which took more time than the sampling itself. An
ask/suggest/tell cycle of the default space costs about 28 ms on RDBStorage over SQLite and 4 ms
in memory (``python benchmarks/perf.py --sections search`` reports both).

:class:`DriverStudyStorage` keeps an in-memory copy of one study, loaded from the database when the
search starts (so a resumed search's sampler sees every earlier trial), serves every read from it,
and writes every change through to the database at once, in the same order. Trial numbers therefore
match in both (the store keys trials on them), the database always holds the study's current state
(a killed driver loses nothing it had written), and Optuna's own tools (optuna-dashboard,
``optuna.load_study``) read the database as before.

Valid because one process writes a study: the search's driver (Ray Tune calls the searcher on the
driver only). Two drivers running the same search at once would each miss the other's trials.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, InMemoryStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autopetl.errors import SearchConflictError
from autopetl.search.internals import FrozenStudy


class DriverStudyStorage(BaseStorage):
    """A write-through, read-from-memory view of one study in ``database`` (see the module doc)."""

    def __init__(self, database: BaseStorage, study_name: str) -> None:
        self._db: BaseStorage | None = database
        self._memory = InMemoryStorage()
        db_study = database.get_study_id_from_name(study_name)
        study = self._memory.create_new_study(
            database.get_study_directions(db_study), study_name=study_name
        )
        for key, value in database.get_study_user_attrs(db_study).items():
            self._memory.set_study_user_attr(study, key, value)
        for key, value in database.get_study_system_attrs(db_study).items():
            self._memory.set_study_system_attr(study, key, value)
        self._study_ids = {study: db_study}
        self._trial_ids: dict[int, int] = {}
        # In number order, so the copies get the same numbers as the originals.
        for trial in sorted(
            database.get_all_trials(db_study, deepcopy=False), key=lambda t: t.number
        ):
            copy = self._memory.create_new_trial(study, template_trial=trial)
            self._trial_ids[copy] = trial._trial_id

    # Ray Tune pickles the searcher, and with it this storage, into tuner.pkl and
    # searcher-state-*.pkl under --storage. The database storage holds the URL, password
    # included: it is left out, so no file Ray writes holds a secret. autopetl never restores a
    # searcher from those files (a resumed search builds a new one, see runner.py); a copy that
    # was unpickled reads from memory and refuses to write.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_db": None}

    @property
    def _database(self) -> BaseStorage:
        if self._db is None:
            raise SearchConflictError(
                "this copy of the search's study storage was unpickled without its database "
                "(the URL is never written to disk); resume the search with `autopetl search "
                "--resume` instead"
            )
        return self._db

    # Studies: one, mirrored at construction. Creating or deleting others goes to both.
    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        study = self._memory.create_new_study(directions, study_name)  # raises if it exists
        self._study_ids[study] = self._database.create_new_study(
            directions, self._memory.get_study_name_from_id(study)
        )
        return study

    def delete_study(self, study_id: int) -> None:
        self._database.delete_study(self._study_ids.pop(study_id))
        self._memory.delete_study(study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._database.set_study_user_attr(self._study_ids[study_id], key, value)
        self._memory.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._database.set_study_system_attr(self._study_ids[study_id], key, value)
        self._memory.set_study_system_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._memory.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._memory.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._memory.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._memory.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._memory.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._memory.get_all_studies()

    # Trials: written to the database first (if that fails, memory never saw it), then to memory.
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        db_trial = self._database.create_new_trial(self._study_ids[study_id], template_trial)
        trial = self._memory.create_new_trial(study_id, template_trial)
        self._trial_ids[trial] = db_trial
        db_number = self._database.get_trial_number_from_id(db_trial)
        if db_number != self._memory.get_trial_number_from_id(trial):
            raise SearchConflictError(
                f"search {self.get_study_name_from_id(study_id)!r} is being run by another "
                f"process too (its Optuna study got trial {db_number} from elsewhere); run one "
                "`autopetl search` per --name at a time, and resume it once the other has stopped"
            )
        return trial

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        self._database.set_trial_param(
            self._trial_ids[trial_id], param_name, param_value_internal, distribution
        )
        self._memory.set_trial_param(trial_id, param_name, param_value_internal, distribution)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        self._database.set_trial_state_values(self._trial_ids[trial_id], state, values)
        return self._memory.set_trial_state_values(trial_id, state, values)

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        self._database.set_trial_intermediate_value(
            self._trial_ids[trial_id], step, intermediate_value
        )
        self._memory.set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._database.set_trial_user_attr(self._trial_ids[trial_id], key, value)
        self._memory.set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._database.set_trial_system_attr(self._trial_ids[trial_id], key, value)
        self._memory.set_trial_system_attr(trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._memory.get_trial(trial_id)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        return self._memory.get_all_trials(study_id, deepcopy=deepcopy, states=states)
