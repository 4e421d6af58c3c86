"""The CLI against a Ray cluster started by `ray start` on 127.0.0.1, with PostgreSQL, as a user
runs it (docs/CLUSTER.md)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autopetl.store import open_store

pytestmark = pytest.mark.slow
RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    # --block keeps each node in the foreground, in its own session, so it can be stopped alone
    # (`ray stop` would also stop the test session's own Ray).
    return subprocess.Popen(
        [str(RAY), "start", *args, "--block", "--disable-usage-stats"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_started(proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Until `ray start` says its node is up (it prints so once the node has registered)."""
    deadline = time.monotonic() + timeout
    while "Ray runtime started." not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def _stop(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=20)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def test_search_on_a_ray_start_cluster_with_postgresql(tmp_path, pg_url):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"RAY_AUTH_MODE": "disabled", "AUTOPETL_HOME": str(tmp_path / "home")}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = _start(
        [
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            "--include-dashboard=false",
        ],
        env,
        tmp_path / "head.log",
    )
    worker = None
    try:
        _wait_started(head, tmp_path / "head.log")
        worker = _start(
            [f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=2"],
            env,
            tmp_path / "worker.log",
        )
        # SQLite is refused on a cluster, with the fix in the message.
        refused = subprocess.run(
            [
                sys.executable,
                "-m",
                "autopetl",
                "search",
                "--task",
                "vtab/dsprites_loc",
                "--smoke-test",
                "--address",
                address,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert refused.returncode == 2 and "postgresql" in refused.stderr
        _wait_started(worker, tmp_path / "worker.log")
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "autopetl",
                "search",
                "--task",
                "vtab/dsprites_loc",
                "--budget",
                "4",
                "--smoke-test",
                "--address",
                address,
                "--db",
                pg_url,
                "--name",
                "on-cluster",
                "--storage",
                str(tmp_path / "shared"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        trials = open_store(pg_url).trials("on-cluster")
        assert len(trials) == 4 and all(t.status in ("completed", "pruned") for t in trials)
        assert "Pareto front of on-cluster" in run.stdout
        assert (
            pg_url.split("@")[0].split(":")[-1] not in run.stdout + run.stderr
        )  # no password printed
    finally:
        for proc in (worker, head):
            if proc is not None:
                _stop(proc)
