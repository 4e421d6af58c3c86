"""How long a local Ray instance outlives its signalled driver, with and without autopetl's reaper.

For each signal (SIGKILL, SIGTERM) and setting (``reaper``, ``no-reaper``: AUTOPETL_RAY_REAPER=0,
as before issue 18), starts ``autopetl search --smoke-test`` with 2 concurrent trials, waits until
its Ray processes are up and trials run, signals the driver's process only (as ``kill PID`` or an
OOM killer would), and times until no process carrying the instance's token is left (at most
``--wait`` s). Writes ``benchmarks/results/driver_exit.json`` and prints a Markdown table.

    python benchmarks/driver_exit.py            # 4 runs, up to 2 minutes each
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:60].decode()
    except OSError:
        return "?"


def measure(sig: signal.Signals, reaper_on: bool, wait: float, tmp: Path) -> dict[str, Any]:
    from autopetl.search import reaper

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    env.pop(reaper.TOKEN_ENV, None)
    env |= {"AUTOPETL_HOME": str(tmp / "home"), reaper.SWITCH_ENV: "1" if reaper_on else "0"}
    name = f"exit-{sig.name}-{int(reaper_on)}"
    cmd = [
        sys.executable, "-m", "autopetl", "search", "--task", "vtab/dsprites_loc",
        "--budget", "60", "--smoke-test", "--name", name, "--db", f"sqlite:///{tmp}/{name}.db",
        "--cpus-per-trial", "1", "--max-concurrent", "2",
    ]  # fmt: skip
    driver = subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    token = None
    try:
        for line in driver.stdout:  # type: ignore[union-attr]
            if "trial" in line and ("completed" in line or "pruned" in line):
                break  # trials are running: every kind of Ray process is up
        for child in Path(f"/proc/{driver.pid}/task/{driver.pid}/children").read_text().split():
            for item in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"):
                if item.startswith(reaper.TOKEN_ENV.encode() + b"="):
                    token = item.split(b"=", 1)[1].decode()
        assert token, "no Ray process with an instance token"
        alive = reaper.holders(token)
        os.kill(driver.pid, sig)
        driver.wait(timeout=60)
        t0 = time.monotonic()
        last: list[int] = alive
        while time.monotonic() - t0 < wait:
            last = reaper.holders(token)
            if not last:
                break
            time.sleep(0.2)
        outlived = time.monotonic() - t0
        return {
            "signal": sig.name,
            "setting": "reaper" if reaper_on else "no-reaper",
            "processes_at_signal": len(alive),
            "seconds_until_none_left": round(outlived, 1) if not last else None,
            "left_after_wait": [_title(p) for p in last],
        }
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        if token:
            reaper.end_instance(token, 1.0)  # never leave a measured instance behind


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--wait", type=float, default=120.0, help="longest wait per run, seconds")
    p.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "driver_exit.json"
    )
    args = p.parse_args(argv)
    if not sys.platform.startswith("linux"):
        p.error("reads /proc: Linux only")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for sig in (signal.SIGKILL, signal.SIGTERM):
            for on in (True, False):
                r = measure(sig, on, args.wait, Path(tmp))
                print(json.dumps(r), flush=True)
                results.append(r)
    report = {
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible, {platform.platform()}",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| signal | setting | Ray processes at the signal | seconds until none left |",
             "|---|---|---|---|"]  # fmt: skip
    for r in results:
        s = r["seconds_until_none_left"]
        shown = (
            f"{s:.1f}" if s is not None else f"> {args.wait:.0f} ({len(r['left_after_wait'])} left)"
        )
        lines.append(f"| {r['signal']} | {r['setting']} | {r['processes_at_signal']} | {shown} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
