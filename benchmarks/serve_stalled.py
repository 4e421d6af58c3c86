"""Valid predictions while thousands of uploads stall mid-body (issue 32, item 5).

On 127.0.0.1, against ``autopetl serve``'s Ray Serve with the request guard at its defaults
(8 MiB bodies, 30 s body timeout, 4,096 connections, 256 MiB buffered across bodies). For each
N: N connections each send a POST's headers declaring a 100,000-byte body and its first 100
bytes, then stall; while all N are open, ``--clients`` clients send valid predictions for
``--seconds`` s. Reported: the predictions answered 200 (and the other statuses), their p50/p99,
and the resident memory of the proxy and ingress before the stall, while it holds, and
``--settle`` s after the stalled connections were closed.

Before (the issue's figures): at 1,000 stalled connections 0 of 40 valid predictions were
answered (every one a 503: the guard's 512 upload slots were held by 100-byte bodies).

    python benchmarks/serve_stalled.py                 # N = 1000, 3000, 3000, 3000
    python benchmarks/serve_stalled.py --quick         # N = 300, 5 s: writes under results/quick/

Writes ``benchmarks/results/serve_stalled.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_hostile import _memory, _open
from serve_load import _artifacts, _png

STALLED = (
    b"POST /v1/tasks/dsprites_loc/predict HTTP/1.1\r\nhost: x\r\n"
    b"content-type: image/png\r\ncontent-length: 100000\r\n\r\n" + b"\0" * 100
)


async def _predictions(port: int, clients: int, seconds: float) -> dict[str, Any]:
    import httpx

    png = _png(32)
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:

        async def one() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    r = await client.post(
                        "/v1/tasks/dsprites_loc/predict",
                        content=png,
                        headers={"content-type": "image/png"},
                    )
                    key = str(r.status_code)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                statuses[key] = statuses.get(key, 0) + 1
                if key == "200":
                    latencies.append(1000 * (time.perf_counter() - t0))
                await asyncio.sleep(0.25)  # a steady trickle, not a flood: the point is access

        await asyncio.gather(*(one() for _ in range(clients)))
    latencies.sort()
    sent = sum(statuses.values())

    def pct(q: float) -> float | None:
        return round(latencies[int(q * (len(latencies) - 1))], 1) if latencies else None

    return {
        "sent": sent,
        "answered_200": statuses.get("200", 0),
        "answered_share": round(statuses.get("200", 0) / sent, 3) if sent else None,
        "statuses": statuses,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
    }


async def stalled_run(port: int, n: int, args: argparse.Namespace) -> dict[str, Any]:
    before = _memory()
    conns = []
    refused = 0
    for _ in range(n):
        try:
            conns.append(await _open(port, STALLED))
        except OSError:
            refused += 1
    await asyncio.sleep(1.0)
    predictions = await _predictions(port, args.clients, args.seconds)
    holding = _memory()
    still_open = sum(1 for _, w in conns if not w.is_closing())
    for _, w in conns:
        w.close()
    await asyncio.sleep(args.settle)
    settled = _memory()
    return {
        "stalled": n,
        "refused_at_connect": refused,
        "predictions": predictions,
        "memory_before": before,
        "memory_while_stalled": holding,
        "memory_settled": settled,
        "growth_while_stalled_mib": {k: round(holding[k] - before[k], 1) for k in before},
        "growth_settled_mib": {k: round(settled[k] - before[k], 1) for k in before},
        "stalled_still_open_after_predictions": still_open,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--stalled",
        default="1000,3000,3000,3000",
        help="stalled connections, a list (3000 again: the growth is a high-water mark)",
    )
    p.add_argument("--clients", type=int, default=2, help="clients sending valid predictions")
    p.add_argument("--seconds", type=float, default=20.0, help="how long they send (< 30 s)")
    p.add_argument("--settle", type=float, default=10.0)
    p.add_argument("--quick", action="store_true", help="300 stalled, 5 s")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    results = Path(__file__).resolve().parent / "results"
    args.out = args.out or results / ("quick" if args.quick else "") / "serve_stalled.json"
    if args.quick:
        args.stalled, args.seconds, args.settle = "300", 5.0, 2.0
    args.counts = [int(n) for n in args.stalled.split(",")]
    if not all(1 <= n <= 3500 for n in args.counts) or not 0 < args.seconds < 30:
        p.error("bounded: --stalled 1..3500 each (the guard holds 4,096), --seconds under 30")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, max(args.counts) + 512)), hard))
    import ray
    from ray import serve

    from autopetl.backbones import SMOKE_BACKBONE
    from autopetl.serving.app import ServeOptions, build_app, start_serve
    from autopetl.serving.guard import GuardLimits

    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
        configure_logging=False,
    )  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tasks = _artifacts(Path(tmp), SMOKE_BACKBONE)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        limits = GuardLimits()
        start_serve("127.0.0.1", port, limits)
        serve.run(build_app(tasks, ServeOptions()), name="hostile", route_prefix="/")
        asyncio.run(_predictions(port, 1, 1.0))  # warm: the task loaded, first-call costs out
        for n in args.counts:
            r = asyncio.run(stalled_run(port, n, args))
            results.append(r)
            p = r["predictions"]
            print(f"{n} stalled: {p['answered_200']}/{p['sent']} answered", flush=True)
        serve.shutdown()
    ray.shutdown()
    report = {
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible, {platform.platform()}",
        "guard": limits.__dict__,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "| stalled mid-body | valid predictions answered | other answers | p50 / p99 ms "
        "| proxy, ingress growth while stalled (MiB) | after closing (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        p, g, s = r["predictions"], r["growth_while_stalled_mib"], r["growth_settled_mib"]
        other = {k: v for k, v in p["statuses"].items() if k != "200"} or "none"
        lines.append(
            f"| {r['stalled']} | {p['answered_200']}/{p['sent']} | {other} "
            f"| {p['p50_ms']} / {p['p99_ms']} | {g['proxy_mib']:+.0f}, {g['ingress_mib']:+.0f} "
            f"| {s['proxy_mib']:+.0f}, {s['ingress_mib']:+.0f} |"
        )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
