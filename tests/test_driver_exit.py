"""A local Ray instance ends with its driver, SIGKILLed or SIGTERMed (issue 18, item 13).

Only the driver's own process is signalled, as a user's `kill PID` or an OOM killer does: before
search/reaper.py, the raylet's agents and idle workers outlived it by 60-85 s
(`python benchmarks/driver_exit.py` measures both ways side by side).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from autopetl.search import reaper

from .test_search_cli import _search

pytestmark = pytest.mark.slow


def _token_of_children(pid: int, timeout: float) -> str | None:
    """The instance token in the environment of the driver's children (its own /proc environ
    shows only what it was started with)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            try:
                env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            for item in env:
                if item.startswith(reaper.TOKEN_ENV.encode() + b"="):
                    return item.split(b"=", 1)[1].decode()
        time.sleep(0.2)
    return None


@pytest.mark.skipif(not os.path.exists("/proc/self/environ"), reason="needs Linux /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_signalled_driver_leaves_no_ray_process_behind(tmp_path, sqlite_url, sig) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    env |= {"AUTOPETL_HOME": str(tmp_path / "home")}
    env.pop(reaper.TOKEN_ENV, None)
    driver = _search(f"exit-{sig.name}", sqlite_url, 40, env)
    try:
        # Wait until a trial finished: the raylet's own children (agents, workers), which are
        # what lingered, are up by then.
        for line in driver.stdout:
            if "trial" in line and ("completed" in line or "pruned" in line):
                break
        token = _token_of_children(driver.pid, 30)
        assert token, "the driver started no Ray process with an instance token"
        running = reaper.holders(token)
        assert len(running) >= 5, running
        os.kill(driver.pid, sig)
        driver.wait(timeout=60)
        t0 = time.monotonic()
        while reaper.holders(token) and time.monotonic() - t0 < 30:
            time.sleep(0.2)
        left = reaper.holders(token)
        names = [
            Path(f"/proc/{p}/cmdline").read_bytes()[:60]
            for p in left
            if Path(f"/proc/{p}").exists()
        ]
        assert not left, f"{len(left)} processes still alive 30 s after the driver: {names}"
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
