"""benchmarks/perf.py, part 1 and 5: the physical limit (matmul peak, FLOPs, MFU) and a profile.

Everything here times one frozen-backbone training step exactly as ``autopetl.training.train``
runs it (normalise uint8 on the device, autocast, cross-entropy in fp32, zero_grad, backward,
AdamW step), so the achieved FLOP/s is the library's, not a hand-tuned kernel's.

On CPU by default; ``device="cuda"`` runs the same code on a GPU (``perf.py --device cuda``), where
every timing waits for the GPU's queue to drain (``torch.cuda.synchronize``) before it stops.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

from autopetl.tasks.data import normalize

aten = torch.ops.aten


def _register_cpu_sdpa_flops() -> None:
    """FlopCounterMode knows the CUDA attention kernels but not the CPU one timm ends up in."""
    forward = aten._scaled_dot_product_flash_attention_for_cpu
    backward = aten._scaled_dot_product_flash_attention_for_cpu_backward
    if forward in flop_counter.flop_registry:
        return

    @register_flop_formula(forward)
    def _fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    @register_flop_formula(backward)
    def _bwd(grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kw) -> int:
        return flop_counter.sdpa_backward_flop_count(
            grad_shape, query_shape, key_shape, value_shape
        )


def bf16_hardware() -> dict[str, Any]:
    """What the CPU offers for bf16: AVX512-BF16 dot products and/or AMX tiles."""
    info: dict[str, Any] = {"capability": torch.backends.cpu.get_cpu_capability()}
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, name, None)
        info[name.strip("_").removeprefix("is_")] = bool(fn()) if fn else None
    # What precision=auto asks: the units, and ATen using them (ATEN_CPU_CAPABILITY=avx2 holds it
    # to AVX2, as on a CPU without AVX-512, where bf16 runs 30x slower than fp32).
    from autopetl.precision import cpu_has_bf16_units

    info["has_bf16_units"] = cpu_has_bf16_units()
    return info


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; a CPU op has finished)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _time_call(
    fn: Callable[[], Any], *, min_seconds: float, min_reps: int, device: str = "cpu"
) -> list[float]:
    times: list[float] = []
    total = 0.0
    synchronize(device)
    while len(times) < min_reps or total < min_seconds:
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
    return times


def matmul_flops(
    shapes: list[tuple[int, int, int]],
    dtype: torch.dtype,
    *,
    min_seconds: float,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Dense ``torch.matmul`` FLOP/s for [m, k] @ [k, n] (2mkn FLOPs), best of the repeats."""
    rows = []
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device).to(dtype)
        b = torch.randn(k, n, device=device).to(dtype)
        for _ in range(2):
            torch.matmul(a, b)  # oneDNN primitive creation / cuBLAS heuristics, caches
        times = _time_call(
            lambda a=a, b=b: torch.matmul(a, b), min_seconds=min_seconds, min_reps=3, device=device
        )
        flops = 2.0 * m * k * n
        rows.append(
            {
                "shape": [m, k, n],
                "dtype": str(dtype).removeprefix("torch."),
                "gflops_best": flops / min(times) / 1e9,
                "gflops_median": flops / statistics.median(times) / 1e9,
                "reps": len(times),
            }
        )
    return rows


def model_gemm_shapes(
    model: torch.nn.Module, tokens: int, batch: int
) -> list[tuple[int, int, int]]:
    """The distinct [batch*tokens, in] @ [in, out] shapes of the model's linear layers."""
    shapes = []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.in_features > 64:
            shape = (batch * tokens, module.in_features, module.out_features)
            if shape not in shapes and module.out_features > 64:
                shapes.append(shape)
    return shapes


def autocast(precision: str, device_type: str = "cpu"):
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_step(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    precision: str,
    lr: float = 1e-3,
) -> tuple[Callable[[], torch.Tensor], torch.optim.Optimizer]:
    """One optimiser step of autopetl.training.train's inner loop, as a closure (and its optimiser)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    model.train()

    device_type = images.device.type

    def step() -> torch.Tensor:
        with autocast(precision, device_type):
            logits = model(normalize(images, mean, std))
            loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step, optimizer


def count_flops(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> dict[str, Any]:
    """FLOPs (not MACs: a multiply-add counts 2) of one forward and of one training step."""
    _register_cpu_sdpa_flops()
    model.train()
    x = normalize(images, mean, std)
    # Not under no_grad: FlopCounterMode's module tracker needs grad functions on the prompts.
    with FlopCounterMode(display=False) as fwd:
        model(x)
    with FlopCounterMode(display=False) as full:
        logits = model(x)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
    model.zero_grad(set_to_none=True)
    by_op = {
        str(k).removeprefix("aten."): int(v) for k, v in full.get_flop_counts()["Global"].items()
    }
    return {
        "forward_flops": int(fwd.get_total_flops()),
        "step_flops": int(full.get_total_flops()),
        "step_over_forward": full.get_total_flops() / max(1, fwd.get_total_flops()),
        "step_flops_by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
    }


def time_steps(
    step: Callable[[], Any], *, warmup: int, min_seconds: float, min_reps: int, device: str = "cpu"
):
    for _ in range(warmup):
        step()
    return _time_call(step, min_seconds=min_seconds, min_reps=min_reps, device=device)


# Self-CPU time of these ops is dense matrix work (GEMMs and the attention kernel).
_GEMM = ("mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "mkldnn", "onednn", "_convolution")
_ATTN = ("scaled_dot_product", "flash_attention")
_COPY = ("copy_", "_to_copy", "to", "cat", "clone", "contiguous", "slice", "expand", "index")
_OPTIM = ("_foreach", "adam", "lerp", "addcdiv", "addcmul", "sqrt", "zero_")


def _category(name: str) -> str:
    op = name.removeprefix("aten::").lower()
    if any(s in op for s in _ATTN):
        return "attention kernel"
    if op in ("mm", "addmm", "bmm", "baddbmm") or any(op.startswith(s) for s in _GEMM[5:]):
        return "GEMM"
    if op.startswith("autograd::") or op.endswith("backward0"):
        return "autograd engine"
    if op.startswith("optimizer.") or any(op.startswith(s) for s in _OPTIM):
        return "optimizer"
    if op in _COPY or any(op.startswith(s) for s in ("_to_copy", "copy", "cat")):
        return "copies / casts / cat"
    return "element-wise, norms, other"


def profile_step(step: Callable[[], Any], *, warmup: int, row_limit: int = 25) -> dict[str, Any]:
    """torch.profiler over one step: the top ops by self CPU time and time per category."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    averages = prof.key_averages()
    table = averages.table(sort_by="self_cpu_time_total", row_limit=row_limit)
    total = sum(e.self_cpu_time_total for e in averages) or 1.0
    categories: dict[str, float] = {}
    for e in averages:
        cat = _category(e.key)
        categories[cat] = categories.get(cat, 0.0) + e.self_cpu_time_total
    top = sorted(averages, key=lambda e: -e.self_cpu_time_total)[:row_limit]
    return {
        "table": table,
        "self_cpu_ms_total": total / 1e3,
        "share_by_category": {
            k: v / total for k, v in sorted(categories.items(), key=lambda kv: -kv[1])
        },
        "top_ops": [
            {
                "op": e.key,
                "self_cpu_ms": e.self_cpu_time_total / 1e3,
                "share": e.self_cpu_time_total / total,
                "calls": e.count,
                "category": _category(e.key),
            }
            for e in top
        ],
    }


def _concurrency_worker(spec: dict[str, Any], threads: int, barrier: Any, results: Any) -> None:
    """One trial-like process: VPT-deep steps at ``threads`` torch threads for a fixed time."""
    torch.set_num_threads(threads)
    from autopetl.backbones import BackboneSpec, build_backbone, input_stats
    from autopetl.methods import build_method
    from autopetl.pipeline import attach, load_task_data
    from autopetl.tasks import get_task

    device = spec.get("device", "cpu")
    task = get_task("vtab/dsprites_loc")
    backbone = build_backbone(
        BackboneSpec(spec["backbone"], spec["weights"], spec["img_size"]), task.num_classes
    )
    data = load_task_data(task, spec["img_size"], train_limit=spec["batch_size"])
    model = attach(backbone, build_method("vpt", {"prompt_length": 10, "deep": True}), seed=0)
    step, _ = make_step(
        model.to(device),
        data.train.images.to(device),
        data.train.labels.to(device),
        *input_stats(backbone),
        spec["precision"],
    )
    for _ in range(2):
        step()
    synchronize(device)
    barrier.wait()  # every process times the same window
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < spec["seconds"]:
        step()
        n += 1
    synchronize(device)
    results.put(n * spec["batch_size"] / (time.perf_counter() - t0))


def concurrent_throughput(spec: dict[str, Any], processes: int, threads: int) -> list[float]:
    """Training images/s of each of ``processes`` trial processes running at once."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(target=_concurrency_worker, args=(spec, threads, barrier, results))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    rates = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return rates
