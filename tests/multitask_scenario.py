"""Several searches in one Ray Tune run, as a process of its own (tests/test_multitask.py).

    python -m tests.multitask_scenario local DB_URL STORAGE_DIR    # a local Ray; killed by the test
    python -m tests.multitask_scenario cluster DB_URL STORAGE_DIR  # a 3-node cluster, fake GPUs

``local``: three searches of different budgets on a local Ray (two tasks' toy data), one trial
per CPU; the test SIGKILLs it mid-run and runs it again. ``cluster``: two tasks' searches on a
head without GPUs and two worker nodes with two fake GPUs each, one GPU per trial. Either prints
one JSON line with what the store recorded.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

SPACE = (
    "methods: {vpt: {prompt_length: {type: int, low: 1, high: 8}}}\n"
    "train: {lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}, epochs: 4}"
)
# name -> budget: the first search finishes early in the run; the others go on.
LOCAL = {"short": 2, "loc": 8, "ori": 8}
CLUSTER = {"loc": 6, "ori": 6}


def plans(storage: str, budgets: dict[str, int], **run: object) -> list:
    import yaml

    from autopetl.backbones import SMOKE_BACKBONE
    from autopetl.search.runner import SearchPlan
    from autopetl.search.space import parse_space
    from tests.test_search_run import _toy_task

    space = parse_space(yaml.safe_load(SPACE), name="multi", where="<multi>")
    out = []
    for i, (name, budget) in enumerate(budgets.items()):
        data = _toy_task(96 + 32 * i)  # each search its own task data
        out.append(
            SearchPlan(
                name=name,
                data=data,
                space=space,
                budget=budget,
                backbone=SMOKE_BACKBONE,
                scheduler="none",
                storage_path=Path(storage),
                seed=i,
                **run,  # type: ignore[arg-type]
            )
        )
    return out


def report(store, names: list[str], outcomes: list) -> str:
    return json.dumps(
        {
            "status": {o.name: o.status for o in outcomes},
            "runs": sorted({o.runs for o in outcomes}),
            "trials": {
                name: [
                    {
                        "key": t.trial_key,
                        "status": t.status,
                        "node": t.cost.get("node_id"),
                        "start": t.created_at.timestamp(),
                        "end": (t.finished_at or t.updated_at).timestamp(),
                        "updated": t.updated_at.timestamp(),
                    }
                    for t in store.trials(name)
                ]
                for name in names
            },
        }
    )


def local(db_url: str, storage: str) -> None:
    import ray

    from autopetl.search.runner import run_searches
    from autopetl.store import open_store

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    store = open_store(db_url)
    outcomes = run_searches(plans(storage, LOCAL, cpus_per_trial=1), store)
    print(report(store, list(LOCAL), outcomes), flush=True)
    ray.shutdown()


def cluster(db_url: str, storage: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from autopetl.search.runner import run_searches
    from autopetl.store import open_store

    # The head takes no trials (no GPU); two workers with 2 fake GPUs each.
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    nodes.add_node(num_cpus=2, num_gpus=2)
    nodes.add_node(num_cpus=2, num_gpus=2)
    nodes.wait_for_nodes()
    ray.init(address=nodes.address, log_to_driver=False)
    store = open_store(db_url)
    outcomes = run_searches(plans(storage, CLUSTER, cpus_per_trial=1, gpus_per_trial=1), store)
    print(report(store, list(CLUSTER), outcomes), flush=True)
    ray.shutdown()
    nodes.shutdown()


if __name__ == "__main__":
    {"local": local, "cluster": cluster}[sys.argv[1]](sys.argv[2], sys.argv[3])
