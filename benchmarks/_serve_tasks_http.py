"""``serve_load.py --tasks``: HTTP throughput and latency against the number of tasks served, one
backbone pass per batch (today's serving) against a pass per task in a batch (as Ray Serve's
per-model multiplexing ran), side by side in one run (issue 32, item 3).

For each task count and mix, the same N task artifacts (the issue's serving set taken in turn:
VPT-deep, DVPT, LoRA, adapter, linear; 10 classes each) are served both ways, with the same batch
size, clients and seconds; each client sends a PNG to a task drawn from the mix (``uniform``, or
``skewed``: task i with weight 1/(i+1), a Zipf-like popularity). Writes its rows to
``results/serve_load_tasks.json`` and, at the top level of ``results/serve_tasks.json`` (beside
the model-level figures of ``serve_tasks.py``), ``http_one_pass_over_per_task_8``.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from pathlib import Path
from typing import Any

SET = [("vpt", {"deep": True, "prompt_length": 10}), ("dvpt", {}), ("lora", {}),
       ("adapter", {}), ("linear", {})]  # fmt: skip


def task_artifacts(root: Path, spec: Any, n: int) -> list[Any]:
    """``n`` served tasks on ``spec``, the serving set's methods in turn (no training)."""
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

    base = rebuildable_backbone(spec, 10)
    init = backbone_init_record(spec, base)
    out = []
    for i in range(n):
        method, values = SET[i % len(SET)]
        key = f"task{i}"
        m = build_method(method, values)
        path = save_tunable(
            attach(base, m, seed=i), m, spec.to_dict(), 10, root / key, backbone_init=init
        )
        out.append(
            ServedTask(key=key, task=f"bench/{key}", num_classes=10, search="bench",
                       trial_key=str(i), method=method, config={"method": method, **values},
                       seed=0, seed_test_acc=None, test_acc=None, test_acc_std=None, seeds=1,
                       tunable_params=None, artifact=str(path),
                       sha256=file_sha256(path / WEIGHTS_FILE), backbone=spec.to_dict(),
                       backbone_init=init)
        )  # fmt: skip
    return out


def _weights(mix: str, n: int) -> list[float]:
    return [1.0] * n if mix == "uniform" else [1.0 / (i + 1) for i in range(n)]


async def _load(url: str, keys: list[str], weights: list[float], png: bytes, clients: int,
                seconds: float) -> dict[str, Any]:  # fmt: skip
    import httpx

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(seed: int) -> None:
            rng = random.Random(seed)
            while time.perf_counter() < deadline:
                task = rng.choices(keys, weights)[0]
                t0 = time.perf_counter()
                try:
                    r = await client.post(f"/v1/tasks/{task}/predict", content=png,
                                          headers={"content-type": "image/png"})  # fmt: skip
                    key = str(r.status_code)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                statuses[key] = statuses.get(key, 0) + 1
                if key == "200":
                    latencies.append(time.perf_counter() - t0)
                elif key == "503":  # shed: wait the Retry-After second, as a good client does
                    await asyncio.sleep(1.0)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(clients)))
        wall = time.perf_counter() - t0
    latencies.sort()

    def pct(q: float) -> float | None:
        return round(1000 * latencies[int(q * (len(latencies) - 1))], 1) if latencies else None

    return {"answered": len(latencies), "statuses": statuses,
            "requests_per_s": round(len(latencies) / wall, 2), "p50_ms": pct(0.5),
            "p99_ms": pct(0.99)}  # fmt: skip


def run(args: Any) -> int:
    import ray
    from ray import serve
    from serve_load import _png

    from autopetl.backbones import BackboneSpec
    from autopetl.serving.app import ServeOptions, build_app, start_serve
    from autopetl.serving.guard import GuardLimits

    counts = [int(n) for n in args.tasks.split(",")]
    mixes = args.mix.split(",")
    spec = BackboneSpec(args.backbone, args.weights or "none", args.img_size)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)  # fmt: skip
    rows = []
    started = time.perf_counter()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tasks = task_artifacts(Path(tmp), spec, max(counts))
        png = _png(args.image_size)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        start_serve("127.0.0.1", port, GuardLimits())
        url = f"http://127.0.0.1:{port}"
        for n in counts:
            served = tasks[:n]
            keys = [t.key for t in served]
            for one_pass in (False, True):
                options = ServeOptions(max_batch_size=args.batch, one_pass=one_pass)
                serve.run(build_app(served, options), name="bench", route_prefix="/")
                for key in keys:  # load every task on the replica: first-call costs out
                    asyncio.run(_load(url, [key], [1.0], png, 1, 0.5))
                for mix in mixes:
                    r = asyncio.run(_load(url, keys, _weights(mix, n), png, int(args.clients.split(',')[0]),
                                          args.seconds))  # fmt: skip
                    way = "one_pass" if one_pass else "per_task"
                    r.update(tasks=n, mix=mix, way=way, batch=args.batch)
                    rows.append(r)
                    print(f"{n} tasks, {mix}, {way}: {r['requests_per_s']} req/s, p50 "
                          f"{r['p50_ms']} ms, p99 {r['p99_ms']} ms, {r['statuses']}",
                          flush=True)  # fmt: skip
                serve.delete("bench")
        serve.shutdown()
    ray.shutdown()

    def rps(n: int, mix: str, way: str) -> float:
        return next(r["requests_per_s"] for r in rows
                    if r["tasks"] == n and r["mix"] == mix and r["way"] == way)  # fmt: skip

    most = max(counts)
    ratios = {mix: round(rps(most, mix, "one_pass") / rps(most, mix, "per_task"), 3)
              for mix in mixes}  # fmt: skip
    report = {"http_one_pass_over_per_task_8": ratios.get("uniform"),
              "one_pass_over_per_task_by_mix": ratios, "rows": rows,
              "backbone": spec.to_dict(), "batch": args.batch, "clients": int(args.clients.split(',')[0]),
              "seconds_per_row": args.seconds, "image": f"{args.image_size} px PNG",
              "methods_in_turn": [m for m, _ in SET], "command": args.command,
              "machine": args.machine, "when": time.strftime("%Y-%m-%d %H:%M"),
              "wall_s": round(time.perf_counter() - started)}  # fmt: skip
    out = args.out.parent / "serve_load_tasks.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    model_level = out.parent / "serve_tasks.json"
    if model_level.exists() and most == 8 and "uniform" in ratios:
        merged = json.loads(model_level.read_text())
        merged = {
            "http_one_pass_over_per_task_8": ratios["uniform"],
            **merged,
            "http": {k: v for k, v in report.items() if k != "rows"} | {"file": out.name},
        }
        merged["http_one_pass_over_per_task_8"] = ratios["uniform"]
        model_level.write_text(json.dumps(merged, indent=1) + "\n")  # fmt: skip
    print(f"one pass over per task at {most} tasks: {ratios}; wrote {out}")
    return 0
