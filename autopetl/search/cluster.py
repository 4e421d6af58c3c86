"""Connecting to Ray: a local instance by default, or an existing cluster with --address."""

from __future__ import annotations

import logging
import os

from autopetl.errors import ConfigError


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
    # Ray 2.60 turns token authentication on by default; a local, single-user instance needs none.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
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
    except ConnectionError as exc:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address!r}: {exc}; is `ray start --head` running there?"
        ) from exc
