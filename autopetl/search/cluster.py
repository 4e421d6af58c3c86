"""Connecting to Ray: a local instance by default, or an existing cluster with --address."""

from __future__ import annotations

import glob
import logging
import os
import secrets
import shutil

from autopetl.errors import ConfigError


def local_instance_token() -> None:
    """Make the local Ray instance about to start demand a token known only to this process.

    Ray's gRPC servers (GCS, raylet, workers, the dashboard agent) listen on every interface,
    and Ray 2.60 has no option to bind them to loopback: without authentication anyone who can
    reach the machine could run code in the instance. So a local instance runs in Ray's token
    mode with a fresh random token in this process's environment, which Ray's own processes
    inherit and nothing writes to disk. A token or mode the user set is kept
    (``RAY_AUTH_MODE=disabled`` turns it off, as Ray documents).
    """
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if os.environ["RAY_AUTH_MODE"] != "token":
        return
    if not os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_TOKEN_PATH"):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    # Ray's C++ side read its configuration when ray was imported; reload it so this process
    # sees the mode and token too (what Ray's own _enable_token_auth does, Ray 2.60).
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def check_gpus_here(gpus_per_trial: float, address: str | None) -> None:
    """Refuse at once, before Ray starts, GPUs asked of a local instance on a machine that surely
    has none (no device visible to CUDA, no NVIDIA device file, no nvidia-smi). Where that is not
    sure, or the trials run on a cluster, :func:`check_trial_fits` asks the connected Ray."""
    if gpus_per_trial <= 0 or address or os.environ.get("RAY_ADDRESS"):
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        has_gpu = any(d.strip() not in ("", "-1") for d in visible.split(","))
    else:
        has_gpu = bool(glob.glob("/dev/nvidia[0-9]*")) or shutil.which("nvidia-smi") is not None
    if not has_gpu:
        raise ConfigError(
            f"--gpus-per-trial {gpus_per_trial:g}: this machine has no GPU that CUDA can see; "
            "leave it out to train on the CPU, or join a cluster with GPUs with --address"
        )


def check_trial_fits(cpus_per_trial: float, gpus_per_trial: float) -> None:
    """Refuse, at once, a trial the connected Ray cannot place (Tune would wait for it forever).

    Counted on the largest node, since one trial runs on one node. A cluster that autoscales may
    add nodes later; it reports them only once they exist, so its biggest node type must be up.
    """
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    most_gpus = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    most_cpus = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    if gpus_per_trial > most_gpus:
        has = f"at most {most_gpus:g} GPU(s) on one node" if most_gpus else "no GPU"
        raise ConfigError(
            f"--gpus-per-trial {gpus_per_trial:g}: the Ray {'cluster' if len(nodes) > 1 else 'instance'} "
            f"has {has}; lower it (fractions share a GPU) or join a cluster with --address"
        )
    if cpus_per_trial > most_cpus:
        raise ConfigError(
            f"--cpus-per-trial {cpus_per_trial:g}: the largest Ray node has {most_cpus:g} CPUs"
        )


def connect(address: str | None, *, database_url: str, num_cpus: int | None = None) -> None:
    """Start a local Ray instance, or join the cluster at ``address`` (``auto`` or HOST:PORT).

    A cluster's trials run on many machines, so they must share one database: SQLite is refused.
    """
    import ray

    if address and database_url.startswith("sqlite"):
        raise ConfigError(
            "a Ray cluster needs a database every node can reach: pass --db postgresql+psycopg://USER:PASS@HOST/DB "
            "(SQLite is a file on one machine)"
        )
    if ray.is_initialized():
        return
    if not address:
        local_instance_token()
        # The instance's processes end with this one, even SIGKILLed (search/reaper.py).
        from autopetl.search import reaper

        reaper.start()
    # A cluster keeps the authentication its `ray start` chose (Ray's default: a token).
    try:
        ray.init(
            # "local" starts a private instance even when `ray start` left a cluster on this
            # machine (ray.init() would silently join that one).
            address=address or "local",
            num_cpus=None if address else num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            configure_logging=True,
        )
    except ray.exceptions.AuthenticationError as exc:
        raise ConfigError(
            f"the Ray cluster at {address!r} refused this machine's token: set RAY_AUTH_TOKEN or "
            "RAY_AUTH_TOKEN_PATH to the cluster's token (docs/CLUSTER.md, Authentication)"
        ) from exc
    except ConnectionError as exc:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address!r}: {exc}; is `ray start --head` running there?"
        ) from exc
