"""Frozen timm Vision Transformers (and Swin Transformers), built by name from a weights source.

Two families of timm models are backbones: ``vit`` (``VisionTransformer``: every method) and
``swin`` (``SwinTransformer``: the methods that do not rely on a ViT's one token sequence, see
``Method.families``); :func:`family_of` tells them apart.

The weights source is one of:
- ``hub``: timm's pretrained weights from the Hugging Face hub (the users' default; the papers'
  backbone is ``vit_base_patch16_224.orig_in21k``);
- a local file (``.safetensors``, ``.bin``, ``.pth``), read and filtered the timm way (the
  position embedding resampled to ``img_size``), every key checked against the model;
- ``none``: random initialisation, for tests and smoke runs (logged as a warning).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopetl.errors import ConfigError, WeightsError

# timm and torch are imported where a model is built: a BackboneSpec (what the command line
# parses) needs neither, and importing them costs seconds.
if TYPE_CHECKING:
    import torch
    from timm.models.vision_transformer import VisionTransformer

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "vit_base_patch16_224.orig_in21k"


@dataclass(frozen=True)
class BackboneSpec:
    """What to build: a timm model name, a weights source, an input size and model overrides.

    Attributes:
        name: A timm model name (a VisionTransformer or SwinTransformer), optionally with a
            pretrained tag.
        weights: ``hub``, ``none`` or a path to a weights file.
        img_size: Side of the square input; position embeddings are resampled to it.
        overrides: Extra timm model kwargs (e.g. ``depth``), used by tiny test models.
    """

    name: str = DEFAULT_BACKBONE
    weights: str = "hub"
    img_size: int = 224
    overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON records it (tuples in overrides become lists), so a spec compares
        equal to itself read back from an artifact or the store."""
        return {
            "name": self.name,
            "weights": self.weights,
            "img_size": self.img_size,
            "overrides": json.loads(json.dumps(self.overrides)),
        }


def describe(backbone: Mapping[str, Any]) -> str:
    """A backbone as people compare them: its name, its weights and its input size.

    Accuracies are comparable only within one of these (one frozen trunk, one input size).
    """
    weights = str(backbone.get("weights", "?"))
    if weights not in ("hub", "none"):
        weights = Path(weights).name  # the file, not where it lies on one machine
    elif weights == "none":
        weights = "random init"
    return f"{backbone.get('name', '?')} ({weights}, {backbone.get('img_size', '?')} px)"


# The backbone of every --smoke-test: a tiny random-init ViT at 32 px that trains in seconds on a
# CPU. Patch 8 gives 16 patch tokens, enough for position tasks to be learnable at all.
SMOKE_BACKBONE = BackboneSpec(
    name="vit_tiny_patch16_224",
    weights="none",
    img_size=32,
    overrides={"patch_size": 8, "depth": 4, "embed_dim": 64, "num_heads": 2},
)


# The backbone families and the timm class of each, by module and class name (no timm import).
FAMILIES = {
    "vit": ("timm.models.vision_transformer", "VisionTransformer"),
    "swin": ("timm.models.swin_transformer", "SwinTransformer"),
}


def family_of(model: torch.nn.Module) -> str | None:
    """``vit`` or ``swin`` for a timm model of that family (subclasses too), else None."""
    import importlib

    for family, (module, cls) in FAMILIES.items():
        if isinstance(model, getattr(importlib.import_module(module), cls)):
            return family
    return None


def check_weights_file(weights: str) -> None:
    """Refuse a local weights file that is not there (hub and none name no file). Light: the CLI
    asks it before importing torch, so the mistake is one line at once."""
    path = Path(weights).expanduser()
    if weights not in ("hub", "none") and not path.is_file():
        raise WeightsError(
            f"weights file {path} does not exist; pass --weights PATH to a "
            f"timm checkpoint, --weights hub, or --weights none"
        )


def build_backbone(spec: BackboneSpec, num_classes: int) -> VisionTransformer:
    """Build a timm ViT with a fresh ``num_classes`` head and every parameter frozen.

    Methods decide what becomes tunable; the head is re-initialised for the task either way.

    Raises:
        WeightsError: The weights file is missing or does not fit, or the hub cannot be reached.
    """
    import timm

    if spec.name.split(".")[0] not in timm.list_models():
        raise WeightsError(
            f"unknown backbone {spec.name!r}; pick a timm ViT such as {DEFAULT_BACKBONE} "
            f"or a Swin such as swin_base_patch4_window7_224.ms_in22k "
            f"(timm.list_models('vit_*') and timm.list_models('swin_*') list them)"
        )
    kwargs: dict[str, Any] = dict(num_classes=num_classes, img_size=spec.img_size, **spec.overrides)
    weights = spec.weights
    path = Path(weights).expanduser()
    check_weights_file(weights)
    if weights == "none":
        log.warning(
            "backbone %s uses RANDOM weights (--weights none): results mean nothing "
            "beyond testing the pipeline",
            spec.name,
        )
    try:
        built = (
            _from_hub(spec.name, kwargs)
            if weights == "hub"
            else timm.create_model(spec.name, pretrained=False, **kwargs)
        )
        model = _checked(built, spec)
        if weights not in ("hub", "none"):
            _load_file(model, spec.name, path)
    except (WeightsError, ConfigError):
        raise
    except (RuntimeError, KeyError, ValueError) as exc:
        raise WeightsError(
            f"cannot load weights {weights!r} into {spec.name}: {str(exc).splitlines()[0][:300]}"
        ) from exc
    model.requires_grad_(False)
    return model


def _load_file(model: VisionTransformer, name: str, path: Path) -> None:
    """Load a checkpoint file into ``model``; any key that does not fit is an error.

    timm's own file loading (``pretrained_cfg_overlay=dict(file=...)``) loads non-strictly once
    the head is replaced, so a checkpoint of another architecture trains with a warning (a
    DINOv2 file in ``vit_small_patch16_224`` leaves 24 layer-scale keys unused). This runs the
    same steps (timm's reader, the model family's own checkpoint filter: a ViT's resamples
    position embeddings to ``img_size``, a Swin's its relative position tables), drops the
    checkpoint's head (the task gets its own) and then insists that every other key matches.
    """
    import importlib

    from timm.models import load_state_dict

    family = family_of(model)
    assert family is not None  # build_backbone built a model of one of FAMILIES
    checkpoint_filter_fn = importlib.import_module(FAMILIES[family][0]).checkpoint_filter_fn
    with warnings.catch_warnings():
        # timm's resampling of a Swin's relative position tables trips two torch deprecation
        # warnings about its own code: nothing a user can act on, and noise in every log.
        warnings.filterwarnings("ignore", category=UserWarning, module="timm.layers.interpolate")
        state = checkpoint_filter_fn(load_state_dict(str(path)), model)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    own = model.state_dict()
    resized = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if resized:
        k = resized[0]
        raise WeightsError(
            f"weights file {path} is not a checkpoint of {name}: {len(resized)} of its weights "
            f"have other shapes ({k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} "
            f"in {name}); pass the --backbone the file was saved from"
        )
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("head.")]
    if missing or result.unexpected_keys:
        found = []
        if missing:
            found.append(f"{len(missing)} of its weights are missing ({_keys(missing)})")
        if result.unexpected_keys:
            found.append(
                f"{len(result.unexpected_keys)} are not {name}'s ({_keys(result.unexpected_keys)})"
            )
        raise WeightsError(
            f"weights file {path} is not a checkpoint of {name}: {'; '.join(found)}; pass the "
            f"--backbone the file was saved from (e.g. vit_small_patch14_dinov2 for a DINOv2 ViT-S/14)"
        )


def _keys(keys: list[str], shown: int = 3) -> str:
    return ", ".join(keys[:shown]) + (
        f", ... {len(keys) - shown} more" if len(keys) > shown else ""
    )


def _checked(model: torch.nn.Module, spec: BackboneSpec) -> VisionTransformer:
    """A ViT or Swin (what the methods know) whose patch size divides the input side.

    A side the patch size does not divide would silently drop the image's last rows and columns.
    """
    if family_of(model) is None:
        raise WeightsError(
            f"{spec.name} is a {type(model).__name__}, not a timm VisionTransformer or "
            f"SwinTransformer; autopetl's methods need one of those"
        )
    embed: Any = model.patch_embed  # a timm PatchEmbed; nn.Module attributes are untyped
    patch = embed.patch_size
    side = patch[0] if isinstance(patch, tuple) else int(patch)
    if spec.img_size % side:
        lower = spec.img_size // side * side
        raise ConfigError(
            f"--img-size {spec.img_size} is not a multiple of {spec.name}'s patch size {side}: "
            f"the last {spec.img_size - lower} pixel rows and columns would be ignored; use "
            f"{lower or side} or {lower + side}"
        )
    return model  # type: ignore[return-value]  # a Swin: the methods that apply check their own


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the hub, so an offline machine fails in seconds, not after retries."""
    import os
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_hub(name: str, kwargs: dict[str, Any]) -> torch.nn.Module:
    import huggingface_hub.constants as hub_constants
    import timm

    offline = hub_constants.HF_HUB_OFFLINE
    if not offline and not _hub_reachable():
        # Unreachable hub: still allow weights already in the local hub cache, without retries.
        hub_constants.HF_HUB_OFFLINE = True
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except (OSError, ConnectionError, TimeoutError) as exc:  # huggingface_hub raises OSError kin
        raise WeightsError(
            f"cannot download {name} weights from the hub ({type(exc).__name__}); pass "
            f"--weights PATH to a local file, or --weights none for random init"
        ) from exc
    except Exception as exc:  # hub errors that are not OSError subclasses (offline mode, 404)
        if type(exc).__module__.startswith(("huggingface_hub", "requests", "urllib3", "httpx")):
            raise WeightsError(
                f"cannot download {name} weights from the hub ({type(exc).__name__}); pass "
                f"--weights PATH to a local file, or --weights none for random init"
            ) from exc
        raise
    finally:
        hub_constants.HF_HUB_OFFLINE = offline


def input_stats(model: VisionTransformer) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation mean and std the backbone was trained with."""
    cfg: dict[str, Any] = dict(getattr(model, "pretrained_cfg", None) or {})
    return tuple(cfg.get("mean", (0.5, 0.5, 0.5))), tuple(cfg.get("std", (0.5, 0.5, 0.5)))
