"""``adaptformer``: AdaptFormer (Chen et al., NeurIPS 2022, arXiv:2205.13535).

What trains: in every chosen block (all by default) a bottleneck branch beside the frozen MLP,
down (d -> r), ReLU, dropout, up (r -> d), its output multiplied by a fixed s = 0.1 and added to
the residual stream; and the head. Per block: x' = x + attn(norm1(x)), then

    x_out = x' + MLP(norm2(x')) + s * up(relu(down(x')))

as the official code computes it (github.com/ShoufaChen/AdaptFormer, models/custom_modules.py,
``Block.forward``: ``adapt_x = self.adaptmlp(x, add_residual=False)`` on x before
``self.fc1(self.norm2(x))``; models/adapter.py, ``Adapter``; main_image.py's ``tuning_config``:
``ffn_option="parallel"``, ``ffn_adapter_layernorm_option="none"``, ``ffn_adapter_init_option=
"lora"``, ``ffn_adapter_scalar="0.1"``, ``ffn_num=64``; the Block passes ``dropout=0.1``).

The branch reads the residual stream x' itself, before ``norm2``: that is the difference from
this repo's ``adapter`` with ``placement: parallel``, which wraps timm's ``mlp`` and so reads
``norm2(x')``. (The paper's equation for the branch writes ReLU(LN(x') W_down) W_up; its code,
which we follow, runs ViTs with ``ffn_adapter_layernorm_option="none"``: no LayerNorm before the
branch.) Initialisation is the official ``lora`` option: down Kaiming-uniform (a = sqrt 5,
PyTorch's Linear default), up weight and both biases zero, so a freshly attached model computes
exactly the linear-probe model (``h + 0`` is ``h`` in floating point).

Where our reading differs from, or goes beyond, the official code:

- Layer scale (DINOv2 backbones: timm's ``ls2``): the official ViT has none. The frozen ``ls2``
  scales the MLP's output only, and the branch is added outside it, as the paper's sum
  x' + MLP(LN(x')) + s * branch has it: the pretrained gamma was learnt for the MLP's output,
  and s alone sets the branch's scale, as on the official (layer-scale-free) ViT.
- Stochastic depth: as in the official Block, ``drop_path2`` acts on the MLP's output only, not
  on the branch (our backbones build with none; it matters only if one has it).
- ``blocks`` (a subset of blocks) is ours; the official code puts a branch in every block. The
  official ``learnable_scalar`` and adapter LayerNorm options (off for ViTs) are not offered.

How: timm's ``Block.forward`` computes ``x + drop_path2(ls2(mlp(norm2(x))))``; the only module
that sees x there is ``norm2``, whose output must stay the MLP's input. So the whole MLP sub-layer
moves into one module at the ``mlp`` slot (frozen ``norm2``, ``mlp``, ``ls2``, ``drop_path2``
plus the branch), and the block's ``norm2``, ``ls2`` and ``drop_path2`` become ``Identity``.
The block stays a timm ``Block`` with the same children, so a mixed-task batch
(autopetl/serving/mixed.py) still merges it child by child: AdaptFormer's model shares the one
backbone pass and the frozen attention with every other task, and only its MLP sub-layer runs on
its own rows (the same FLOPs, in a matmul of its own; a task in the same batch whose MLP differs
too, LoRA on fc1, then runs its whole MLP on its rows as well). It cannot be a ``SHARED`` residual
of the frozen MLP, whose input is ``norm2(x')``, not x'.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from autopetl.errors import ConfigError
from autopetl.methods.base import Method, PetlModel, head_params, make_head_tunable
from autopetl.methods.options.adaptformer import AdaptFormerConfig
from autopetl.methods.registry import register_method


class Bottleneck(nn.Module):
    """down (d -> r), ReLU, dropout, up (r -> d): the official ``Adapter`` with
    ``add_residual=False``, its scale applied by the caller."""

    def __init__(self, embed_dim: int, dim: int, dropout: float) -> None:
        super().__init__()
        # nn.Linear's default weight init is kaiming_uniform_(a=sqrt(5)), the official "lora"
        # init of down_proj.weight; its bias and all of up_proj are zero.
        self.down = nn.Linear(embed_dim, dim)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(dim, embed_dim)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.dropout(self.act(self.down(x))))


class AdaptFormerMlp(nn.Module):
    """A timm Block's frozen MLP sub-layer, drop_path2(ls2(mlp(norm2(x)))), with AdaptFormer's
    branch beside it reading x itself: what the block adds to its residual stream."""

    def __init__(self, block: Block, embed_dim: int, config: AdaptFormerConfig) -> None:
        super().__init__()
        self.norm = block.norm2
        self.mlp = block.mlp
        self.ls = block.ls2
        self.drop_path = block.drop_path2
        self.adapter = Bottleneck(embed_dim, config.dim, config.dropout)
        self.scale = config.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop_path(self.ls(self.mlp(self.norm(x))))
        # Added after ls2 and drop_path2: the official Block adds adapt_x to the MLP's output
        # after its drop_path, and has no layer scale (see the module docstring).
        return h + self.scale * self.adapter(x)


def _check_block(block: nn.Module, index: int) -> Block:
    # The rewiring relies on Block.forward's x + drop_path2(ls2(mlp(norm2(x)))); a subclass or
    # another block type (timm's ResPostBlock, ParallelScalingBlock) computes something else.
    if type(block) is not Block:
        raise ConfigError(
            f"adaptformer needs timm's Block in every chosen block; block {index} is a "
            f"{type(block).__name__}"
        )
    return block


@register_method
class AdaptFormer(Method):
    name = "adaptformer"
    config_cls = AdaptFormerConfig
    config: AdaptFormerConfig

    def attach(self, backbone: VisionTransformer) -> PetlModel:
        chosen = self.config.adapted_blocks(len(backbone.blocks))
        blocks = [_check_block(backbone.blocks[i], i) for i in chosen]  # check all, then change
        make_head_tunable(backbone)
        for block in blocks:
            sublayer = AdaptFormerMlp(block, backbone.embed_dim, self.config)
            block.mlp = sublayer
            # Their frozen modules now run inside the sub-layer; Block.forward computes
            # x + Identity(Identity(sublayer(Identity(x)))) = x + sublayer(x).
            block.norm2 = nn.Identity()
            block.ls2 = nn.Identity()
            block.drop_path2 = nn.Identity()
        return PetlModel(backbone)

    def closed_form_params(self, backbone: VisionTransformer) -> int:
        """(d r + r) + (r d + d) per chosen block (down and up, with biases), plus the head."""
        d, r = backbone.embed_dim, self.config.dim
        chosen = self.config.adapted_blocks(len(backbone.blocks))
        return len(chosen) * ((d * r + r) + (r * d + d)) + head_params(backbone)
