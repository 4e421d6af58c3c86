"""``adapter``: bottleneck adapters on every block's MLP.

Two placements:

- ``sequential``: Houlsby et al. (ICML 2019, arXiv:1902.00751) insert a bottleneck after the
  feed-forward sub-layer, with its own residual: h = MLP(x); h + s * up(relu(down(h))).
- ``parallel``: AdaptFormer (Chen et al., NeurIPS 2022, arXiv:2205.13535) runs the bottleneck
  beside the MLP and adds its scaled output: MLP(x) + s * up(relu(down(x))), with s = 0.1 for
  ViTs in the paper.

Both follow AdaptFormer's code for initialisation: the down projection gets PyTorch's default
(Kaiming-uniform) init, the up projection and both biases are zero, so a freshly attached model
computes exactly the linear-probe model (``x + 0`` is ``x`` in floating point) and training moves
away from it smoothly.

The adapter wraps timm's ``blk.mlp`` so any timm ``Block`` works unchanged. Two consequences, by
design: the adapter reads ``norm2(x)`` where AdaptFormer's parallel branch reads the residual
stream before the norm (the normalised input is better scaled for a randomly initialised
bottleneck), and on layer-scale models (DINOv2) the adapter's output is scaled by the frozen
``ls2`` like the MLP's output it sits beside.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from autopetl.methods.base import Method, PetlModel, head_params, make_head_tunable
from autopetl.methods.options.adapter import AdapterConfig
from autopetl.methods.registry import register_method


class Bottleneck(nn.Module):
    """down (d -> r), ReLU, up (r -> d) with the up projection zero-initialised."""

    def __init__(self, embed_dim: int, dim: int) -> None:
        super().__init__()
        self.down = nn.Linear(embed_dim, dim)
        self.act = nn.ReLU()
        self.up = nn.Linear(dim, embed_dim)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class AdaptedMlp(nn.Module):
    """A frozen timm MLP with a bottleneck adapter in sequence or in parallel."""

    def __init__(self, mlp: nn.Module, embed_dim: int, config: AdapterConfig) -> None:
        super().__init__()
        self.mlp = mlp
        self.adapter = Bottleneck(embed_dim, config.dim)
        self.parallel = config.placement == "parallel"
        self.scale = config.scale

    # What a mixed-task batch shares (autopetl/serving/mixed.py): the frozen MLP once for every
    # task's samples, each task's adapter on its own rows.
    SHARED = "mlp"

    def residual(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.scale * self.adapter(x if self.parallel else h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mlp(x)
        return h + self.residual(x, h)


@register_method
class Adapter(Method):
    name = "adapter"
    config_cls = AdapterConfig
    config: AdapterConfig

    def attach(self, backbone: VisionTransformer) -> PetlModel:
        make_head_tunable(backbone)
        for block in backbone.blocks:
            block.mlp = AdaptedMlp(block.get_submodule("mlp"), backbone.embed_dim, self.config)
        return PetlModel(backbone)

    def closed_form_params(self, backbone: VisionTransformer) -> int:
        d, r = backbone.embed_dim, self.config.dim
        per_block = (d * r + r) + (r * d + d)  # down and up, with biases
        return len(backbone.blocks) * per_block + head_params(backbone)
