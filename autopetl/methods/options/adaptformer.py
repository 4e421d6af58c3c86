"""``adaptformer``'s options (the method: :mod:`autopetl.methods.adaptformer`).

AdaptFormer's branch reads the residual stream x before ``norm2``, as the official code does
(adapter LayerNorm option "none"); ``adapter`` with ``placement: parallel`` reads ``norm2(x)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from autopetl.errors import ConfigError
from autopetl.methods.options.base import MAX_INT_OPTION, MethodConfig, MethodSpec


def _block_indices(value: object) -> str | tuple[int, ...]:
    """``"all"``, or a non-empty list of distinct block indices (a list, a tuple, or ``"0,2"``
    from ``--set``), as a sorted tuple so that equal choices compare equal."""
    if value == "all":
        return "all"
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not all(p.isdigit() for p in parts):
            raise ConfigError(f"blocks must be 'all' or a list of block indices, got {value!r}")
        value = [int(p) for p in parts]
    if not isinstance(value, list | tuple):
        raise ConfigError(f"blocks must be 'all' or a list of block indices, got {value!r}")
    if not value:
        raise ConfigError("blocks must name at least one block (or be 'all')")
    for i in value:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i <= MAX_INT_OPTION:
            raise ConfigError(f"blocks must be block indices from 0 up, got {i!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"blocks repeat an index: {list(value)}")
    return tuple(sorted(value))


@dataclass(frozen=True)
class AdaptFormerConfig(MethodConfig):
    """Attributes:
    dim: Bottleneck width (AdaptFormer's ``--ffn_num``, 64 in the paper and its code).
    scale: Fixed multiplier s on the branch's output (``ffn_adapter_scalar``, 0.1 for ViTs).
    dropout: Dropout on the bottleneck's activations in training (the official Block builds
        its adapter with ``dropout=0.1``; off in eval).
    blocks: Which blocks get a branch: ``all`` (the paper's) or a list of block indices
        (0-based; each must exist in the backbone, checked when it is attached).
    """

    dim: int = 64
    scale: float = 0.1
    dropout: float = 0.1
    blocks: str | tuple[int, ...] = "all"

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ConfigError(f"dim must be >= 1, got {self.dim}")
        if not self.scale > 0:
            raise ConfigError(f"scale must be > 0, got {self.scale}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout}")
        # from_dict passes a JSON list or a --set string through (the union has no coercion).
        object.__setattr__(self, "blocks", _block_indices(self.blocks))

    def adapted_blocks(self, depth: int) -> list[int]:
        """The indices of the blocks that get a branch, in a ViT of ``depth`` blocks."""
        if isinstance(self.blocks, str):  # "all", the one string __post_init__ keeps
            return list(range(depth))
        missing = [i for i in self.blocks if i >= depth]
        if missing:
            raise ConfigError(
                f"blocks names block {missing[0]}, but the backbone has {depth} blocks "
                f"(indices 0 to {depth - 1})"
            )
        return list(self.blocks)


SPEC = MethodSpec("adaptformer", AdaptFormerConfig)
