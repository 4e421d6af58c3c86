"""Load benchmark of ``autopetl serve``: concurrent clients on loopback, with and without batching.

Serves two tasks (VPT-deep and DVPT artifacts written on the spot, no training) on one backbone,
then for each setting runs N concurrent clients for T seconds, each sending the same PNG to a
random one of the two tasks, and reports requests/s, p50/p99 latency of the answered requests,
the requests shed (a fast 503 when the backbone's queue is full; the client then waits the
Retry-After second, as a well-behaved client does) and errors. Settings: max batch size x the
queue bound (``--max-queued``; -1 is no bound, as before issue 18) x clients. Bounded in count
(clients) and time (seconds per setting). Writes JSON and a Markdown table.

    python benchmarks/serve_load.py --quick      # 16 clients x 5 s per setting, smoke backbone
    python benchmarks/serve_load.py --clients 16,50 --seconds 20 --max-queued 8,-1 --batch-sizes 1,8

With ``--tasks``, throughput against the number of tasks served instead, one pass per batch
against a pass per task (benchmarks/_serve_tasks_http.py):

    python benchmarks/serve_load.py --tasks 1,2,4,8 --mix uniform,skewed   # ViT-S/16, 224 px
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def _artifacts(root: Path, spec: Any) -> list[Any]:
    from autopetl.methods import build_method
    from autopetl.methods.io import (
        WEIGHTS_FILE,
        backbone_init_record,
        file_sha256,
        rebuildable_backbone,
        save_tunable,
    )
    from autopetl.pipeline import attach
    from autopetl.serving.catalog import ServedTask

    base = rebuildable_backbone(spec, 16)
    init = backbone_init_record(spec, base)
    out = []
    for key, method, classes in (("dsprites_loc", "vpt", 16), ("dsprites_ori", "dvpt", 40)):
        base.reset_classifier(classes)
        m = build_method(method)
        path = save_tunable(
            attach(base, m, seed=0), m, spec.to_dict(), classes, root / key, backbone_init=init
        )
        out.append(
            ServedTask(
                key=key,
                task=f"vtab/{key}",
                num_classes=classes,
                search="bench",
                trial_key="0",
                method=method,
                config={"method": method},
                seed=0,
                seed_test_acc=None,
                test_acc=None,
                test_acc_std=None,
                seeds=1,
                tunable_params=None,
                artifact=str(path),
                sha256=file_sha256(path / WEIGHTS_FILE),
                backbone=spec.to_dict(),
                backbone_init=init,
            )
        )
    return out


def _png(size: int) -> bytes:
    from PIL import Image

    img = Image.new("RGB", (size, size))
    img.paste((255, 255, 255), (size // 4, size // 4, size // 2, size // 2))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


async def _load(url: str, tasks: list[str], png: bytes, clients: int, seconds: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    shed = 0
    shed_ms: list[float] = []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def one_client(seed: int) -> None:
            nonlocal errors, shed
            rng = random.Random(seed)
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    r = await client.post(
                        f"/v1/tasks/{rng.choice(tasks)}/predict",
                        content=png,
                        headers={"content-type": "image/png"},
                    )
                    ok = r.status_code == 200
                    if r.status_code == 503 and r.headers.get("retry-after"):
                        shed += 1
                        shed_ms.append(1000 * (time.perf_counter() - t0))
                        await asyncio.sleep(float(r.headers["retry-after"]))
                        continue
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client(i) for i in range(clients)))
        wall = time.perf_counter() - t0
    latencies.sort()

    def pct(q: float) -> float | None:
        return (
            1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]
            if latencies
            else None
        )

    return {
        "requests": len(latencies),
        "errors": errors,
        "shed": shed,
        "shed_p99_ms": sorted(shed_ms)[int(0.99 * (len(shed_ms) - 1))] if shed_ms else None,
        "seconds": wall,
        "requests_per_s": len(latencies) / wall,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": 1000 * statistics.fmean(latencies) if latencies else None,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="16 clients x 5 s, batch sizes 1 and 8")
    p.add_argument("--clients", default="16", help="concurrent clients, a list: 16,50")
    p.add_argument(
        "--max-queued", default="8", help="the backbone queue bound, a list (-1: unbounded)"
    )
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--batch-sizes", default="1,8", help="max batch sizes to compare (1 = none)")
    p.add_argument("--image-size", type=int, default=64, help="side of the PNG clients send")
    p.add_argument("--weights", default=None, help="real backbone weights file (default: smoke)")
    p.add_argument("--tasks", default=None, help="task counts to serve, a list: 1,2,4,8")
    p.add_argument("--mix", default="uniform,skewed", help="with --tasks: uniform, skewed")
    p.add_argument("--backbone", default="vit_small_patch16_224", help="with --tasks (random init)")
    p.add_argument("--img-size", type=int, default=224, help="with --tasks")
    p.add_argument("--batch", type=int, default=8, help="with --tasks: the max batch size")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: results/serve_load.json; --quick: results/quick/, git-ignored",
    )
    args = p.parse_args(argv)
    # A --quick run checks that it runs: it never writes over the committed full results.
    results = Path(__file__).resolve().parent / "results"
    args.out = args.out or results / ("quick" if args.quick else "") / "serve_load.json"
    if args.quick:
        args.clients, args.seconds = "16", 5.0
        if args.tasks:
            args.tasks, args.backbone, args.img_size = "1,2", "vit_tiny_patch16_224", 64
    args.command = " ".join(["python", *sys.argv])
    args.machine = f"{platform.machine()}, {os.cpu_count()} CPUs visible, {platform.platform()}"
    if args.tasks and not all(1 <= int(n) <= 16 for n in args.tasks.split(",")):
        p.error("--tasks: counts in 1..16")
    if not set(args.mix.split(",")) <= {"uniform", "skewed"}:
        p.error("--mix: uniform, skewed or both")
    clients_list = [int(c) for c in args.clients.split(",")]
    if not all(1 <= c <= 256 for c in clients_list) or not 0 < args.seconds <= 120:
        p.error("--clients must be in 1..256 and --seconds in (0, 120]: the benchmark is bounded")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tasks:
        from _serve_tasks_http import run

        return run(args)
    clients_list = [int(c) for c in args.clients.split(",")]
    queues = [int(q) for q in args.max_queued.split(",")]

    import ray
    from ray import serve

    from autopetl.backbones import SMOKE_BACKBONE, BackboneSpec
    from autopetl.serving.app import ServeOptions, build_app, start_serve
    from autopetl.serving.guard import GuardLimits

    spec = SMOKE_BACKBONE
    if args.weights:
        spec = BackboneSpec("vit_small_patch14_dinov2", args.weights, 112)
    # A private local Ray, never a cluster another user left running.
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tasks = _artifacts(Path(tmp), spec)
        png = _png(args.image_size)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        start_serve("127.0.0.1", port, GuardLimits())
        url = f"http://127.0.0.1:{port}"
        keys = [t.key for t in tasks]
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            for queue in queues:
                options = ServeOptions(max_batch_size=batch, max_queued=queue)
                serve.run(build_app(tasks, options), name="bench", route_prefix="/")
                # Warm-up: load both tasks on the replica, first-call costs out of the figures.
                asyncio.run(_load(url, keys, png, 2, 1.0))
                for clients in clients_list:
                    r = asyncio.run(_load(url, keys, png, clients, args.seconds))
                    r.update(max_batch_size=batch, max_queued=queue, clients=clients)
                    results.append(r)
                    print(
                        f"batch {batch}, queue {queue}, {clients} clients: {r['requests']} "
                        f"answered, {r['shed']} shed, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms",
                        flush=True,
                    )
                serve.delete("bench")
        serve.shutdown()
    ray.shutdown()
    report = {
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible, {platform.platform()}",
        "backbone": spec.to_dict(),
        "tasks": ["dsprites_loc (vpt)", "dsprites_ori (dvpt)"],
        "image": f"{args.image_size}x{args.image_size} PNG",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "| max batch | queue bound | clients | answered | req/s | p50 ms | p99 ms | p99/p50 "
        "| shed (503) | shed p99 ms | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        bound = "none" if r["max_queued"] == -1 else r["max_queued"]
        ratio = r["p99_ms"] / r["p50_ms"] if r["p50_ms"] else float("nan")
        shed_p99 = "-" if r["shed_p99_ms"] is None else f"{r['shed_p99_ms']:.0f}"
        lines.append(
            f"| {r['max_batch_size']} | {bound} | {r['clients']} | {r['requests']} | "
            f"{r['requests_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {ratio:.1f} "
            f"| {r['shed']} | {shed_p99} | {r['errors']} |"
        )
    table = "\n".join(lines)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
