"""A search on a simulated 3-node Ray cluster that loses a worker node mid-search.

Run by tests/test_cluster.py in its own process (a process joins one Ray cluster, and the test
session already has its own). Prints one JSON line with what the store recorded.

    python -m tests.cluster_scenario DB_URL STORAGE_DIR
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def main(db_url: str, storage: str) -> None:
    import ray
    import yaml
    from ray.cluster_utils import Cluster

    from autopetl.backbones import SMOKE_BACKBONE
    from autopetl.search.runner import SearchPlan, run_search
    from autopetl.search.space import parse_space
    from autopetl.store import open_store
    from tests.test_search_run import _toy_task

    # The head takes no trials (no GPU); two workers with 2 fake GPUs each.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    doomed = cluster.add_node(num_cpus=2, num_gpus=2)
    cluster.add_node(num_cpus=2, num_gpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    store = open_store(db_url)
    space = parse_space(
        yaml.safe_load("methods: {vpt: {prompt_length: 4}}\ntrain: {lr: 1.0e-3, epochs: 6}"),
        name="cluster",
        where="<cluster>",
    )
    plan = SearchPlan(
        name="cluster",
        data=_toy_task(256),
        space=space,
        budget=8,
        backbone=SMOKE_BACKBONE,
        scheduler="none",
        cpus_per_trial=1,
        gpus_per_trial=1,
        storage_path=Path(storage),
        max_retries=3,
    )
    doomed_id = doomed.node_id
    removed = {}

    def remove_when_busy() -> None:
        # Wait until a trial has reported from the doomed node, then take the node away.
        deadline = time.time() + 300
        while time.time() < deadline:
            rows = [t for t in store.trials("cluster")] if store.get_search("cluster") else []
            if sum(t.epochs_done >= 2 for t in rows) >= 2:
                cluster.remove_node(doomed)
                removed["at"] = time.time()
                return
            time.sleep(0.2)

    threading.Thread(target=remove_when_busy, daemon=True).start()
    outcome = run_search(plan, store)
    trials = store.trials("cluster")
    print(
        json.dumps(
            {
                "status": outcome.status,
                "removed": bool(removed),
                "doomed_node": doomed_id,
                "trials": [
                    {
                        "key": t.trial_key,
                        "status": t.status,
                        "attempts": t.attempts,
                        "node": t.cost.get("node_id"),
                        "epochs": [e.epoch for e in store.epochs("cluster", t.trial_key)],
                    }
                    for t in trials
                ],
            }
        )
    )
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
