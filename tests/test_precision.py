"""What precision="auto" resolves to, and the attention kernel switch that goes with bf16 on CPU."""

from __future__ import annotations

import pytest
import torch

from autopetl.backbones import input_stats
from autopetl.methods import build_method
from autopetl.pipeline import attach
from autopetl.precision import (
    attention_kernel,
    cpu_has_bf16_units,
    resolve_precision,
    wants_explicit_attention,
)
from autopetl.tasks import normalize

CPU = torch.device("cpu")


def test_auto_follows_the_cpu_bf16_units():
    expected = "bf16" if cpu_has_bf16_units() else "fp32"
    assert resolve_precision(CPU, "auto") == expected


def test_explicit_choices_are_kept_and_typos_rejected():
    assert resolve_precision(CPU, "fp32") == "fp32"
    assert resolve_precision(CPU, "bf16") == "bf16"
    with pytest.raises(ValueError, match="auto, fp32, bf16"):
        resolve_precision(CPU, "fp16")


def test_cpu_bf16_units_match_the_cpu_flags():
    """The probe agrees with what the kernel reports for this CPU (Linux only)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        pytest.skip("no /proc/cpuinfo on this platform")
    avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    assert cpu_has_bf16_units() == (avx512 and ("avx512_bf16" in flags or "amx_tile" in flags))


def test_aten_held_to_avx2_means_no_bf16_units():
    """ATEN_CPU_CAPABILITY=avx2 (what a CPU without AVX-512 runs): auto is fp32 there."""
    import subprocess
    import sys

    probe = "from autopetl.precision import cpu_has_bf16_units as f; print(f())"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**__import__("os").environ, "ATEN_CPU_CAPABILITY": "avx2"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.stdout.strip() == "False", out.stderr


def _attention_flags(model: torch.nn.Module) -> list[bool]:
    return [
        m.fused_attn for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)
    ]


def test_explicit_attention_only_for_bf16_on_cpu(tiny_backbone):
    assert wants_explicit_attention(CPU, "bf16")
    assert not wants_explicit_attention(CPU, "fp32")
    assert not wants_explicit_attention(torch.device("cuda"), "bf16")
    flags = _attention_flags(tiny_backbone)
    assert flags and all(flags)  # timm's default: fused
    with attention_kernel(tiny_backbone, CPU, "fp32"):
        assert _attention_flags(tiny_backbone) == flags
    with attention_kernel(tiny_backbone, CPU, "bf16"):
        assert not any(_attention_flags(tiny_backbone))
    assert _attention_flags(tiny_backbone) == flags  # restored: the backbone is shared


def test_flags_are_restored_when_the_run_fails(tiny_backbone):
    with pytest.raises(RuntimeError, match="boom"), attention_kernel(tiny_backbone, CPU, "bf16"):
        raise RuntimeError("boom")
    assert all(_attention_flags(tiny_backbone))


def test_explicit_attention_computes_the_same_function(tiny_backbone):
    """Same logits within bf16 rounding: only the kernel changes, never the model."""
    tiny_backbone.reset_classifier(4)
    model = attach(tiny_backbone, build_method("vpt", {"prompt_length": 4}), seed=0).eval()
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    x = normalize(images, *input_stats(model.backbone))
    with torch.no_grad():
        reference = model(x)  # fp32, fused
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fused = model(x).float()
            with attention_kernel(model, CPU, "bf16"):
                explicit = model(x).float()
    assert not torch.equal(fused, explicit)  # a different kernel really ran
    scale = reference.abs().max()
    assert (fused - reference).abs().max() < 0.05 * scale
    assert (explicit - reference).abs().max() < 0.05 * scale
