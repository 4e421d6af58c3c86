"""The Python API: a found configuration in your own training code, in the spirit of peft.

::

    import autopetl
    model = autopetl.attach(vit, "lora", rank=4, num_classes=10)   # any timm ViT
    model.tunable_named_parameters()                                # what your optimiser gets
    autopetl.save(model, "my-lora")                                 # safetensors + method.json
    model = autopetl.load("my-lora", vit)                           # on a frozen backbone

These are the functions the CLI's trials use (``pipeline.attach``, ``methods.io``): a model
trained here and one trained by ``autopetl train`` save the same artifact, which ``autopetl
serve`` can serve when its backbone can be rebuilt (``weights``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from timm.models.vision_transformer import VisionTransformer

from autopetl.backbones import BackboneSpec, family_of
from autopetl.methods import METHODS, PetlModel, build_method
from autopetl.methods.io import load_tunable, save_tunable
from autopetl.pipeline import attach as _attach

__all__ = ["attach", "list_methods", "load", "save"]


def list_methods() -> dict[str, dict[str, Any]]:
    """Every method by name, with its options' defaults (pass any of them to :func:`attach`)."""
    return {name: build_method(name).config.to_dict() for name in sorted(METHODS)}


def attach(
    backbone: VisionTransformer,
    method: str,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    copy: bool = True,
    **options: Any,
) -> PetlModel:
    """Freeze ``backbone`` and add ``method``'s tunable parts (and a fresh head) to it.

    Args:
        backbone: A timm VisionTransformer (any size, input size, register tokens), or a timm
            SwinTransformer for the methods that apply to one (``linear``, ``full``, ``bias``,
            ``vpt``; the others raise a ConfigError that says so).
        method: A name from :func:`list_methods` (``vpt``, ``dvpt``, ``lora``, ``adapter``...).
        num_classes: Classes of the new head; default: the backbone's own head size.
        seed: Seeds the new parameters (prompts, LoRA matrices, the head).
        copy: Work on a copy of ``backbone`` (default), so it stays usable as it was.
        **options: The method's options, e.g. ``rank=4`` for LoRA, ``prompt_length=50,
            deep=True`` for VPT; an unknown option or a bad value raises a ConfigError that
            names it.

    Returns:
        The model: its ``tunable_named_parameters()`` are the only ones with gradients, and
        ``num_tunable()`` counts them (head included).
    """
    if family_of(backbone) is None:
        raise TypeError(
            f"autopetl adapts timm VisionTransformers and SwinTransformers; got "
            f"{type(backbone).__name__}"
        )
    built = build_method(method, options)
    if num_classes is not None and num_classes != backbone.num_classes:
        if copy:
            import copy as copying

            backbone = copying.deepcopy(backbone)
        backbone.reset_classifier(num_classes)
        copy = False  # already a private copy (or the caller's own, as asked)
    model = _attach(backbone, built, seed=seed, copy_backbone=copy)
    model.petl_method = built  # what save() writes into method.json
    return model


def save(model: PetlModel, directory: str | Path, *, weights: str = "hub") -> Path:
    """Write the model's tunable weights (``tunable.safetensors``) and ``method.json``.

    Args:
        model: A model from :func:`attach` (or :func:`load`).
        directory: Created if needed; the two files in it are replaced.
        weights: How to rebuild the frozen backbone, recorded for ``load(directory)`` without a
            backbone and for ``autopetl serve``: ``hub`` (timm's pretrained weights of the
            backbone's name), a weights file, or ``none`` for a random init you will not serve.

    Returns:
        ``directory`` as a Path.
    """
    method = getattr(model, "petl_method", None)
    if method is None:
        raise TypeError("save() takes a model made by autopetl.attach() or autopetl.load()")
    backbone = model.backbone
    name = str((getattr(backbone, "pretrained_cfg", None) or {}).get("architecture", ""))
    if not name:
        raise ValueError("the backbone has no timm architecture name (pretrained_cfg)")
    spec = BackboneSpec(name=name, weights=weights, img_size=int(backbone.patch_embed.img_size[0]))
    return save_tunable(model, method, spec.to_dict(), int(backbone.num_classes), directory)


def load(directory: str | Path, backbone: VisionTransformer | None = None) -> PetlModel:
    """The model saved in ``directory``, on ``backbone`` (changed in place) or on a backbone
    rebuilt from what :func:`save` recorded; the weights are checked against the method."""
    artifact = load_tunable(directory, backbone)
    model = artifact.model
    model.petl_method = artifact.method
    return model
