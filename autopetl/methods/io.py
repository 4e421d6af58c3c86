"""Save a trained method's tunable weights alone, and rebuild the model from them.

An artifact is a directory with two files, as peft's ``adapter_model.safetensors`` plus
``adapter_config.json``:

- ``tunable.safetensors``: the tunable parameters (head included), keyed by their names in the
  :class:`PetlModel`; no pickle, so loading runs no code;
- ``method.json``: the method's name and config, the backbone spec, the number of classes and
  the autopetl version that wrote it.

Loading builds the frozen backbone from its spec (or takes the one given), resets the head to the
number of classes, attaches the method and loads the weights, failing if a key or a shape
differs. In eval mode the loaded model computes bit for bit what the saved one did.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer

from autopetl.backbones import BackboneSpec, build_backbone
from autopetl.errors import ConfigError, WeightsError
from autopetl.methods.artifact_meta import CONFIG_FILE, FORMAT_VERSION, read_meta
from autopetl.methods.base import Method, PetlModel
from autopetl.methods.registry import build_method

WEIGHTS_FILE = "tunable.safetensors"
# The seed of every rebuildable random-init backbone (see rebuildable_backbone).
RANDOM_INIT_SEED = 0


@dataclass
class Artifact:
    """A model rebuilt from a saved artifact, with what it was built from."""

    model: PetlModel
    method: Method
    backbone_spec: BackboneSpec
    num_classes: int
    meta: dict[str, Any]


def _version() -> str:
    try:
        return metadata.version("autopetl")
    except metadata.PackageNotFoundError:
        return "unknown"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file (an artifact's weights: recorded by evaluate, checked by serve)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def frozen_digest(backbone: VisionTransformer) -> str:
    """SHA-256 of a backbone's weights and buffers, head excluded (the head is per task)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        if name.startswith("head."):
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def rebuildable_backbone(
    spec: BackboneSpec, num_classes: int, seed: int = RANDOM_INIT_SEED
) -> VisionTransformer:
    """:func:`build_backbone`, but a random-init one (``weights none``) comes from a fixed seed.

    The trunk is built with no head under ``seed`` in a forked RNG (the caller's random state is
    untouched), then given a ``num_classes`` head: the head's size would otherwise change how much
    randomness the trunk's initialisation consumes, and tasks with different class counts must
    share one frozen trunk. Real weights (hub or a file) are built as usual.
    """
    if spec.weights != "none":
        return build_backbone(spec, num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = build_backbone(spec, 0)
    backbone.reset_classifier(num_classes)
    backbone.requires_grad_(False)
    return backbone


def backbone_init_record(spec: BackboneSpec, backbone: VisionTransformer) -> dict[str, Any] | None:
    """What an artifact records to rebuild ``backbone`` (``save_tunable(backbone_init=...)``).

    A random-init backbone from :func:`rebuildable_backbone` is recorded as its seed and the digest
    of its frozen weights, so serving rebuilds exactly those weights (and refuses other ones); a
    backbone with real weights needs no record (None).
    """
    if spec.weights != "none":
        return None
    return {"seed": RANDOM_INIT_SEED, "sha256": frozen_digest(backbone)}


def save_tunable(
    model: PetlModel,
    method: Method,
    backbone_spec: dict[str, Any],
    num_classes: int,
    directory: str | Path,
    *,
    backbone_init: dict[str, Any] | None = None,
) -> Path:
    """Write ``tunable.safetensors`` and ``method.json`` into ``directory`` (created if needed).

    Args:
        model: The trained model; only its ``requires_grad`` parameters are saved.
        method: The method that built it (its name and config go into the JSON).
        backbone_spec: ``BackboneSpec.to_dict()`` of the frozen backbone.
        num_classes: Classes of the task head.
        directory: Where to write; existing files of the same names are replaced.
        backbone_init: For a backbone from :func:`rebuildable_backbone` with ``weights none``:
            ``{"seed": ..., "sha256": frozen_digest(backbone)}``, so loading can rebuild it.

    Returns:
        The directory.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    # Clone to contiguous tensors that own their memory: safetensors refuses shared storage.
    tensors = {
        k: v.detach().cpu().contiguous().clone() for k, v in model.tunable_state_dict().items()
    }
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    meta = {
        "format_version": FORMAT_VERSION,
        "method": method.name,
        "config": method.config.to_dict(),
        "backbone": dict(backbone_spec),
        "num_classes": int(num_classes),
        "autopetl_version": _version(),
    }
    if backbone_init is not None:
        meta["backbone_init"] = {
            "seed": int(backbone_init["seed"]),
            "sha256": str(backbone_init["sha256"]),
        }
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


def backbone_of(meta: dict[str, Any], directory: str | Path = "") -> VisionTransformer:
    """The frozen backbone an artifact's ``method.json`` describes, built afresh.

    Raises:
        WeightsError: Real weights cannot be loaded, or a random-init backbone was not recorded
            as rebuildable (``backbone_init``), or rebuilding it gives other weights.
    """
    init = meta.get("backbone_init")
    return frozen_backbone(
        BackboneSpec(**meta["backbone"]),
        int(meta["num_classes"]),
        init if isinstance(init, dict) else None,
        where=f"the artifact in {directory}",
    )


def frozen_backbone(
    spec: BackboneSpec, num_classes: int, backbone_init: dict[str, Any] | None, *, where: str
) -> VisionTransformer:
    """The frozen backbone artifacts were trained on: real weights built as usual, a random init
    (``weights none``) rebuilt from its recorded seed and checked against its recorded digest.

    The one place both loading an artifact and serving (one backbone for many) rebuild it.

    Raises:
        WeightsError: Real weights cannot be loaded, a random init has no record of how to
            rebuild it (``backbone_init``), or rebuilding it gives other weights.
    """
    if spec.weights != "none":
        return build_backbone(spec, num_classes)
    if not backbone_init or "seed" not in backbone_init or "sha256" not in backbone_init:
        raise WeightsError(
            f"{where} was trained on a randomly initialised {spec.name} (weights none), which "
            f"cannot be rebuilt without its record (backbone_init): pass the same backbone to "
            f"load_tunable, or evaluate the configuration again with this autopetl"
        )
    backbone = rebuildable_backbone(spec, num_classes, int(backbone_init["seed"]))
    if frozen_digest(backbone) != backbone_init["sha256"]:
        raise WeightsError(
            f"rebuilding the random-init backbone of {where} from seed {backbone_init['seed']} "
            f"gave other weights than it was trained on (another timm or torch version?); "
            f"evaluate the configuration again with this installation"
        )
    return backbone


def load_tunable(directory: str | Path, backbone: VisionTransformer | None = None) -> Artifact:
    """Rebuild a saved model on a fresh frozen backbone and load its tunable weights.

    Args:
        directory: An artifact written by :func:`save_tunable`.
        backbone: The frozen backbone to attach to; it is changed in place (pass a copy to keep
            yours). When None it is built from the saved spec: real weights, or a random init
            recorded in ``backbone_init`` (rebuilt from its seed and checked against its digest).

    Raises:
        ConfigError: A file is missing or corrupt, or the weights do not fit the method.
        WeightsError: The backbone cannot be built from its spec.
    """
    meta = read_meta(directory)
    weights_path = Path(directory) / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ConfigError(f"{weights_path} does not exist; save the artifact again")
    method = build_method(meta["method"], meta["config"])
    spec = BackboneSpec(**meta["backbone"])
    num_classes = int(meta["num_classes"])
    if backbone is None:
        backbone = backbone_of(meta, directory)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {weights_path} ({exc}); save the artifact again") from exc

    # The same steps as autopetl.pipeline.attach, without copying: a fresh head, all frozen.
    backbone.reset_classifier(num_classes)
    backbone.requires_grad_(False)
    model = method.attach(backbone)
    expected = dict(model.tunable_named_parameters())
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ConfigError(
            f"{weights_path} does not fit {method.name} on {spec.name}: {detail}; "
            f"was it saved with another method, config or backbone?"
        )
    for name, param in expected.items():
        if state[name].shape != param.shape:
            raise ConfigError(
                f"{weights_path}: {name} has shape {tuple(state[name].shape)}, "
                f"the model expects {tuple(param.shape)}; was it saved with another backbone?"
            )
    model.load_state_dict(state, strict=False)
    return Artifact(model, method, spec, num_classes, meta)
