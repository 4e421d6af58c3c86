"""Hostile clients against ``autopetl serve``, with the proxy's request guard on and off, side by side.

On 127.0.0.1, bounded in count and time. For each setting (``guard`` and ``no-guard``, the
server as it was before issue 18):

1. **idle connections**: N clients that connect and send nothing, N that send half a request
   line, and N that send a POST's headers and 10 of its 1,000 body bytes, then stall; with all 3N
   open, ``GET /healthz`` must answer. Then: how many of them the server closed within the
   header/body timeouts.
2. **rejected bodies**: M chunked uploads of ``--big-mb`` MiB each (no Content-Length, so
   nothing can be refused before reading), sent as fast as the socket takes them; the resident
   memory of the proxy and ingress processes before, just after, and ``--settle`` s after.
3. **uvicorn's own 400s**: a garbage request line, TLS handshake bytes, an unknown method, a bad
   Content-Length: is the answer JSON?

    python benchmarks/serve_hostile.py --quick   # N=300, M=20 of 16 MiB; about a minute a setting
    python benchmarks/serve_hostile.py           # N=1000; M=1000 guarded, 52 without

Writes ``benchmarks/results/serve_hostile.json`` and prints a Markdown table.
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

from serve_load import _artifacts, _png

MIB = 2**20


def _rss(pattern: str) -> int:
    """Summed resident bytes of the processes whose title contains ``pattern`` (Ray sets titles)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if pattern not in title:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _memory() -> dict[str, float]:
    return {
        "proxy_mib": _rss("ray::ProxyActor") / MIB,
        "ingress_mib": _rss("ServeReplica:hostile:Ingress") / MIB,
    }


async def _open(port: int, first: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if first:
        writer.write(first)
        await writer.drain()
    return reader, writer


async def _closed_by_server(reader: asyncio.StreamReader, wait: float) -> bool:
    try:
        await asyncio.wait_for(reader.read(), wait)  # read() returns at EOF
        return True
    except (asyncio.TimeoutError, ConnectionError):
        return False


async def _health(port: int, timeout: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(_open(port, b""), timeout)
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), timeout)
        writer.close()
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
    except (asyncio.TimeoutError, OSError):
        status = None
    return {"status": status, "ms": round(1000 * (time.perf_counter() - t0), 1)}


async def idle_connections(port: int, n: int, wait: float) -> dict[str, Any]:
    kinds = {
        "silent": b"",
        "half_request_line": b"POST /v1/tasks/dsprites_loc/pre",
        "stalled_body": (
            b"POST /v1/tasks/dsprites_loc/predict HTTP/1.1\r\nhost: x\r\n"
            b"content-type: image/png\r\ncontent-length: 1000\r\n\r\n0123456789"
        ),
    }
    opened: dict[str, list[Any]] = {}
    refused = 0
    for kind, first in kinds.items():
        opened[kind] = []
        for _ in range(n):
            try:
                opened[kind].append(await _open(port, first))
            except OSError:
                refused += 1
    await asyncio.sleep(1.0)
    health = await _health(port, timeout=10.0)
    closed = {}
    for kind, conns in opened.items():
        results = await asyncio.gather(*(_closed_by_server(r, wait) for r, _ in conns))
        closed[kind] = sum(results)
        for _, w in conns:
            w.close()
    after = await _health(port, timeout=10.0)
    return {
        "per_kind": n,
        "refused_at_connect": refused,
        "health_with_all_open": health,
        "closed_by_server_within_s": wait,
        "closed": closed,
        "health_after": after,
    }


async def _chunked_upload(port: int, size: int) -> int | None:
    """One chunked upload of ``size`` bytes, as fast as the socket takes it; the status answered."""
    try:
        reader, writer = await _open(
            port,
            b"POST /v1/tasks/dsprites_loc/predict HTTP/1.1\r\nhost: x\r\n"
            b"content-type: image/png\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        chunk = b"%x\r\n" % MIB + b"\0" * MIB + b"\r\n"
        try:
            for _ in range(size // MIB):
                writer.write(chunk)
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            pass  # the server answered and closed while we were still sending: the point
        data = await asyncio.wait_for(reader.read(4096), 60)
        writer.close()
        return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
    except (OSError, asyncio.TimeoutError):
        return None


async def rejected_bodies(port: int, m: int, size_mib: int, settle: float) -> dict[str, Any]:
    before = _memory()
    statuses: dict[str, int] = {}
    for start in range(0, m, 4):  # four at a time
        batch = await asyncio.gather(
            *(_chunked_upload(port, size_mib * MIB) for _ in range(min(4, m - start)))
        )
        for s in batch:
            statuses[str(s)] = statuses.get(str(s), 0) + 1
    just_after = _memory()
    await asyncio.sleep(settle)
    settled = _memory()
    return {
        "uploads": m,
        "mib_each": size_mib,
        "statuses": statuses,
        "memory_before": before,
        "memory_just_after": just_after,
        "memory_settled": settled,
        "settle_s": settle,
        "growth_settled_mib": {
            k: round(settled[k] - before[k], 1) for k in ("proxy_mib", "ingress_mib")
        },
    }


RAW_400S = {
    "garbage request line": b"\x00\x01garbage\r\n\r\n",
    "TLS handshake bytes": bytes.fromhex("16030100a5010000a10303") + b"\0" * 64,
    "unknown method": b"FROB / HTTP/1.1\r\nhost: x\r\n\r\n",
    "bad content-length": b"POST /v1/tasks/dsprites_loc/predict HTTP/1.1\r\nhost: x\r\n"
    b"content-length: abc\r\n\r\n",
}


async def uvicorn_400s(port: int) -> dict[str, Any]:
    out = {}
    for name, raw in RAW_400S.items():
        try:
            reader, writer = await _open(port, raw)
            data = await asyncio.wait_for(reader.read(), 10)
            writer.close()
        except (OSError, asyncio.TimeoutError) as exc:
            out[name] = {"error": type(exc).__name__}
            continue
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else None
        json_body = b"content-type: application/json" in head.lower()
        out[name] = {"status": status, "json": json_body, "body": body[:120].decode("latin-1")}
    return out


def run_setting(guarded: bool, args: argparse.Namespace, tasks: list[Any]) -> dict[str, Any]:
    from ray import serve

    from autopetl.serving.app import ServeOptions, build_app, start_serve
    from autopetl.serving.guard import GuardLimits
    from autopetl.serving.images import ImageLimits

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    guard = GuardLimits(
        max_body_bytes=8 * MIB, header_timeout_s=args.timeout, body_timeout_s=args.timeout
    )
    if guarded:
        start_serve("127.0.0.1", port, guard)
        options = ServeOptions(limits=ImageLimits(max_bytes=guard.max_body_bytes))
    else:  # as before issue 18: no guard, no timeouts, unbounded queues
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        options = ServeOptions(
            max_queued=-1, ingress_max_queued=-1, limits=ImageLimits(max_bytes=guard.max_body_bytes)
        )
    serve.run(build_app(tasks, options), name="hostile", route_prefix="/")
    import httpx

    r = httpx.post(
        f"http://127.0.0.1:{port}/v1/tasks/dsprites_loc/predict",
        content=_png(32),
        headers={"content-type": "image/png"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    wait = args.timeout + 5.0
    result = {
        "setting": "guard" if guarded else "no-guard",
        "idle": asyncio.run(idle_connections(port, args.idle, wait)),
        "rejected_bodies": asyncio.run(
            rejected_bodies(
                port, args.bodies if guarded else args.bodies_no_guard, args.big_mb, args.settle
            )
        ),
        "uvicorn_400s": asyncio.run(uvicorn_400s(port)),
    }
    serve.shutdown()
    return result


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| setting | health with 3N idle open | closed by server (silent / half line / stalled body) "
        "| proxy, ingress growth after rejected uploads (MiB) | uvicorn 400s as JSON |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        idle, rej, raw = r["idle"], r["rejected_bodies"], r["uvicorn_400s"]
        h = idle["health_with_all_open"]
        health = (
            f"{h['status']} in {h['ms']:.0f} ms" if h["status"] else f"no answer ({h['ms']:.0f} ms)"
        )
        closed = " / ".join(f"{v}/{idle['per_kind']}" for v in idle["closed"].values())
        growth = rej["growth_settled_mib"]
        n_json = sum(1 for v in raw.values() if v.get("json"))
        lines.append(
            f"| {r['setting']} | {health} | {closed} | {growth['proxy_mib']:+.0f}, "
            f"{growth['ingress_mib']:+.0f} ({rej['uploads']} x {rej['mib_each']} MiB) "
            f"| {n_json}/{len(raw)} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="N=300 idle per kind, M=20 uploads")
    p.add_argument("--idle", type=int, default=1000, help="connections of each idle kind")
    p.add_argument("--bodies", type=int, default=1000, help="oversized chunked uploads (guard)")
    p.add_argument(
        "--bodies-no-guard",
        type=int,
        default=52,
        help="uploads without the guard (about 12 MiB each stays resident there: keep it small)",
    )
    p.add_argument("--big-mb", type=int, default=16, help="MiB per upload (limit: 8 MiB)")
    p.add_argument("--settle", type=float, default=30.0, help="seconds before memory is re-read")
    p.add_argument("--timeout", type=float, default=5.0, help="the guard's header/body timeouts")
    p.add_argument("--settings", default="guard,no-guard")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: results/serve_hostile.json; --quick: results/quick/, git-ignored",
    )
    args = p.parse_args(argv)
    # A --quick run checks that it runs: it never writes over the committed full results.
    results = Path(__file__).resolve().parent / "results"
    args.out = args.out or results / ("quick" if args.quick else "") / "serve_hostile.json"
    if args.quick:
        args.idle, args.bodies, args.bodies_no_guard, args.settle = 300, 20, 20, 10.0
    if (
        not 1 <= args.idle <= 1500
        or not 1 <= max(args.bodies, args.bodies_no_guard) <= 2000
        or not 9 <= args.big_mb <= 64
    ):
        p.error("bounded: --idle 1..1500, --bodies 1..2000, --big-mb 9..64")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 3 * args.idle + 512)), hard))
    import ray

    from autopetl.backbones import SMOKE_BACKBONE

    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
        configure_logging=False,
    )  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tasks = _artifacts(Path(tmp), SMOKE_BACKBONE)
        for setting in args.settings.split(","):
            results.append(run_setting(setting == "guard", args, tasks))
            print(f"{setting}: done", flush=True)
    ray.shutdown()
    report = {
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible, {platform.platform()}",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
