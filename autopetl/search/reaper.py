"""A local Ray instance ends with the autopetl process that started it, however that ends.

Ray's kernel fate-sharing kills the driver's own children (gcs_server, raylet) when the driver
dies, but not theirs: the raylet's agents (DashboardAgent, RuntimeEnvAgent) and idle workers
noticed only on their next poll, and a SIGKILLed or SIGTERMed ``autopetl search`` left them
running for 60-85 s (issue 18), holding memory and ports.

How: before ``ray.init`` starts a local instance, :func:`start` puts a random token in the
driver's environment, which every process Ray starts inherits (workers included, whatever their
title), and starts a watcher process in its own session that reads a pipe only the driver can
write to. When the driver ends, by any means, the pipe reads end-of-file at once, and the
watcher sends SIGTERM to every process of this user whose environment holds the token, then
SIGKILL to what is left after a grace period. Linux only (it reads /proc); elsewhere Ray's own
clean-up is all there is. ``AUTOPETL_RAY_REAPER=0`` turns the watcher off (the token stays).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

TOKEN_ENV = "AUTOPETL_RAY_INSTANCE"
SWITCH_ENV = "AUTOPETL_RAY_REAPER"
GRACE_S = 3.0

_held: list[int] = []  # the pipe's write end, open for as long as the driver lives


def start() -> str:
    """Mark the local instance about to start with a token, and watch for the driver's end."""
    token = secrets.token_hex(8)
    if sys.platform.startswith("linux") and os.environ.get(SWITCH_ENV, "1") != "0":
        read_end, write_end = os.pipe()  # not inherited by anything the driver starts (PEP 446)
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
        subprocess.Popen(
            [sys.executable, "-m", "autopetl.search.reaper", token, str(GRACE_S)],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a signal to the driver's process group spares the watcher
        )
        os.close(read_end)
        _held.append(write_end)
    os.environ[TOKEN_ENV] = token
    return token


def holders(token: str) -> list[int]:
    """The processes of this user whose environment holds ``token`` (never this one)."""
    needle = f"{TOKEN_ENV}={token}".encode() + b"\0"
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            if needle in Path(f"/proc/{name}/environ").read_bytes():
                found.append(int(name))
        except OSError:  # another user's process, or one that just ended
            continue
    return found


def end_instance(token: str, grace_s: float = GRACE_S) -> None:
    """SIGTERM every process holding ``token``; SIGKILL those left after ``grace_s``."""
    for pid in holders(token):
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and holders(token):
        time.sleep(0.1)
    for pid in holders(token):
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def main(argv: list[str]) -> int:
    token, grace = argv[0], float(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the driver
    while sys.stdin.buffer.read(65536):  # returns b"" only at end-of-file: the driver is gone
        pass
    end_instance(token, grace)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
