"""``ssf``: Scaling & Shifting your Features (Lian et al., NeurIPS 2022, arXiv:2210.08823).

What trains: a per-channel scale gamma and shift beta after every LayerNorm and linear map of the
frozen backbone, y = op(x) * gamma + beta, plus the head. Where, as the official code puts them
(github dongzelian/SSF, ``models/vision_transformer.py`` and ``models/swin_transformer.py``:
``init_ssf_scale_shift``, ``ssf_ada``):

- ViT: after the patch embedding's projection (and its norm, where the model has one); in every
  block after ``norm1``, ``attn.qkv`` (all 3 d channels), ``attn.proj``, ``norm2``, ``mlp.fc1``
  and ``mlp.fc2``; after the final ``norm``.
- Swin: the same in every block, after the patch embedding's projection and its norm, after each
  patch merging's norm (not its reduction), and after the final norm.

Parameters, head excluded: 2 x the output channels of those maps; for a ViT of N blocks, width
d, attention width a and MLP width h, 2 (N (4 d + 3 a + h) + 2 d) (ViT-B/16: 205,824).

Initialisation (``init``): ``official`` (the default) draws gamma ~ N(1, 0.02) and beta ~
N(0, 0.02), as ``init_ssf_scale_shift``; ``identity`` starts at gamma = 1, beta = 0, where the
model computes exactly the linear probe.

Inference: SSF is linear after a linear map or a LayerNorm, so it folds into the frozen weights
(:func:`fold_ssf`): W' = diag(gamma) W, b' = gamma * b + beta. The folded model is a plain timm
model with the backbone's parameter count and inference cost, for a dedicated deployment of one
task. Served beside other tasks on one shared backbone (``autopetl.serving.mixed``), it is not
folded: each wrapped map runs once for the whole batch and each SSF task adds its own
``residual`` = out * (gamma - 1) + beta on its rows, one multiply-add per channel and map; so a
deployment can pay the backbone's cost alone (folded, one task) or share the pass (unfolded).

Where our reading differs from the official code:

- The scale and shift wrap timm's own modules (``ScaleShift``) instead of an ``ssf_ada`` call in
  a copied model file, so every timm ViT and Swin works unchanged; the arithmetic is the same.
- Modules the official ViT file does not have are treated by the paper's rule ("after each
  operation"): a ViT's ``norm_pre`` (CLIP) gets one. Where a ViT pools before ``fc_norm``
  (``global_pool='avg'``, its ``norm`` an Identity) the official code scales the tokens after
  that Identity, before pooling; here the scale and shift follow ``fc_norm`` instead, so they
  still fold into a LayerNorm.
- Folding a map that has no bias gives it one (the shift), so such a model's folded count
  exceeds the backbone's by that bias: only the patch embedding of CLIP-style ViTs
  (``pre_norm``) among the usual ones: the other maps above have biases in the original ViTs,
  DeiT, DINOv2 and the Swins (a model built with ``qkv_bias=False`` would add 3 d per block).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from autopetl.backbones import family_of
from autopetl.errors import ConfigError
from autopetl.methods.base import Method, PetlModel, head_params, make_head_tunable
from autopetl.methods.options.ssf import SPEC, SSFConfig
from autopetl.methods.registry import register_method

# What every transformer block holds, by path inside the block (timm's Block and
# SwinTransformerBlock): the official code's six places per block, in forward order.
BLOCK_TARGETS = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
# The module types SSF follows; each folds: Conv2d and Linear per output channel, LayerNorm into
# its affine weight and bias.
FOLDABLE = (nn.Conv2d, nn.Linear, nn.LayerNorm)


def _channels(module: nn.Module) -> int:
    """The output channels a scale and a shift after ``module`` have."""
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.LayerNorm):
        if len(module.normalized_shape) != 1:
            raise ConfigError(f"ssf needs a LayerNorm over one dimension, got {module}")
        return module.normalized_shape[0]
    raise ConfigError(f"ssf follows a Conv2d, Linear or LayerNorm, got {type(module).__name__}")


class ScaleShift(nn.Module):
    """A frozen module followed by a per-channel scale and shift: base(x) * scale + shift.

    After a Conv2d (the patch embedding) the channels are dimension 1 of its NCHW output; after
    a Linear or a LayerNorm they are the last dimension.
    """

    def __init__(self, base: nn.Module, init: str) -> None:
        super().__init__()
        self.base = base
        channels = _channels(base)
        first = next(base.parameters(), None)
        device = first.device if first is not None else None
        self.scale = nn.Parameter(torch.ones(channels, device=device))
        self.shift = nn.Parameter(torch.zeros(channels, device=device))
        if init == "official":  # init_ssf_scale_shift
            nn.init.normal_(self.scale, mean=1.0, std=0.02)
            nn.init.normal_(self.shift, std=0.02)
        self.channels_first = isinstance(base, nn.Conv2d)

    def _shaped(self, p: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        # The parameters stay fp32 under a lower-precision forward (LoRA casts the same way).
        p = p.to(like.dtype)
        return p.view(-1, 1, 1) if self.channels_first else p

    # What a mixed-task batch shares (autopetl/serving/mixed.py): the frozen module runs once
    # for every task's samples and each task adds out * (scale - 1) + shift on its own rows,
    # which is out * scale + shift - out, the same up to rounding.
    SHARED = "base"
    FOLDS = True  # scale and shift merge into the module before them (fold_ssf)

    def residual(self, x: torch.Tensor, shared_out: torch.Tensor) -> torch.Tensor:
        return shared_out * self._shaped(self.scale - 1, shared_out) + self._shaped(
            self.shift, shared_out
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        # ssf_ada's arithmetic, in its order: the scale 1 and shift 0 give out back bit for bit.
        return out * self._shaped(self.scale, out) + self._shaped(self.shift, out)


def _unwrapped(module: Any) -> Any:
    return module.base if isinstance(module, ScaleShift) else module


def _optional(module: Any) -> bool:
    """Whether an optional norm is there (timm puts an Identity, or None on a Swin, otherwise),
    wrapped or not."""
    return isinstance(_unwrapped(module), FOLDABLE)


def ssf_targets(backbone: nn.Module) -> list[str]:
    """The paths of the modules SSF follows in ``backbone`` (wrapped or not), in forward order."""

    def inner(path: str) -> Any:
        return _unwrapped(backbone.get_submodule(path))

    net: Any = backbone
    family = family_of(backbone)
    names = ["patch_embed.proj"]
    if _optional(getattr(inner("patch_embed"), "norm", None)):
        names.append("patch_embed.norm")
    if family == "swin":
        for i, stage in enumerate(net.layers):
            # timm's Swin merges at the start of a stage (the official code at the end of the
            # previous one): the same maps in the same order. Its reduction Linear is not scaled.
            if _optional(getattr(stage.downsample, "norm", None)):
                names.append(f"layers.{i}.downsample.norm")
            names += [
                f"layers.{i}.blocks.{j}.{t}"
                for j in range(len(stage.blocks))
                for t in BLOCK_TARGETS
            ]
    elif family == "vit":
        if _optional(getattr(net, "norm_pre", None)):
            names.append("norm_pre")
        names += [f"blocks.{i}.{t}" for i in range(len(net.blocks)) for t in BLOCK_TARGETS]
    else:
        raise ConfigError(f"ssf is written for a ViT or a Swin, not a {type(backbone).__name__}")
    for norm in ("norm", "fc_norm"):
        if _optional(getattr(net, norm, None)):
            names.append(norm)
    for path in names:
        try:
            module = inner(path)
        except AttributeError:
            raise ConfigError(f"ssf needs a {path} in the backbone (timm's layout)") from None
        _channels(module)  # a Conv2d, Linear or LayerNorm, or a one-line refusal
    return names


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


@register_method
class SSF(Method):
    name = "ssf"
    config_cls = SSFConfig
    config: SSFConfig
    families = SPEC.families

    def attach(self, backbone: VisionTransformer) -> PetlModel:
        make_head_tunable(backbone)
        for path in ssf_targets(backbone):
            _set(backbone, path, ScaleShift(backbone.get_submodule(path), self.config.init))
        return PetlModel(backbone)

    def closed_form_params(self, backbone: VisionTransformer) -> int:
        """2 x the output channels of every map SSF follows (a scale and a shift each), plus the
        head: 2 (N (4 d + 3 a + h) + 2 d) on a ViT (see the module docstring)."""
        total = 0
        for path in ssf_targets(backbone):
            total += 2 * _channels(_unwrapped(backbone.get_submodule(path)))
        return total + head_params(backbone)


@torch.no_grad()
def _fold(wrapper: ScaleShift) -> nn.Module:
    """The wrapped module with the scale and shift merged into its weight and bias (in place:
    called on a copy)."""
    base: Any = wrapper.base
    dtype = base.weight.dtype if base.weight is not None else wrapper.scale.dtype
    scale = wrapper.scale.detach().to(dtype)
    shift = wrapper.shift.detach().to(scale.dtype)
    if isinstance(base, nn.Conv2d | nn.Linear):
        # out = W x + b, so out * s + t = (diag(s) W) x + (s b + t).
        base.weight.mul_(scale.view(-1, *([1] * (base.weight.dim() - 1))))
    elif base.weight is not None:  # LayerNorm: normalised x * w + b
        base.weight.mul_(scale)
    else:  # a LayerNorm without affine weight: the scale becomes its weight
        base.weight = nn.Parameter(scale.clone())
    if base.bias is not None:
        base.bias.mul_(scale).add_(shift)
    else:  # a bias-free map gets one (the only case where folding adds parameters)
        base.bias = nn.Parameter(shift.clone())
    return base


def fold_ssf(model: PetlModel) -> nn.Module:
    """A plain timm model computing what ``model`` (an SSF model) computes, on copies of its
    tensors: every scale and shift merged into the Conv2d, Linear or LayerNorm it follows.

    This is SSF's deployment form for one task: the backbone's own modules, its parameter count
    (the trained head included) and its inference cost, no extra multiply-add. The unfolded model
    instead costs one multiply-add per channel after every wrapped map, and is the form that
    shares one backbone pass with other tasks (:class:`autopetl.serving.mixed.MixedTaskModel`);
    report both costs when comparing deployments. Every parameter of the result is frozen.
    """
    net = copy.deepcopy(model.backbone)
    wrappers = [(n, m) for n, m in net.named_modules() if isinstance(m, ScaleShift)]
    if not wrappers:
        raise ValueError("fold_ssf needs a model that ssf attached to (no ScaleShift found)")
    for path, wrapper in wrappers:
        _set(net, path, _fold(wrapper))
    return net.requires_grad_(False)
