"""``fact``: Factor-Tuning, FacT (Jie and Deng, AAAI 2023, arXiv:2212.03145).

What trains: the weight increments of every block's qkv, proj, fc1 and fc2, seen as one stack of
d x d slices (per block: q, k, v, proj, then m = hidden / d slices of fc1 and m of fc2; 12L
slices for a ViT's ratio 4) and factorised with factors shared by all blocks, as the official
code (github JieShibo/PETL-ViT, FacT/fact_tt.py and fact_tk.py) computes them:

- ``tt`` (tensor-train): slice i's increment is V Σ_i U, with U (r x d, nn.Linear's default
  init) and V (d x r, zero) shared by every slice of every block and a core Σ_i of its own:
  r x r for q, k, v and proj, one r x mr core for fc1's m slices and one mr x r for fc2's.
- ``tk`` (Tucker): the same U and V, and Σ_i = C x_3 P[:, i] from one r x r x r core C and one
  r x (slices) factor P (both Xavier-uniform), shared as well.

Each increment is a path beside its frozen map: y = W x + s · V dropout(Σ U x). fc1's m·d outputs
are V applied to m chunks of r, concatenated; fc2 applies U to each of its input's m chunks of d.
V is zero at init, so a freshly attached model computes exactly the linear-probe model.
Tunable parameters besides the head: tt 2dr + L(4 + 2m)r², tk 2dr + r³ + L(4 + 2m)r.

Where this reading differs from the official code:

- The official code hard-codes d = 768, 12 blocks (P is r x 144) and the MLP ratio 4; here d, the
  depth and m come from the backbone. A backbone whose attention width is not d, or whose MLP
  hidden width is not a whole multiple of d (the chunks above), is refused with a ConfigError.
- The official code replaces Attention.forward and Mlp.forward with copies that add the
  increments; here the four Linears are wrapped and each increment is added to its Linear's
  output. That is the same sum (tests/test_method_fact.py checks it against the official
  forward) and keeps timm's own attention (fused kernel, masks) and Mlp running unchanged, so a
  mixed-task batch shares the frozen maps (``SHARED``/``residual``, autopetl/serving/mixed.py).
  On a timm Mlp with a norm before fc2 (none in ViTs) fc2's increment reads the normed input,
  where the official copy (timm 0.4.12's Mlp, without that norm) had none.
- The official hook patches every Attention and Mlp in the model; here the blocks' only.
- The shared factors are registered in every wrapper (the very same Parameters): torch counts,
  optimises and saves each once, under the name of its first use
  (``backbone.blocks.0.attn.qkv.factors.*``), and a deep copy keeps them shared.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from autopetl.errors import ConfigError
from autopetl.methods.base import Method, PetlModel, head_params, make_head_tunable
from autopetl.methods.options.fact import FacTConfig
from autopetl.methods.registry import register_method

# Slices per block beyond the MLP's: q, k, v, proj (the official tk code's ``idx += 4``).
ATTN_SLICES = 4


def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # In x's dtype: a frozen backbone cast to bf16 serves trained fp32 factors (as LoRA does).
    return F.linear(x, weight.to(x.dtype))


class SharedFactors(nn.Module):
    """The factors every block shares: U (d -> r), V (r -> d, zero) and, for ``tk``, the core C
    (r x r x r) and the slice factor P (r x slices). Created in the official order (U, V, C, P),
    so a seed draws the same initial values."""

    def __init__(self, dim: int, config: FacTConfig, slices: int) -> None:
        super().__init__()
        r = config.rank
        self.u = nn.Linear(dim, r, bias=False)  # official FacTu, nn.Linear's default init
        self.v = nn.Linear(r, dim, bias=False)  # official FacTv
        nn.init.zeros_(self.v.weight)
        self.c: nn.Parameter | None = None
        self.p: nn.Parameter | None = None
        if config.form == "tk":
            self.c = nn.Parameter(torch.zeros(r, r, r))  # official FacTc
            self.p = nn.Parameter(torch.zeros(r, slices))  # official FacTp
            nn.init.xavier_uniform_(self.c)
            nn.init.xavier_uniform_(self.p)

    def down(self, x: torch.Tensor) -> torch.Tensor:
        return _linear(x, self.u.weight)

    def up(self, h: torch.Tensor) -> torch.Tensor:
        return _linear(h, self.v.weight)

    def cores(self, start: int, n: int) -> torch.Tensor:
        """The ``tk`` cores of slices start..start+n-1, r x r x n: C @ P[:, slices], batched over
        C's first axis as the official ``vit.FacTc @ vit.FacTp[:, idx:idx + n]``."""
        assert self.c is not None and self.p is not None
        return self.c @ self.p[:, start : start + n]


class _Increment(nn.Module):
    """A frozen Linear (``base``) plus s times its factorised increment.

    ``slot`` is the first of its slices in P (``tk``); a ``tt`` wrapper holds its own cores."""

    # What a mixed-task batch shares (autopetl/serving/mixed.py): the frozen Linear once for
    # every task's samples, and each task adds its own increment to its rows.
    SHARED = "base"
    FOLDS = True  # s V core U is a weight increment: it merges into the frozen Linear

    def __init__(
        self, base: nn.Linear, factors: SharedFactors, config: FacTConfig, slot: int
    ) -> None:
        super().__init__()
        self.base = base
        self.factors = factors
        self.scale = config.scale
        self.rank = config.rank
        self.tucker = config.form == "tk"
        self.slot = slot
        self.dropout = nn.Dropout(config.dropout)  # the official ``dp``, after the core

    def residual(self, x: torch.Tensor, shared_out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        return out + self.residual(x, out)


def _core(r_in: int, r_out: int) -> nn.Linear:
    # A tt core as the official code makes it: nn.Linear without bias, default init.
    return nn.Linear(r_in, r_out, bias=False)


class FactQKV(_Increment):
    """timm's fused qkv: q, k and v each get V dropout(Σ U x), concatenated as the official
    ``torch.cat([q, k, v], dim=2) * s``."""

    def __init__(
        self, base: nn.Linear, factors: SharedFactors, config: FacTConfig, slot: int
    ) -> None:
        super().__init__(base, factors, config, slot)
        if not self.tucker:  # the official q_FacTs, k_FacTs, v_FacTs
            r = config.rank
            self.core_q, self.core_k, self.core_v = _core(r, r), _core(r, r), _core(r, r)

    def residual(self, x: torch.Tensor, shared_out: torch.Tensor) -> torch.Tensor:
        h = self.factors.down(x)
        if self.tucker:
            cores = self.factors.cores(self.slot, 3).to(h.dtype)
            mixed = [h @ cores[:, :, i] for i in range(3)]
        else:
            mixed = [_linear(h, c.weight) for c in (self.core_q, self.core_k, self.core_v)]
        # One dropout draw each, as the official code calls ``dp`` three times.
        parts = [self.factors.up(self.dropout(m)) for m in mixed]
        return torch.cat(parts, dim=-1) * self.scale


class FactProj(_Increment):
    """The attention output projection: V dropout(Σ U x) on the attention's output."""

    def __init__(
        self, base: nn.Linear, factors: SharedFactors, config: FacTConfig, slot: int
    ) -> None:
        super().__init__(base, factors, config, slot)
        if not self.tucker:
            self.core = _core(config.rank, config.rank)  # the official proj_FacTs

    def residual(self, x: torch.Tensor, shared_out: torch.Tensor) -> torch.Tensor:
        h = self.factors.down(x)
        if self.tucker:
            h = h @ self.factors.cores(self.slot, 1)[:, :, 0].to(h.dtype)
        else:
            h = _linear(h, self.core.weight)
        return self.factors.up(self.dropout(h)) * self.scale


class FactFc1(_Increment):
    """The MLP's first map (d -> m d): U x, one r -> m r core, then V on each of the m chunks
    of r, concatenated (the official reshape to (B, N, 4, r) and back to (B, N, 4 C))."""

    def __init__(
        self, base: nn.Linear, factors: SharedFactors, config: FacTConfig, slot: int, m: int
    ) -> None:
        super().__init__(base, factors, config, slot)
        self.m = m
        if not self.tucker:
            self.core = _core(config.rank, m * config.rank)  # the official fc1_FacTs

    def residual(self, x: torch.Tensor, shared_out: torch.Tensor) -> torch.Tensor:
        r, m = self.rank, self.m
        h = self.factors.down(x)
        if self.tucker:
            # The official FacTc[:, :, :4].reshape(dim, dim * 4): column b * m + j is slice j's
            # column b; the chunks below then take m r consecutive columns as they come.
            h = h @ self.factors.cores(self.slot, m).reshape(r, r * m).to(h.dtype)
        else:
            h = _linear(h, self.core.weight)
        h = self.dropout(h).reshape(*h.shape[:-1], m, r)
        out = self.factors.up(h)
        return out.reshape(*out.shape[:-2], -1) * self.scale


class FactFc2(_Increment):
    """The MLP's second map (m d -> d): U on each of the input's m chunks of d, one m r -> r
    core, then V (the official reshape to (B, N, 4, C) and of U's output to (B, N, 4 r))."""

    def __init__(
        self, base: nn.Linear, factors: SharedFactors, config: FacTConfig, slot: int, m: int
    ) -> None:
        super().__init__(base, factors, config, slot)
        self.m = m
        if not self.tucker:
            self.core = _core(m * config.rank, config.rank)  # the official fc2_FacTs

    def residual(self, x: torch.Tensor, shared_out: torch.Tensor) -> torch.Tensor:
        r, m = self.rank, self.m
        h = self.factors.down(x.reshape(*x.shape[:-1], m, -1))
        h = h.reshape(*h.shape[:-2], m * r)
        if self.tucker:
            # The official ``@ fc2_FacTc.t()`` with fc2_FacTc = FacTc[:, :, 4:].reshape(dim, 4 dim).
            h = h @ self.factors.cores(self.slot, m).reshape(r, r * m).t().to(h.dtype)
        else:
            h = _linear(h, self.core.weight)
        return self.factors.up(self.dropout(h)) * self.scale


def _unwrapped(module: Any) -> Any:
    # The frozen Linear, also when counting on an attached model (its wrapper's ``base``).
    return module.base if isinstance(module, _Increment) else module


def mlp_chunks(backbone: VisionTransformer) -> int:
    """m = hidden / d, the same in every block; a ConfigError where FacT's tensorisation into
    d x d slices does not apply (attention width other than d, hidden width not a multiple of d,
    a block without timm's qkv, proj, fc1 and fc2 Linears)."""
    d = backbone.embed_dim
    found: set[int] = set()
    block: Any
    for i, block in enumerate(backbone.blocks):
        attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
        maps = {
            "attn.qkv": _unwrapped(getattr(attn, "qkv", None)),
            "attn.proj": _unwrapped(getattr(attn, "proj", None)),
            "mlp.fc1": _unwrapped(getattr(mlp, "fc1", None)),
            "mlp.fc2": _unwrapped(getattr(mlp, "fc2", None)),
        }
        missing = [n for n, lin in maps.items() if not isinstance(lin, nn.Linear)]
        if missing:
            raise ConfigError(
                f"fact needs every block's attn.qkv, attn.proj, mlp.fc1 and mlp.fc2 as Linear "
                f"maps; block {i} has no Linear {missing[0]}"
            )
        qkv, proj, fc1, fc2 = maps.values()
        hidden = fc1.out_features
        fits = (
            (qkv.in_features, qkv.out_features) == (d, 3 * d)
            and (proj.in_features, proj.out_features) == (d, d)
            and fc1.in_features == d == fc2.out_features
            and fc2.in_features == hidden
            and hidden % d == 0
        )
        if not fits:
            raise ConfigError(
                f"fact tensorises every weight into {d} x {d} slices: it needs qkv {d} -> "
                f"{3 * d}, proj {d} -> {d} and an MLP {d} -> k*{d} -> {d}; block {i} has qkv "
                f"{qkv.in_features} -> {qkv.out_features}, proj {proj.in_features} -> "
                f"{proj.out_features}, MLP {fc1.in_features} -> {hidden} -> {fc2.out_features}"
            )
        found.add(hidden // d)
    if len(found) != 1:
        raise ConfigError(f"fact needs one MLP ratio in every block, got {sorted(found)}")
    return found.pop()


@register_method
class FacT(Method):
    name = "fact"
    config_cls = FacTConfig
    config: FacTConfig

    def attach(self, backbone: VisionTransformer) -> PetlModel:
        m = mlp_chunks(backbone)
        make_head_tunable(backbone)
        per_block = ATTN_SLICES + 2 * m  # slices per block (12 for a ViT), as P's columns
        # U and V first, then each block's cores in order: the official creation order.
        factors = SharedFactors(backbone.embed_dim, self.config, len(backbone.blocks) * per_block)
        block: Any
        for i, block in enumerate(backbone.blocks):
            attn, mlp, start = block.attn, block.mlp, i * per_block
            attn.qkv = FactQKV(attn.qkv, factors, self.config, start)
            attn.proj = FactProj(attn.proj, factors, self.config, start + 3)
            mlp.fc1 = FactFc1(mlp.fc1, factors, self.config, start + ATTN_SLICES, m)
            mlp.fc2 = FactFc2(mlp.fc2, factors, self.config, start + ATTN_SLICES + m, m)
        return PetlModel(backbone)

    def closed_form_params(self, backbone: VisionTransformer) -> int:
        """U and V (2 d r), then per block tt cores (4 + 2m) r², or tk's C (r³) and P's
        (4 + 2m) r per block; plus the head."""
        d, r, n = backbone.embed_dim, self.config.rank, len(backbone.blocks)
        slices = n * (ATTN_SLICES + 2 * mlp_chunks(backbone))
        factors = 2 * d * r + (slices * r * r if self.config.form == "tt" else r**3 + slices * r)
        return factors + head_params(backbone)
