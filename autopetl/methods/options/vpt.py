"""``vpt``'s options (the method: :mod:`autopetl.methods.vpt`, where each option is described)."""

from __future__ import annotations

from dataclasses import dataclass

from autopetl.errors import ConfigError
from autopetl.methods.options.base import MethodConfig, MethodSpec

LOCATIONS = ("prepend", "add")
# How the output is read (VPT's ablation, Fig. 8; VIT_POOL_TYPE in the official code): the [CLS]
# token ("original"), the mean of the image tokens ("img_pool"), of the prompt outputs
# ("prompt_pool"), or of both ("imgprompt_pool"). Also dvpt's (autopetl.methods._prompting).
READOUTS = ("cls", "image_pool", "prompt_pool", "image_prompt_pool")


@dataclass(frozen=True)
class VPTConfig(MethodConfig):
    """Attributes:
    prompt_length: Prompts per layer, p (VPT searches 1 to 200); unused by ``location: add``,
        whose prompts are one per token.
    deep: Prompts before every block (VPT-deep) instead of the first only (VPT-shallow).
    dropout: Dropout on the prompt tokens (VPT's prompt dropout).
    location: ``prepend`` (the paper's) or ``add``.
    deep_layers: With ``deep``, how many blocks get prompts; 0 (the paper's), or more than the
        backbone has: all of them.
    deep_from: ``first`` (the paper's) or ``last``: which ``deep_layers`` blocks.
    readout: ``cls`` (the paper's), ``image_pool``, ``prompt_pool`` or ``image_prompt_pool``.
    """

    prompt_length: int = 10
    deep: bool = True
    dropout: float = 0.0
    location: str = "prepend"
    deep_layers: int = 0
    deep_from: str = "first"
    readout: str = "cls"

    def __post_init__(self) -> None:
        if self.prompt_length < 1:
            raise ConfigError(f"prompt_length must be >= 1, got {self.prompt_length}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout}")
        for name, value, choices in (
            ("location", self.location, LOCATIONS),
            ("deep_from", self.deep_from, ("first", "last")),
            ("readout", self.readout, READOUTS),
        ):
            if value not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        if self.deep_layers < 0:
            raise ConfigError(f"deep_layers must be >= 0 (0: every block), got {self.deep_layers}")
        if not self.deep and (self.deep_layers or self.deep_from != "first"):
            raise ConfigError(
                "deep_layers and deep_from choose deep prompts' blocks: set deep=true"
            )
        if self.location == "add" and self.readout in ("prompt_pool", "image_prompt_pool"):
            raise ConfigError(
                f"readout {self.readout} reads prompt outputs, which location add does not have "
                "(its prompts are added to the tokens); use cls or image_pool"
            )

    def prompted_blocks(self, blocks: int) -> list[int]:
        """The blocks that get prompts, in a ViT of ``blocks`` blocks."""
        if not self.deep:
            return [0]
        # More than the backbone has is every block: one space serves ViT-S and a 4-block smoke
        # model alike.
        k = min(self.deep_layers or blocks, blocks)
        return list(range(k)) if self.deep_from == "first" else list(range(blocks - k, blocks))


# The families: on a Swin, prompts go inside every local window (autopetl.methods.vpt).
SPEC = MethodSpec("vpt", VPTConfig, families=("vit", "swin"))
