"""Performance of autopetl against the physical limit and a naive reference, side by side.

One run, one machine, every figure a ratio of two things measured in that run (issue 11):

1. ``mfu``     dense matmul FLOP/s (fp32, bf16) vs the FLOP/s of a VPT-deep training step
               (FLOPs counted by FlopCounterMode): model FLOPs utilisation, step/forward FLOPs.
2. ``naive``   a naive research-code training loop (PNG decode + transforms every epoch, fp32,
               backbone rebuilt per trial) vs autopetl's path on the same small search.
3. ``search``  Ray Tune + Optuna + store overhead per trial over smoke searches.
4. ``memory``  peak tensor memory of one training step, per registered method.
5. ``profile`` torch.profiler over one VPT-deep step: top ops by self CPU time.
6. ``concurrency`` N trial processes x 1 thread vs 1 trial x N threads (the CPU's version of
               several trials sharing one GPU).

    python benchmarks/perf.py --quick     # a few minutes on 2 CPU cores
    python benchmarks/perf.py             # train800/val200, 3 trials, 64-trial search
    python benchmarks/perf.py --sections mfu,profile

Writes benchmarks/results/perf.json and perf.md (perf_quick.* with --quick) and the profile to
perf_profile.txt (perf_quick_profile.txt). Uses the DINOv2 ViT-S/14 in ../shared/weights at
112 px; with ``--weights none`` (or when that file is absent) the backbone is random-init and the
``naive`` section, which needs a weights file to rebuild from, is skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_WEIGHTS = REPO.parent / "shared" / "weights" / "vit_small_patch14_dinov2.safetensors"
SECTIONS = ("mfu", "profile", "naive", "search", "memory", "concurrency")
# The small "search" both sides run: VPT-deep with three (lr, prompt length) configurations.
NAIVE_TRIALS = [
    {"lr": 2e-3, "prompt_length": 10},
    {"lr": 5e-3, "prompt_length": 5},
    {"lr": 1e-3, "prompt_length": 20},
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="a file, or none")
    parser.add_argument("--backbone", default="vit_small_patch14_dinov2")
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--prompt-length", type=int, default=10, help="VPT-deep in mfu/profile")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where the mfu and concurrency sections run (cuda: those two sections only)",
    )
    parser.add_argument(
        "--trials-per-gpu",
        type=int,
        default=2,
        help="concurrency on cuda: this many trial processes share the GPU, against one",
    )
    parser.add_argument("--trials", type=int, default=0, help="naive section (0: 3, quick 2)")
    parser.add_argument("--epochs", type=int, default=1, help="naive section epochs per trial")
    parser.add_argument("--train-images", type=int, default=0, help="0: 800, quick 96")
    parser.add_argument("--val-images", type=int, default=0, help="0: 200, quick 64")
    parser.add_argument("--search-trials", default="", help="smoke search sizes (default 16,64)")
    parser.add_argument(
        "--naive-repeats",
        type=int,
        default=1,
        help="naive: run the naive/autopetl pair this many times, alternating which goes first",
    )
    parser.add_argument(
        "--with-compile",
        action="store_true",
        help="mfu: also time the bf16 explicit-attention step under torch.compile (compiles ~40 s)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="mfu: scale every timing's minimum duration (below 1: faster, noisier figures)",
    )
    parser.add_argument(
        "--warm-wait",
        type=float,
        default=10.0,
        help="search: seconds the warm-worker ablation waits for its prestarted workers",
    )
    parser.add_argument(
        "--warm-attempts",
        type=int,
        default=3,
        help="search: sessions the ablation starts until one lands on warm workers",
    )
    parser.add_argument(
        "--matmul-sizes",
        default="",
        help="square GEMM sides for the matmul peak, e.g. 256,512 (default: 1024,2048 quick; "
        "512,1024,2048 full; larger on a GPU)",
    )
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args()


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # What the kernels run with: ATEN_CPU_CAPABILITY can hold ATen below the CPU's units, and
        # precision=auto follows (autopetl.precision.cpu_has_bf16_units).
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
    }
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(
            (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in out.splitlines())
        )
        for key in (
            "Model name",
            "CPU family",
            "Model",
            "Core(s) per socket",
            "Thread(s) per core",
        ):
            info[key.lower().replace(" ", "_").replace("(s)", "s")] = fields.get(key)
        flags = fields.get("Flags", "").split()
        info["bf16_flags"] = [f for f in flags if "bf16" in f or "amx" in f]
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name(0) if device == "cuda" else "cpu"


# --- sections -----------------------------------------------------------------------------------


def section_mfu(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from _perf_compute import (
        autocast,
        count_flops,
        make_step,
        matmul_flops,
        model_gemm_shapes,
        time_steps,
    )

    from autopetl.tasks.data import normalize

    model, images, labels, mean, std = ctx["vpt_model"](), ctx["images"], ctx["labels"], *ctx["ms"]
    tokens = ctx["tokens"]
    flops = count_flops(model, images, labels, mean, std)
    print(
        f"  FLOPs: forward {flops['forward_flops'] / 1e9:.1f} G, step "
        f"{flops['step_flops'] / 1e9:.1f} G (x{flops['step_over_forward']:.2f})",
        flush=True,
    )
    device = args.device
    sizes: tuple[int, ...] = (1024, 2048) if args.quick else (512, 1024, 2048)
    if device == "cuda":  # a GPU reaches its peak only on large matrices
        sizes = (4096, 8192) if args.quick else (2048, 4096, 8192)
    if args.matmul_sizes:
        sizes = tuple(int(n) for n in args.matmul_sizes.split(","))
    gemms = model_gemm_shapes(model.backbone.blocks[0], tokens, args.batch_size)
    seconds = (0.5 if args.quick else 1.5) * args.time_scale
    peaks: dict[str, Any] = {}
    for dtype in (torch.float32, torch.bfloat16):
        shown = sizes
        if dtype == torch.bfloat16 and device != "cuda" and not ctx["bf16"]["has_bf16_units"]:
            # Without bf16 units a 2048^3 bf16 GEMM takes 40 s (AVX2): its peak is a 512^3's.
            shown = tuple(n for n in sizes if n <= 512) or (512,)
        squares = [(n, n, n) for n in shown]
        rows = matmul_flops(squares + gemms, dtype, min_seconds=seconds, device=device)
        name = str(dtype).removeprefix("torch.")
        peaks[name] = {
            "rows": rows,
            "peak_gflops": max(r["gflops_best"] for r in rows),
            "square_peak_gflops": max(r["gflops_best"] for r in rows[: len(squares)]),
            "model_gemm_gflops": max(r["gflops_best"] for r in rows[len(squares) :]),
        }
        print(
            f"  matmul {name}: peak {peaks[name]['peak_gflops']:.0f} GFLOP/s "
            f"(model-shaped GEMMs {peaks[name]['model_gemm_gflops']:.0f})",
            flush=True,
        )

    def timed(fn: Any, *, warmup: int, quick_s: float, full_s: float) -> list[float]:
        """Repeated timings of ``fn`` for at least this long (--quick, full), x --time-scale."""
        seconds = (quick_s if args.quick else full_s) * args.time_scale
        return time_steps(fn, warmup=warmup, min_seconds=seconds, min_reps=3, device=device)

    steps: dict[str, Any] = {}
    for precision, dtype in (("fp32", "float32"), ("bf16", "bfloat16")):
        step, _ = make_step(model, images, labels, mean, std, precision)
        times = timed(step, warmup=2, quick_s=4, full_s=12)
        med = statistics.median(times)
        model.eval()

        def forward(precision: str = precision) -> None:
            with torch.no_grad(), autocast(precision, images.device.type):
                model(normalize(images, mean, std))

        ftimes = timed(forward, warmup=1, quick_s=2, full_s=5)
        fmed = statistics.median(ftimes)
        peak = peaks[dtype]["peak_gflops"] * 1e9
        steps[precision] = {
            "step_s_median": med,
            "step_s_best": min(times),
            "steps": len(times),
            "train_images_per_s": args.batch_size / med,
            "achieved_gflops": flops["step_flops"] / med / 1e9,
            "mfu": flops["step_flops"] / med / peak,
            "mfu_best_step": flops["step_flops"] / min(times) / peak,
            "mfu_vs_fp32_peak": flops["step_flops"] / med / (peaks["float32"]["peak_gflops"] * 1e9),
            "forward_s_median": fmed,
            "forward_images_per_s": args.batch_size / fmed,
            "forward_mfu": flops["forward_flops"] / fmed / peak,
        }
        s = steps[precision]
        print(
            f"  {precision} step: {s['train_images_per_s']:.1f} img/s, "
            f"{s['achieved_gflops']:.0f} GFLOP/s, MFU {s['mfu']:.1%}; forward "
            f"{s['forward_images_per_s']:.1f} img/s (MFU {s['forward_mfu']:.1%})",
            flush=True,
        )

    # The profile shows bf16 SDPA (the CPU flash kernel) slow, its backward above all: the same
    # step with timm's explicit attention (matmul + softmax, bf16 GEMMs under autocast), which
    # autopetl.precision now picks for bf16 on CPU; and two ablations kept out of the library:
    # explicit attention in fp32, and a bf16 copy of the frozen Linear weights (would it save
    # autocast's recasts?).
    def bf16_frozen_linears(model: torch.nn.Module) -> None:
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and not any(p.requires_grad for p in m.parameters()):
                m.weight.data = m.weight.data.to(torch.bfloat16)
                if m.bias is not None:
                    m.bias.data = m.bias.data.to(torch.bfloat16)

    variant_specs = [("fp32_unfused_attention", "fp32", None)]
    if device == "cuda" or ctx["bf16"]["has_bf16_units"]:
        variant_specs = [
            ("bf16_unfused_attention", "bf16", None),
            *variant_specs,
            ("bf16_unfused_attention_bf16_frozen_weights", "bf16", bf16_frozen_linears),
        ]
        if args.with_compile:
            variant_specs.append(("bf16_unfused_attention_compiled", "bf16", "compile"))
    variants = {}
    for name, precision, prepare in variant_specs:
        model = ctx["vpt_model"]()
        for block in model.backbone.blocks:
            block.attn.fused_attn = False
        compile_s = None
        if prepare == "compile":
            # torch.compile (inductor) of the whole model: the first step compiles it.
            model = torch.compile(model)  # type: ignore[assignment]
        elif prepare is not None:
            prepare(model)
        step, _ = make_step(model, images, labels, mean, std, precision)
        if prepare == "compile":
            t0 = time.perf_counter()
            step()
            compile_s = time.perf_counter() - t0
        times = timed(step, warmup=2, quick_s=4, full_s=12)
        med = statistics.median(times)
        peak_name = "bfloat16" if precision == "bf16" else "float32"
        variants[name] = {
            "step_s_median": med,
            "train_images_per_s": args.batch_size / med,
            "achieved_gflops": flops["step_flops"] / med / 1e9,
            "mfu": flops["step_flops"] / med / (peaks[peak_name]["peak_gflops"] * 1e9),
            "over_fused": steps[precision]["step_s_median"] / med,
            **({"first_step_s": compile_s} if compile_s is not None else {}),
        }
        v = variants[name]
        print(
            f"  {name}: {v['train_images_per_s']:.1f} img/s, "
            f"MFU {v['mfu']:.1%} ({v['over_fused']:.2f}x the fused {precision} step)",
            flush=True,
        )
    return {
        "device": _device_name(device),
        "model": f"{args.backbone} VPT-deep p={args.prompt_length}, {args.img_size} px, "
        f"batch {args.batch_size}, {tokens} tokens",
        "flops": flops,
        "matmul": peaks,
        "steps": steps,
        "variants": variants,
        "bf16_over_fp32_step": steps["bf16"]["train_images_per_s"]
        / steps["fp32"]["train_images_per_s"],
        "bf16_over_fp32_matmul_peak": peaks["bfloat16"]["peak_gflops"]
        / peaks["float32"]["peak_gflops"],
    }


PROFILE_VARIANTS = ("fp32", "bf16", "bf16_explicit_attention")


def section_profile(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from _perf_compute import make_step, profile_step

    from autopetl.precision import attention_kernel

    out: dict[str, Any] = {}
    texts = []
    # fp32 and bf16 with torch's fused attention (what the profile was first taken on), then what
    # training.train runs for bf16 on CPU since: timm's explicit attention (autopetl.precision).
    for variant in PROFILE_VARIANTS:
        precision = variant.split("_")[0]
        model = ctx["vpt_model"]()
        explicit = variant.endswith("explicit_attention")
        device = torch.device("cpu")
        with attention_kernel(model, device, "bf16") if explicit else contextlib.nullcontext():
            step, _ = make_step(model, ctx["images"], ctx["labels"], *ctx["ms"], precision)
            prof = profile_step(step, warmup=2)
        texts.append(
            f"=== one VPT-deep training step, {variant}, {args.backbone} at {args.img_size} px, "
            f"batch {args.batch_size}, {torch.get_num_threads()} threads ===\n"
            f"self CPU total {prof['self_cpu_ms_total']:.0f} ms; share by category: "
            + ", ".join(f"{k} {v:.1%}" for k, v in prof["share_by_category"].items())
            + "\n\n"
            + prof["table"]
        )
        prof.pop("table")
        out[variant] = prof
        print(
            f"  {variant}: "
            + ", ".join(f"{k} {v:.0%}" for k, v in prof["share_by_category"].items()),
            flush=True,
        )
    path = args.out.with_name(args.out.stem + "_profile.txt")
    path.write_text("\n\n".join(texts))
    out["file"] = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
    return out


def section_naive(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from _perf_naive import autopetl_search, input_agreement, naive_search, png_split

    n_trials = args.trials or (2 if args.quick else 3)
    trials = NAIVE_TRIALS[:n_trials]
    n_train = args.train_images or (96 if args.quick else 800)
    n_val = args.val_images or (64 if args.quick else 200)
    train_png = png_split("train800", n_train)
    val_png = png_split("val200", n_val)
    common = dict(
        model_name=args.backbone,
        weights=Path(args.weights),
        img_size=args.img_size,
        train_png=train_png,
        val_png=val_png,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=0,
    )
    precision = "bf16" if ctx["bf16"]["has_bf16_units"] else "fp32"
    runs: dict[str, Any] = {}
    load_at: dict[str, list[float]] = {}
    names = ["naive", f"autopetl_{precision}"] + (["autopetl_fp32"] if precision != "fp32" else [])
    for name in names:
        load_at[name] = load()
        if name == "naive":
            runs[name] = naive_search(trials, mean=ctx["ms"][0], std=ctx["ms"][1], **common)
        else:
            runs[name] = autopetl_search(trials, precision=name.split("_")[1], **common)
        r = runs[name]
        per_trial = len(train_png[1]) * args.epochs
        train_s = sum(per_trial / t["train_images_per_s"] for t in r["trials"])
        r["train_images_per_s"] = per_trial * len(r["trials"]) / train_s
        print(
            f"  {name:14s} {r['total_s']:6.1f} s end to end, {r['train_images_per_s']:5.1f} "
            f"train img/s, val acc " + " ".join(f"{t['val_acc']:.1%}" for t in r["trials"]),
            flush=True,
        )
    # More rounds of the main pair, alternating which side goes first (A B, B A, ...), so that a
    # drift in the machine's speed during the section weighs on both sides alike.
    main = f"autopetl_{precision}"

    def timing(r: dict[str, Any]) -> dict[str, float]:
        per_trial = len(train_png[1]) * args.epochs
        train_s = sum(per_trial / t["train_images_per_s"] for t in r["trials"])
        return {"total_s": r["total_s"], "train_s": train_s, "images": per_trial * len(trials)}

    rounds = [{"naive": timing(runs["naive"]), main: timing(runs[main])}]
    for i in range(1, args.naive_repeats):
        order = [main, "naive"] if i % 2 else ["naive", main]
        rounds.append({})
        for name in order:
            r = (
                naive_search(trials, mean=ctx["ms"][0], std=ctx["ms"][1], **common)
                if name == "naive"
                else autopetl_search(trials, precision=precision, **common)
            )
            rounds[-1][name] = timing(r)
        print(
            f"  round {i + 1} ({' then '.join(order)}): end to end "
            f"{rounds[-1]['naive']['total_s'] / rounds[-1][main]['total_s']:.2f}x",
            flush=True,
        )

    def pooled(side: str, key: str) -> float:
        return sum(r[side][key] for r in rounds)

    alternated = {
        "rounds": rounds,
        "end_to_end_x": pooled("naive", "total_s") / pooled(main, "total_s"),
        "train_throughput_x": (pooled(main, "images") / pooled(main, "train_s"))
        / (pooled("naive", "images") / pooled("naive", "train_s")),
        "per_round_end_to_end_x": [r["naive"]["total_s"] / r[main]["total_s"] for r in rounds],
    }
    agreement = input_agreement(
        val_png, runs[f"autopetl_{precision}"].pop("val_data"), args.img_size
    )
    for r in runs.values():
        r.pop("train_data", None)
        r.pop("val_data", None)
    naive = runs["naive"]
    ratios = {}
    for name, r in runs.items():
        if name == "naive":
            continue
        ratios[name] = {
            "train_throughput_x": r["train_images_per_s"] / naive["train_images_per_s"],
            "end_to_end_x": naive["total_s"] / r["total_s"],
            "max_abs_val_acc_diff": max(
                abs(a["val_acc"] - b["val_acc"])
                for a, b in zip(r["trials"], naive["trials"], strict=True)
            ),
            "max_abs_train_loss_diff": max(
                abs(a["train_loss"] - b["train_loss"])
                for a, b in zip(r["trials"], naive["trials"], strict=True)
            ),
        }
    return {
        "task": "vtab/dsprites_loc (PNG-encoded 64 px frames)",
        "train_images": n_train,
        "val_images": n_val,
        "trials": trials,
        "epochs": args.epochs,
        "method": "VPT-deep",
        "autopetl_precision": precision,
        "runs": runs,
        "ratios": ratios,
        "alternated": alternated,
        "input_agreement": agreement,
        "load_at_start": load_at,
    }


def section_search(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from _perf_search import optuna_storage_cost, search_overhead, warm_worker_search

    # 64 trials in both: the target is the average over a 64-trial smoke search.
    sizes = [int(x) for x in (args.search_trials or "16,64").split(",")]
    out = search_overhead(sizes, cpus=os.cpu_count() or 1)
    out["optuna_storage"] = optuna_storage_cost()
    # The ablation that isolates the fixed cost: the largest search with warm workers, then cold.
    out["warm_workers"] = warm_worker_search(
        max(sizes), cpus=os.cpu_count() or 1, wait_s=args.warm_wait, attempts=args.warm_attempts
    )
    return out


def section_memory(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from _perf_memory import method_memory
    from methods_dsprites import CLS_CONFIG, CONFIGS

    from autopetl.methods import METHODS

    configs = [*CONFIGS, CLS_CONFIG]
    precisions = ["bf16"] if args.quick else ["bf16", "fp32"]
    if not ctx["bf16"]["has_bf16_units"]:
        precisions = ["fp32"]
    rows = []
    for precision in precisions:
        rows += method_memory(
            ctx["backbone"], configs, ctx["images"], ctx["labels"], *ctx["ms"], precision
        )
    return {
        "batch_size": args.batch_size,
        "methods_registered": sorted(METHODS),
        "methods_measured": sorted({c[1] for c in configs}),
        "rows": rows,
    }


def section_concurrency(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Several trials sharing one GPU (``--device cuda``: N processes against one), or the CPU's
    version of it: N processes x 1 thread against 1 x N threads."""
    from _perf_compute import concurrent_throughput

    cuda = args.device == "cuda"
    cpus = args.trials_per_gpu if cuda else args.threads
    precision = "bf16" if cuda or ctx["bf16"]["has_bf16_units"] else "fp32"
    spec = {
        "backbone": args.backbone,
        "weights": args.weights,
        "img_size": args.img_size,
        "batch_size": args.batch_size,
        "precision": precision,
        "seconds": 10 if args.quick else 25,
        "device": args.device,
    }
    one = concurrent_throughput(spec, 1, args.threads if cuda else cpus)
    many = concurrent_throughput(spec, cpus, max(1, args.threads // cpus) if cuda else 1)
    out = {
        "device": _device_name(args.device),
        "precision": precision,
        "model": f"{args.backbone} VPT-deep p=10, {args.img_size} px, batch {args.batch_size}",
        "one_trial_images_per_s": sum(one),
        "trials": cpus,
        "per_trial_images_per_s": many,
        "concurrent_images_per_s": sum(many),
        "gain_x": sum(many) / sum(one),
    }
    print(
        f"  1 trial x {cpus} threads {sum(one):.1f} img/s; {cpus} trials x 1 thread "
        f"{sum(many):.1f} img/s in all ({out['gain_x']:.2f}x)",
        flush=True,
    )
    return out


# --- report -------------------------------------------------------------------------------------


def figures(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, what it is a ratio of) rows for the headline table."""
    rows: list[tuple[str, str, str]] = []
    s = report["sections"]
    if "mfu" in s:
        m = s["mfu"]
        rows += [
            (
                "step FLOPs / forward FLOPs",
                f"{m['flops']['step_over_forward']:.2f}x",
                f"{m['flops']['step_flops'] / 1e9:.1f} / {m['flops']['forward_flops'] / 1e9:.1f} "
                "GFLOP (FlopCounterMode)",
            ),
            (
                "bf16 / fp32 matmul peak",
                f"{m['bf16_over_fp32_matmul_peak']:.2f}x",
                f"{m['matmul']['bfloat16']['peak_gflops']:.0f} / "
                f"{m['matmul']['float32']['peak_gflops']:.0f} GFLOP/s",
            ),
        ]
        for p in ("fp32", "bf16"):
            st = m["steps"][p]
            peak = m["matmul"]["float32" if p == "fp32" else "bfloat16"]["peak_gflops"]
            rows.append(
                (
                    f"MFU, VPT-deep step, {p}",
                    f"{st['mfu']:.1%}",
                    f"{st['achieved_gflops']:.0f} GFLOP/s achieved / {peak:.0f} peak "
                    f"({st['train_images_per_s']:.1f} img/s)",
                )
            )
        for name, v in m.get("variants", {}).items():
            rows.append(
                (
                    f"{name} / fused {name.split('_')[0]} step",
                    f"{v['over_fused']:.2f}x",
                    f"{v['train_images_per_s']:.1f} img/s, MFU {v['mfu']:.1%} "
                    "(timm fused_attn=False: explicit matmul + softmax)",
                )
            )
        rows.append(
            (
                "bf16 / fp32 training step",
                f"{m['bf16_over_fp32_step']:.2f}x",
                f"{m['steps']['bf16']['train_images_per_s']:.1f} / "
                f"{m['steps']['fp32']['train_images_per_s']:.1f} img/s",
            )
        )
        explicit = m["variants"].get("bf16_unfused_attention")
        if explicit is not None:
            rows.append(
                (
                    "autopetl's bf16 step (explicit attention) / fp32 step",
                    f"{explicit['train_images_per_s'] / m['steps']['fp32']['train_images_per_s']:.2f}x",
                    f"{explicit['train_images_per_s']:.1f} / "
                    f"{m['steps']['fp32']['train_images_per_s']:.1f} img/s: what precision=auto "
                    "gives on this CPU",
                )
            )
    if "naive" in s:
        n = s["naive"]
        for name, r in n["ratios"].items():
            run = n["runs"][name]
            rows += [
                (
                    f"training throughput, {name} / naive",
                    f"{r['train_throughput_x']:.2f}x",
                    f"{run['train_images_per_s']:.1f} / "
                    f"{n['runs']['naive']['train_images_per_s']:.1f} img/s",
                ),
                (
                    f"end-to-end {len(n['trials'])}-trial search, naive / {name}",
                    f"{r['end_to_end_x']:.2f}x",
                    f"{n['runs']['naive']['total_s']:.1f} / {run['total_s']:.1f} s; "
                    f"largest val acc difference {r['max_abs_val_acc_diff']:.1%}, train loss "
                    f"{r['max_abs_train_loss_diff']:.3f}",
                ),
            ]
        alt = n.get("alternated")
        if alt is not None and len(alt["rounds"]) > 1:
            per_round = ", ".join(f"{x:.2f}x" for x in alt["per_round_end_to_end_x"])
            rows += [
                (
                    f"training throughput, autopetl / naive, {len(alt['rounds'])} alternated rounds",
                    f"{alt['train_throughput_x']:.2f}x",
                    "pooled train seconds of every round",
                ),
                (
                    f"end-to-end, naive / autopetl, {len(alt['rounds'])} alternated rounds",
                    f"{alt['end_to_end_x']:.2f}x",
                    f"pooled wall seconds; per round {per_round}",
                ),
            ]
    if "search" in s:
        se = s["search"]
        for run in se["runs"]:
            rows.append(
                (
                    f"search overhead per trial ({run['trials']} smoke trials)",
                    f"{run['overhead_per_trial_s']:.3f} s",
                    f"({run['wall_s']:.1f} s x {run['slots']} slots - {run['sum_train_s']:.1f} s "
                    f"training) / {run['trials']}; target {se['target_s']} s",
                )
            )
            rows.append(
                (
                    f"... of which fixed per search / between trials ({run['trials']} trials)",
                    f"{run['fixed_s']:.1f} s / {run['steady_overhead_per_trial_s']:.3f} s",
                    f"wall - trial phase ({run['trial_phase_s']:.1f} s) / (phase x "
                    f"{run['slots']} - training) / {run['trials']}",
                )
            )
        if "warm_workers" in se:
            w = se["warm_workers"]
            warm, cold = w["warm"], w["cold"]
            rows.append(
                (
                    f"search overhead per trial, workers warm / cold ({warm['trials']} trials, "
                    "one session; an ablation)",
                    f"{warm['overhead_per_trial_s']:.3f} / {cold['overhead_per_trial_s']:.3f} s",
                    f"{w.get('sessions', 1)} warm session(s) started; "
                    f"warm: {warm['warm_workers']} of {warm['workers_used']} workers ready "
                    f"{-warm['first_worker_ready_after_start_s']:.1f} s before the search; cold: "
                    f"first worker ready {cold['first_worker_ready_after_start_s']:.1f} s after "
                    f"its start, {cold['workers_used']} worker(s) ran trials",
                )
            )
        if "optuna_storage" in se:
            o = se["optuna_storage"]
            rows.append(
                (
                    "Optuna per trial, RDBStorage / DriverStudyStorage (SQLite)",
                    f"{o['rdb_over_driver_storage']:.2f}x",
                    f"{o['rdb_sqlite_ms_per_trial']:.1f} / "
                    f"{o['driver_storage_sqlite_ms_per_trial']:.1f} ms (in memory "
                    f"{o['in_memory_ms_per_trial']:.1f} ms); ask + suggest + tell, "
                    f"{o['trials']} trials",
                )
            )
    if "concurrency" in s:
        c = s["concurrency"]
        rows.append(
            (
                f"{c['trials']} concurrent 1-thread trials / 1 trial at {c['trials']} threads",
                f"{c['gain_x']:.2f}x",
                f"{c['concurrent_images_per_s']:.1f} / {c['one_trial_images_per_s']:.1f} training "
                f"img/s in all ({c['precision']}, VPT-deep)",
            )
        )
    if "memory" in s:
        rows_m = s["memory"]["rows"]
        for p in sorted({r["precision"] for r in rows_m}):
            sel = [r for r in rows_m if r["precision"] == p]
            lo = min(sel, key=lambda r: r["peak_total_mib"])
            hi = max(sel, key=lambda r: r["peak_total_mib"])
            rows.append(
                (
                    f"peak step memory, max / min method ({p})",
                    f"{hi['peak_total_mib'] / lo['peak_total_mib']:.2f}x",
                    f"{hi['config']} {hi['peak_total_mib']:.0f} MiB / {lo['config']} "
                    f"{lo['peak_total_mib']:.0f} MiB",
                )
            )
    return rows


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# autopetl performance ({'quick' if report['quick'] else 'full'} run)",
        "",
        f"{m.get('model_name')} (family {m.get('cpu_family')}, model {m.get('model')}), "
        f"{m['cpus']} CPUs, {m['torch_threads']} torch threads, bf16 units: "
        f"{report['bf16']['has_bf16_units']} ({', '.join(m.get('bf16_flags', []))}; ATen "
        f"{m.get('aten_cpu_capability', '?')}, oneDNN ISA {m.get('onednn_max_cpu_isa', '?')}); "
        f"torch {m['torch']}; load average {report['load_start']} at start, "
        f"{report['load_end']} at end; {report['when']} ({report['seconds']:.0f} s); "
        f"device: {report.get('device', 'cpu')}.",
        "",
        f"Command: `{report['command']}`",
        "",
        "| figure | value | ratio of |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in figures(report)]
    for name, error in report.get("errors", {}).items():
        lines += ["", f"Section {name} failed: {error}"]
    s = report["sections"]
    if "mfu" in s:
        lines += ["", f"## MFU: {s['mfu']['model']}", ""]
        lines += [
            "| dtype | shape m,k,n | GFLOP/s best | median |",
            "| --- | --- | --- | --- |",
        ]
        for dtype, peak in s["mfu"]["matmul"].items():
            for r in peak["rows"]:
                lines.append(
                    f"| {dtype} | {','.join(map(str, r['shape']))} | {r['gflops_best']:.0f} "
                    f"| {r['gflops_median']:.0f} |"
                )
        lines += [
            "",
            "| precision | train img/s | GFLOP/s | MFU (median step) | MFU (best step) | "
            "forward img/s | forward MFU |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for p, st in s["mfu"]["steps"].items():
            lines.append(
                f"| {p} | {st['train_images_per_s']:.1f} | {st['achieved_gflops']:.0f} | "
                f"{st['mfu']:.1%} | {st['mfu_best_step']:.1%} | {st['forward_images_per_s']:.1f} "
                f"| {st['forward_mfu']:.1%} |"
            )
        by_op = s["mfu"]["flops"]["step_flops_by_op"]
        total = sum(by_op.values()) or 1
        lines += [
            "",
            "Step FLOPs by op: " + ", ".join(f"{k} {v / total:.1%}" for k, v in by_op.items()),
        ]
    if "profile" in s:
        lines += ["", f"## Profile of one VPT-deep step ({s['profile']['file']})", ""]
        for p in PROFILE_VARIANTS:
            pr = s["profile"].get(p)
            if pr is None:
                continue
            lines.append(
                f"- {p}: {pr['self_cpu_ms_total']:.0f} ms self CPU; "
                + ", ".join(f"{k} {v:.1%}" for k, v in pr["share_by_category"].items())
                + "; top: "
                + ", ".join(f"{o['op']} {o['share']:.1%}" for o in pr["top_ops"][:6])
            )
    if "naive" in s:
        n = s["naive"]
        lines += [
            "",
            f"## Naive reference vs autopetl: {len(n['trials'])} VPT-deep trials x {n['epochs']} "
            f"epoch, {n['train_images']} train / {n['val_images']} val images",
            "",
            "| run | trial (lr, p) | backbone build s | train img/s | train loss | val acc | wall s |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, r in n["runs"].items():
            for i, t in enumerate(r["trials"]):
                # autopetl builds the backbone once, before its first trial.
                build = t.get("backbone_build_s", r.get("backbone_build_s", 0.0) if i == 0 else 0.0)
                lines.append(
                    f"| {name} | {t['lr']:g}, {t['prompt_length']} | {build:.2f} | "
                    f"{t['train_images_per_s']:.1f} | {t['train_loss']:.3f} | {t['val_acc']:.1%} | "
                    f"{t['wall_s']:.1f} |"
                )
            extra = f", data prep {r['data_prep_s']:.2f} s" if "data_prep_s" in r else ""
            lines.append(
                f"| {name} total | | | {r['train_images_per_s']:.1f} | | | {r['total_s']:.1f}{extra} |"
            )
        a = n["input_agreement"]
        lines += [
            "",
            f"Inputs: naive PIL resize vs autopetl's cached uint8 on {a['images']} val images: "
            f"max |diff| {a['max_abs_diff_levels']:.0f} levels, mean {a['mean_abs_diff_levels']:.3f}.",
        ]
    if "search" in s:
        se = s["search"]
        lines += [
            "",
            f"## Search overhead: {se['backbone']}, {se['space']}, {se['train_images']} train "
            f"images, {se['cpus']} CPUs; ray.init {se['ray_init_s']:.1f} s (not counted)",
            "",
            "| search | trials | wall s | slots | sum of train s | overhead s/trial "
            "| fixed s (wall - trial phase) | between trials s/trial "
            "| recorded start-to-finish - train, s/trial | workers (warm) "
            "| first worker ready after start, s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        labelled = [(f"session 1, search {i + 1}", r) for i, r in enumerate(se["runs"])]
        if "warm_workers" in se:
            w = se["warm_workers"]
            labelled += [
                (f"session 2 (preloaded, after {w['wait_s']:.0f} s), warm", w["warm"]),
                ("session 2, then cold", w["cold"]),
            ]
        for label, r in labelled:
            ready = r.get("first_worker_ready_after_start_s")
            lines.append(
                f"| {label} | {r['trials']} | {r['wall_s']:.1f} | {r['slots']} | "
                f"{r['sum_train_s']:.1f} | {r['overhead_per_trial_s']:.3f} | {r['fixed_s']:.1f} | "
                f"{r['steady_overhead_per_trial_s']:.3f} | "
                f"{r['recorded_span_minus_train_per_trial_s']:.3f} | "
                f"{r.get('workers_used', '-')} ({r.get('warm_workers', '-')}) | "
                f"{'-' if ready is None else f'{ready:.1f}'} |"
            )
    if "memory" in s:
        lines += [
            "",
            f"## Peak tensor memory of one training step, batch {s['memory']['batch_size']}",
            "",
            "| method | precision | tunable params | own backbone copy | peak MiB | params MiB "
            "| grads MiB | optimizer MiB | step transient peak MiB | train img/s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in s["memory"]["rows"]:
            lines.append(
                f"| {r['config']} | {r['precision']} | {r['tunable_params']:,} | "
                f"{'yes' if r['copies_backbone'] else 'no (shared)'} | "
                f"{r['peak_total_mib']:.0f} | {r['params_mib']:.0f} | {r['grads_mib']:.1f} | "
                f"{r['optimizer_mib']:.1f} | {r['step_transient_peak_mib']:.0f} | "
                f"{r['images_per_s']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        print(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
        return 2
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("--device cuda: torch sees no CUDA device here; run on a GPU machine, or drop it")
            return 2
        off_gpu = set(wanted) - {"mfu", "concurrency"}
        if off_gpu:
            print(
                f"--device cuda runs the mfu and concurrency sections only; "
                f"add --sections mfu,concurrency (not {', '.join(sorted(off_gpu))})"
            )
            return 2
    if args.out is None:
        suffix = "_cuda" if args.device == "cuda" else ""
        args.out = RESULTS / (f"perf_quick{suffix}.json" if args.quick else f"perf{suffix}.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    weights = args.weights
    if weights != "none" and not Path(weights).is_file():
        print(f"note: {weights} not found, using a random-init backbone (--weights none)")
        weights = args.weights = "none"
    if weights == "none" and "naive" in wanted:
        print("note: the naive section rebuilds the backbone from a weights file; skipped")
        wanted.remove("naive")

    from _perf_compute import bf16_hardware

    from autopetl.backbones import BackboneSpec, build_backbone, input_stats
    from autopetl.methods import build_method
    from autopetl.pipeline import attach, load_task_data
    from autopetl.tasks import get_task

    start, load_start = time.perf_counter(), load()
    task = get_task("vtab/dsprites_loc")
    backbone = build_backbone(BackboneSpec(args.backbone, weights, args.img_size), task.num_classes)
    data = load_task_data(task, args.img_size, train_limit=args.batch_size)
    images, labels = data.train.images.to(args.device), data.train.labels.to(args.device)
    patches = backbone.patch_embed.num_patches
    ctx = {
        "backbone": backbone,
        "images": images,
        "labels": labels,
        "ms": input_stats(backbone),
        "tokens": patches + backbone.num_prefix_tokens + args.prompt_length,
        "bf16": bf16_hardware(),
        "vpt_model": lambda: attach(
            backbone,
            build_method("vpt", {"prompt_length": args.prompt_length, "deep": True}),
            seed=0,
        ).to(args.device),
    }
    report: dict[str, Any] = {
        "quick": args.quick,
        "command": shlex.join(["python", *sys.argv]),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "bf16": ctx["bf16"],
        "load_start": load_start,
        "backbone": {"name": args.backbone, "weights": weights, "img_size": args.img_size},
        "batch_size": args.batch_size,
        "device": _device_name(args.device),
        "sections": {},
        "section_load": {},
        "section_seconds": {},
    }
    runners = {
        "mfu": section_mfu,
        "profile": section_profile,
        "naive": section_naive,
        "search": section_search,
        "memory": section_memory,
        "concurrency": section_concurrency,
    }
    for name in SECTIONS:
        if name not in wanted:
            continue
        print(f"[{name}] load {load()}", flush=True)
        t0 = time.perf_counter()
        report["section_load"][name] = {"start": load()}
        try:
            report["sections"][name] = runners[name](ctx, args)
        except Exception as exc:  # one broken section must not lose the others' figures
            import traceback

            traceback.print_exc()
            report.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
        report["section_load"][name]["end"] = load()
        report["section_seconds"][name] = time.perf_counter() - t0
    report["load_end"] = load()
    report["seconds"] = time.perf_counter() - start
    report["figures"] = [{"figure": a, "value": b, "ratio_of": c} for a, b, c in figures(report)]
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    table = markdown(report)
    args.out.with_suffix(".md").write_text(table)
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
