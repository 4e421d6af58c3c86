"""What ``precision="auto"`` means on this machine, and the attention kernel that goes with it.

Both choices come from measurements (docs/PERFORMANCE.md, ``python benchmarks/perf.py --sections
mfu``), not taste:

- On a CPU with bf16 dot-product units (AVX512-BF16 or AMX) the dense bf16 matmul is about 4x the
  fp32 one, and a VPT-deep training step of ViT-S/14 runs about 2x faster under bf16 autocast, with
  the same validation accuracy within noise. So ``auto`` is bf16 there, as on CUDA; CPUs without
  those units emulate bf16 and stay in fp32.
- In bf16 on CPU, torch's fused attention (the CPU flash kernel) is the slowest part of the step:
  its backward alone took 38% of the step's time for 4% of its FLOPs. timm's explicit attention
  (two batched bf16 GEMMs and a softmax) makes the whole step about 1.6x faster at ViT token counts,
  so bf16 runs on CPU switch timm's ``fused_attn`` off for their duration. On CUDA, and in fp32,
  fused attention (SDPA) stays.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

# torch is imported inside the functions: the command line offers PRECISIONS without it.
if TYPE_CHECKING:
    import torch

Resolved = Literal["fp32", "bf16"]
PRECISIONS = ("auto", "fp32", "bf16")
PRECISION_HELP = (
    "auto (default): bf16 autocast where the hardware computes bf16 (CUDA GPUs, CPUs with "
    "AVX512-BF16 or AMX), fp32 elsewhere"
)


def cpu_has_bf16_units() -> bool:
    """True when this CPU computes bf16 dot products natively (AVX512-BF16 or AMX tiles)."""
    import torch

    # ATen limited to older vector units (ATEN_CPU_CAPABILITY=avx2, as on a CPU without AVX-512,
    # or to measure what one gets) runs bf16 without them, however the CPU itself is built.
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    # torch exposes these only as private helpers; a torch without them means "don't know", so fp32.
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except RuntimeError:
            continue
    return False


def resolve_precision(device: torch.device, precision: str) -> Resolved:
    """``fp32`` or ``bf16`` for a run on ``device``; ``auto`` picks bf16 where the hardware has it."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return "bf16" if precision == "bf16" else "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_bf16_units() else "fp32"
    return "fp32"


def autocast(device: torch.device, resolved: Resolved) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``bf16``; nothing for ``fp32``."""
    import torch

    if resolved == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def wants_explicit_attention(device: torch.device, resolved: Resolved) -> bool:
    """Whether timm's explicit attention beats the fused kernel for this run (bf16 on CPU)."""
    return device.type == "cpu" and resolved == "bf16"


@contextlib.contextmanager
def attention_kernel(
    model: torch.nn.Module, device: torch.device, resolved: Resolved
) -> Iterator[None]:
    """Run ``model`` with the faster attention kernel for ``device`` and ``resolved``.

    timm's attention modules read their ``fused_attn`` flag at every forward, so flipping it needs
    no rebuild; the flags are put back afterwards, because the backbone may be shared with runs of
    another precision (a search worker keeps one for all its trials).
    """
    if not wants_explicit_attention(device, resolved):
        yield
        return
    flagged = [m for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    before = [m.fused_attn for m in flagged]
    try:
        for module in flagged:
            setattr(module, "fused_attn", False)  # noqa: B010 (typed as a Module attribute)
        yield
    finally:
        for module, value in zip(flagged, before, strict=True):
            setattr(module, "fused_attn", value)  # noqa: B010
