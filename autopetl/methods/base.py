"""The one interface every PETL method implements, and the configs they share.

Life cycle of a method:
1. The registry finds the method class by its lowercase ``name``.
2. ``config_cls.from_dict(values)`` checks the user's values (unknown keys, types, ranges) and
   gives a frozen dataclass that round-trips through JSON with ``to_dict()``. The configs, and
   each method's name and families, are in :mod:`autopetl.methods.options`, without torch.
3. ``method.attach(backbone)`` takes a frozen timm ViT (every parameter ``requires_grad=False``)
   and returns a :class:`PetlModel`: the backbone plus the method's tunable parts. Exactly the
   parameters with ``requires_grad=True`` are tunable; the task head always is.
4. Training updates those parameters; :mod:`autopetl.methods.io` saves and reloads them alone.

Methods never import Optuna, Ray or the store: search spaces are data (search_spaces/*.yaml).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import ClassVar

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

# The configs live without torch (autopetl.methods.options), so that the command line checks
# them at once; imported here, where they always were.
from autopetl.methods.options.base import MAX_INT_OPTION as MAX_INT_OPTION
from autopetl.methods.options.base import MethodConfig as MethodConfig
from autopetl.methods.options.base import _coerce as _coerce
from autopetl.methods.options.base import _jsonable as _jsonable


class PetlModel(nn.Module):
    """A frozen timm ViT plus one method's tunable parts; the model that trains and serves.

    The default forward is the backbone's own; methods that change the token sequence (prompts)
    override :meth:`forward_features`, methods that patch layers (LoRA, adapters) change the
    backbone's modules in place and keep the default.
    """

    def __init__(self, backbone: VisionTransformer) -> None:
        super().__init__()
        self.backbone = backbone
        # The method that built this model, set by autopetl.api (what its save() records).
        self.petl_method: Method | None = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def tunable_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def tunable_state_dict(self) -> dict[str, torch.Tensor]:
        """The tunable weights alone: what a checkpoint or a served artifact holds."""
        return {n: p.detach() for n, p in self.tunable_named_parameters()}

    def num_tunable(self, *, include_head: bool = True) -> int:
        head = {id(p) for p in self.backbone.head.parameters()}
        return sum(
            p.numel()
            for _, p in self.tunable_named_parameters()
            if include_head or id(p) not in head
        )


class Method(ABC):
    """A PETL method: how to make a frozen ViT trainable for a task with few parameters.

    Subclasses set ``name`` (lowercase, unique), ``config_cls`` and ``families`` as the method's
    ``SPEC`` in :mod:`autopetl.methods.options` says, and register themselves with
    :func:`autopetl.methods.register_method`, which checks that the two agree.
    """

    name: ClassVar[str]
    config_cls: ClassVar[type[MethodConfig]]
    # Whether ``attach`` changes the backbone beyond its head: trains its weights (full, bias,
    # partial) or swaps its layers (LoRA, adapters). Methods that only read it (prompts, side
    # networks, heads) set False, and a search worker then lends them its one frozen backbone
    # instead of copying it for every trial (a ViT-B copy is 330 MiB). The methods' contract
    # test checks every False against what attach and a training step really do.
    changes_backbone: ClassVar[bool] = True
    # The backbone families (autopetl.backbones.FAMILIES) the method is written for. Most methods
    # reach into a ViT's one token sequence and its blocks (backbone.blocks, [CLS], embed_dim); a
    # method that also handles a Swin's stages says so here (families = SPEC.families).
    families: ClassVar[tuple[str, ...]] = ("vit",)

    def __init__(self, config: MethodConfig | None = None) -> None:
        self.config = config if config is not None else self.config_cls()
        if not isinstance(self.config, self.config_cls):
            raise TypeError(f"{self.name} needs a {self.config_cls.__name__}")

    def refuses(self, family: str) -> str | None:
        """Why this configuration cannot run on a backbone of ``family`` (one of ``families``),
        or None. ``registry.check_applies`` asks it before every attach."""
        return None

    @abstractmethod
    def attach(self, backbone: VisionTransformer) -> PetlModel:
        """Add the tunable parts to a frozen backbone (head included) and return the model."""

    @abstractmethod
    def closed_form_params(self, backbone: VisionTransformer) -> int:
        """Tunable parameters, head included, computed from the architecture alone (for tests)."""


def head_params(backbone: VisionTransformer) -> int:
    """Parameters of a linear classifier head on this backbone's features."""
    head = backbone.head
    return sum(p.numel() for p in head.parameters())


def make_head_tunable(backbone: VisionTransformer) -> None:
    backbone.head.requires_grad_(True)
