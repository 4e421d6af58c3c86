"""One contract for the store, run against every backend (SQLite and PostgreSQL, see ``db_url``)."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import func, select

from autopetl.objectives import MEASURES
from autopetl.store import Store, StoreError, hypervolume, open_store
from autopetl.store.models import (
    ArtifactModel,
    EpochModel,
    EvaluationModel,
    SearchModel,
    TrialModel,
)

SPACE = {"method": ["vpt", "lora"], "lr": {"low": 1e-4, "high": 1e-2, "log": True}}
BACKBONE = {"name": "vit_small_patch14_dinov2", "weights": "hub", "img_size": 112}

# A known set: (trial key, status, val_acc, tunable params). On the front: a, b, d (and e, which
# ties d exactly). c is dominated by b; the pruned, failed and NaN trials would dominate
# everything but must never be on the front.
KNOWN = [
    ("a", "completed", 0.50, 100),
    ("b", "completed", 0.70, 1_000),
    ("c", "completed", 0.60, 2_000),
    ("d", "completed", 0.90, 10_000),
    ("e", "completed", 0.90, 10_000),
    ("f", "completed", 0.80, 20_000),
    ("pruned", "pruned", 0.99, 10),
    ("failed", "failed", 1.00, 1),
    ("nan", "completed", math.nan, 5),
]


@pytest.fixture
def store(db_url: str):
    with open_store(db_url) as s:
        yield s


def _count(store: Store, model: type) -> int:
    with store.engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(model))  # type: ignore[return-value]


def _search(store: Store, name: str = "s", task: str = "vtab/dsprites_loc") -> int:
    return store.upsert_search(name, task, "default", SPACE, BACKBONE, 8, {"seed": 0})


def _known(store: Store, name: str = "s", task: str = "vtab/dsprites_loc") -> None:
    _search(store, name, task)
    for number, (key, status, acc, params) in enumerate(KNOWN):
        store.upsert_trial(
            name, key, number=number, status=status, val_acc=acc, tunable_params=params
        )


class TestStoreContract:
    def test_fresh_database_is_at_head(self, store: Store) -> None:
        state = store.schema_state()
        assert state.up_to_date and state.current == state.head
        assert store.list_searches() == []

    def test_create_and_read_back(self, store: Store) -> None:
        search_id = _search(store)
        search = store.get_search("s")
        assert search is not None and search.id == search_id
        assert (search.task, search.space_name, search.space) == (
            "vtab/dsprites_loc",
            "default",
            SPACE,
        )
        assert search.backbone == BACKBONE and search.weights_source == "hub"
        assert search.budget == 8 and search.options == {"seed": 0} and search.status == "running"
        assert len(search.space_sha256) == 64 and search.code_version
        assert search.created_at.tzinfo is not None and search.finished_at is None
        assert store.get_search("missing") is None

        store.upsert_trial(
            "s",
            "ray-0001",
            number=0,
            method="vpt",
            config={"method": "vpt", "prompt_length": 10, "lr": 1e-3},
            status="completed",
            val_acc=0.64,
            last_val_acc=0.62,
            best_epoch=9,
            tunable_params=92_000,
            tunable_params_without_head=46_000,
            cost={
                "wall_time_s": 12.5,
                "images_per_s": 54.0,
                "peak_memory_mb": 900.0,
                "device": "cpu",
            },
            epochs_done=10,
            attempts=1,
        )
        [trial] = store.trials("s")
        assert (trial.search_name, trial.trial_key, trial.number, trial.method) == (
            "s",
            "ray-0001",
            0,
            "vpt",
        )
        assert trial.config == {"method": "vpt", "prompt_length": 10, "lr": 1e-3}
        assert (trial.val_acc, trial.last_val_acc, trial.best_epoch) == (0.64, 0.62, 9)
        assert (trial.tunable_params, trial.tunable_params_without_head) == (92_000, 46_000)
        assert (trial.wall_time_s, trial.images_per_s, trial.peak_memory_mb) == (12.5, 54.0, 900.0)
        assert trial.measures == dict.fromkeys(MEASURES) and trial.cost["device"] == "cpu"
        assert trial.status == "completed" and trial.finished_at is not None
        assert store.trials("s", status="failed") == []

    def test_upserts_update_in_place_and_none_keeps_values(self, store: Store) -> None:
        _search(store)
        store.upsert_trial("s", "t", number=3, method="lora", config={"rank": 4}, status="running")
        store.upsert_trial("s", "t", status="completed", val_acc=0.5, tunable_params=10)
        trial = store.trial("s", "t")
        assert trial is not None
        assert (trial.number, trial.method, trial.config) == (3, "lora", {"rank": 4})
        assert (trial.status, trial.val_acc, trial.tunable_params) == ("completed", 0.5, 10)
        first_finish = trial.finished_at
        store.upsert_trial("s", "t", status="completed")  # a replay keeps the first finish time
        assert store.trial("s", "t").finished_at == first_finish  # type: ignore[union-attr]

        store.upsert_search(
            "s", "vtab/dsprites_loc", "default", SPACE, BACKBONE, 16, {}, "completed"
        )
        search = store.get_search("s")
        assert search is not None and (search.budget, search.status) == (16, "completed")
        assert search.finished_at is not None and search.trial_counts == {"completed": 1}
        store.set_search_status("s", "running")
        assert store.get_search("s").finished_at is None  # type: ignore[union-attr]

    def test_replayed_events_make_one_row(self, store: Store) -> None:
        for _ in range(3):  # every event delivered three times
            _search(store)
            store.upsert_trial("s", "t", number=0, method="vpt", config={"a": 1}, status="running")
            for epoch in (1, 2):
                store.upsert_epoch("s", "t", epoch, 2.0 / epoch, 0.3 * epoch, 1e-3, 1.5)
            store.upsert_trial("s", "t", status="completed", val_acc=0.6, tunable_params=5)
            store.upsert_evaluation("s", "t", seed=0, split="test", test_acc=0.55)
            store.upsert_artifact("s", "t", "weights", "/runs/t/adapter.safetensors", "ab" * 32)
        counts = {
            m.__name__: _count(store, m)
            for m in (SearchModel, TrialModel, EpochModel, EvaluationModel, ArtifactModel)
        }
        assert counts == {
            "SearchModel": 1,
            "TrialModel": 1,
            "EpochModel": 2,
            "EvaluationModel": 1,
            "ArtifactModel": 1,
        }
        assert [e.epoch for e in store.epochs("s", "t")] == [1, 2]
        assert store.trial("s", "t").epochs_done == 2  # type: ignore[union-attr]
        [evaluation] = store.evaluations("s")
        assert (evaluation.seed, evaluation.split, evaluation.test_acc) == (0, "test", 0.55)
        [artifact] = store.artifacts("s", "t")
        assert (artifact.kind, artifact.sha256) == ("weights", "ab" * 32)

    def test_a_new_value_replaces_the_old_one(self, store: Store) -> None:
        _search(store)
        store.upsert_epoch("s", "t", 1, 1.0, 0.1, 1e-3, 1.0)  # creates the trial on the fly
        store.upsert_epoch("s", "t", 1, 0.5, 0.2, 1e-3, 1.0)
        [epoch] = store.epochs("s", "t")
        assert (epoch.train_loss, epoch.val_acc) == (0.5, 0.2)
        assert store.trial("s", "t").status == "running"  # type: ignore[union-attr]
        store.upsert_artifact("s", "t", "weights", "/new", "cd" * 32, size_bytes=123)
        store.upsert_artifact("s", "t", "weights", "/newer", "ef" * 32, size_bytes=456)
        [artifact] = store.artifacts("s")
        assert (artifact.path, artifact.size_bytes) == ("/newer", 456)

    def test_nan_and_infinities_round_trip(self, store: Store) -> None:
        odd = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "list": [1.0, math.nan]}
        store.upsert_search("s", "t", "default", odd, BACKBONE, None, {"x": math.inf})
        store.upsert_trial(
            "s",
            "t",
            status="failed",
            val_acc=math.nan,
            last_val_acc=math.inf,
            config=odd,
            cost={"wall_time_s": -math.inf, "peak_memory_mb": math.inf},
            error="TrainingDivergedError: loss became nan",
        )
        store.upsert_epoch("s", "t", 1, math.inf, math.nan, -math.inf, 0.0)
        store.upsert_evaluation("s", "t", seed=1, split="test", test_acc=math.nan, metrics=odd)

        search = store.get_search("s")
        trial = store.trial("s", "t")
        [epoch] = store.epochs("s", "t")
        [evaluation] = store.evaluations("s")
        assert search is not None and trial is not None
        for value in (search.space, trial.config, evaluation.metrics):
            assert math.isnan(value["nan"]) and math.isnan(value["list"][1])
            assert value["inf"] == math.inf and value["-inf"] == -math.inf
        assert search.options == {"x": math.inf}
        assert math.isnan(trial.val_acc) and trial.last_val_acc == math.inf  # type: ignore[arg-type]
        assert trial.wall_time_s == -math.inf and trial.peak_memory_mb == math.inf
        assert trial.cost == {"wall_time_s": -math.inf, "peak_memory_mb": math.inf}
        assert epoch.train_loss == math.inf and math.isnan(epoch.val_acc)  # type: ignore[arg-type]
        assert epoch.lr == -math.inf and epoch.seconds == 0.0
        assert math.isnan(evaluation.test_acc)  # type: ignore[arg-type]

    def test_pareto_front_on_a_known_set(self, store: Store) -> None:
        _known(store)
        front = store.pareto_front("s")
        assert [t.trial_key for t in front] == ["a", "b", "d", "e"]
        assert all(t.status == "completed" for t in front)

    def test_pareto_front_of_a_task_pools_its_searches(self, store: Store) -> None:
        _known(store, "s1", task="vtab/dsprites_loc")
        _search(store, "s2", task="vtab/dsprites_loc")
        store.upsert_trial("s2", "better", status="completed", val_acc=0.95, tunable_params=10_000)
        _search(store, "other", task="vtab/cifar100")
        store.upsert_trial("other", "x", status="completed", val_acc=1.0, tunable_params=1)
        front = store.pareto_front(task="vtab/dsprites_loc")
        assert [(t.search_name, t.trial_key) for t in front] == [
            ("s1", "a"),
            ("s1", "b"),
            ("s2", "better"),
        ]
        with pytest.raises(ValueError):
            store.pareto_front()

    def test_a_task_front_never_pools_two_backbones(self, store: Store) -> None:
        _known(store, "s1", task="vtab/dsprites_loc")
        other = {"name": "vit_small_patch14_dinov2", "weights": "w.safetensors", "img_size": 28}
        store.upsert_search("s2", "vtab/dsprites_loc", "default", {}, other)
        store.upsert_trial("s2", "better", status="completed", val_acc=0.95, tunable_params=10)
        with pytest.raises(StoreError, match=r"ran on 2 backbones .*28 px"):
            store.pareto_front(task="vtab/dsprites_loc")
        front = store.pareto_front(task="vtab/dsprites_loc", backbone=other)
        assert [(t.search_name, t.trial_key) for t in front] == [("s2", "better")]
        s1 = store.get_search("s1")
        assert s1 is not None
        mine = store.pareto_front(task="vtab/dsprites_loc", backbone=s1.backbone)
        assert {t.search_name for t in mine} == {"s1"}

    def test_hypervolume(self, store: Store) -> None:
        _known(store)
        # Front a, b, d(, e) with reference (0, 20000): rectangles 900*0.5 + 9000*0.7 + 10000*0.9.
        linear = store.hypervolume("s", reference=(0.0, 20_000.0), log_params=False)
        assert linear == pytest.approx(900 * 0.5 + 9_000 * 0.7 + 10_000 * 0.9)
        logged = store.hypervolume("s", reference=(0.0, 20_000.0))
        x = [math.log10(1 + p) for p in (100, 1_000, 10_000, 20_000)]
        expected = (x[1] - x[0]) * 0.5 + (x[2] - x[1]) * 0.7 + (x[3] - x[2]) * 0.9
        assert logged == pytest.approx(expected)
        # The default reference is accuracy 0 and 1.1 times the largest parameter count.
        assert store.hypervolume("s", log_params=False) == pytest.approx(
            900 * 0.5 + 9_000 * 0.7 + (11_000 - 10_000) * 0.9
        )

    def test_unknown_search_is_a_clear_error(self, store: Store) -> None:
        with pytest.raises(StoreError, match="no search named 'nope'"):
            store.trials("nope")
        with pytest.raises(StoreError, match="no search named"):
            store.upsert_trial("nope", "t", status="running")
        with pytest.raises(ValueError, match="trial status"):
            _search(store)
            store.upsert_trial("s", "t", status="done")

    def test_optuna_storage_shares_the_database(self, store: Store) -> None:
        import optuna

        _known(store)
        study = optuna.create_study(
            storage=store.optuna_storage(), study_name="s", directions=["maximize", "minimize"]
        )
        study.add_trial(optuna.trial.create_trial(values=[0.5, 100.0], params={}, distributions={}))
        assert len(study.trials) == 1
        assert len(store.trials("s")) == len(KNOWN)  # Optuna's "trials" table is not ours
        assert store.schema_state().up_to_date  # two Alembic version tables, no collision


def test_hypervolume_edge_cases() -> None:
    assert hypervolume([]) == 0.0
    # Points no better than the reference add nothing; dominated points add nothing.
    assert hypervolume([(0.5, 10.0), (0.4, 20.0)], (0.0, 30.0), log_params=False) == 10.0
    assert hypervolume([(0.5, 40.0)], (0.0, 30.0), log_params=False) == 0.0
    assert hypervolume([(math.nan, 1.0), (0.5, 10.0)], (0.0, 30.0), log_params=False) == 10.0


def test_a_name_is_claimed_by_exactly_one_of_many_writers(db_url):
    # Two `train --name dup` runs at once both passed a check-then-write and shared one row;
    # create_only is one INSERT ... ON CONFLICT DO NOTHING: one claim wins, the others are told.
    import threading

    from autopetl.store import StoreError

    open_store(db_url).close()  # the schema first, so the writers race on the row only
    stores = [open_store(db_url) for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    won: list[int] = []
    refused: list[str] = []

    def claim(store, i: int) -> None:
        barrier.wait()
        try:
            store.upsert_search(
                "dup", "vtab/dsprites_loc", "train", {}, {"run": i}, create_only=True
            )
            won.append(i)
        except StoreError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=claim, args=(s, i)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == len(stores) - 1
    assert all("already exists" in r for r in refused)
    (search,) = stores[0].list_searches()
    assert search.backbone == {"run": won[0]}  # the winner's row, untouched by the others
    for s in stores:
        s.close()
