"""One frozen backbone in memory, many tasks' tunable weights attached to it (no Ray here).

PETL's point is that tasks differ by a few hundred kilobytes. :class:`SharedBackbone` builds the
frozen backbone once; each task's model is a *structural* copy of it (its own module tree, so
methods that patch layers or add prompts do not interfere) whose frozen parameters and buffers
are the very same tensors as the shared backbone's: ``copy.deepcopy`` with a memo that maps each
frozen tensor to itself. Only what the task's artifact holds (the tunable parameters, head
included) is copied and then overwritten from ``tunable.safetensors``. Which backbone tensors an
artifact overwrites is read from its safetensors keys (PetlModel names the backbone
``backbone.``): methods such as BitFit, Partial or Full train the backbone's own tensors, so those
must not be shared. After loading, no tunable tensor may be shared; this is checked.

Artifacts are read only through :mod:`autopetl.methods.io` (safetensors and JSON, no pickle).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from timm.models.vision_transformer import VisionTransformer

from autopetl.backbones import BackboneSpec, input_stats
from autopetl.errors import ConfigError
from autopetl.methods.base import PetlModel
from autopetl.methods.io import (
    WEIGHTS_FILE,
    file_sha256,
    frozen_backbone,
    load_tunable,
    read_meta,
)
from autopetl.tasks.data import normalize


@dataclass
class TaskModel:
    """One task's model, ready for inference."""

    task: str
    model: PetlModel
    num_classes: int
    method: str


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    return (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())


def _tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    return [*module.parameters(), *module.buffers()]


def storage_bytes(tensors: list[torch.Tensor], exclude: set[tuple[int, int]] | None = None) -> int:
    """Bytes of the distinct storages behind ``tensors`` (shared ones counted once)."""
    seen = {k for t in tensors if (k := _storage_key(t)) not in (exclude or set())}
    return sum(n for _, n in seen)


class SharedBackbone:
    """The frozen backbone of one spec, built once, and the task models that share its tensors.

    Args:
        spec: ``BackboneSpec.to_dict()``.
        backbone_init: For a random-init spec (``weights none``), the artifact's ``backbone_init``
            (seed and digest); the backbone is rebuilt from the seed and checked.
    """

    def __init__(self, spec: dict[str, Any], backbone_init: dict[str, Any] | None = None) -> None:
        self.spec = BackboneSpec(**spec)
        self.backbone_init = dict(backbone_init) if backbone_init else None
        base = frozen_backbone(self.spec, 0, self.backbone_init, where="the served artifacts")
        base.requires_grad_(False)
        self.base: VisionTransformer = base.eval()
        self.mean, self.std = input_stats(base)
        self._shared = {_storage_key(t) for t in _tensors(base)}

    def load(self, task: str, directory: str | Path, sha256: str | None = None) -> TaskModel:
        """Attach one task's artifact to a copy of the backbone that shares its frozen tensors.

        Raises:
            ConfigError: The artifact is missing, corrupt, altered (``sha256`` differs) or was
                trained on another backbone.
            WeightsError: Its method cannot be attached.
        """
        directory = Path(directory)
        weights = directory / WEIGHTS_FILE
        meta = read_meta(directory)
        if not weights.is_file():
            raise ConfigError(f"{weights} does not exist; evaluate the configuration again")
        if sha256 is not None and file_sha256(weights) != sha256:
            raise ConfigError(
                f"{weights} does not match the SHA-256 the store recorded; it was changed or "
                f"damaged after evaluation"
            )
        if BackboneSpec(**meta["backbone"]) != self.spec:
            raise ConfigError(
                f"{directory} was trained on {meta['backbone']}, not on the served backbone "
                f"{self.spec.to_dict()}"
            )
        if self.spec.weights == "none" and meta.get("backbone_init") != self.backbone_init:
            raise ConfigError(
                f"{directory} was trained on another random-init backbone "
                f"({meta.get('backbone_init')}) than the served one ({self.backbone_init})"
            )
        try:
            with safe_open(str(weights), framework="pt") as f:
                keys = set(f.keys())
        except Exception as exc:  # safetensors raises several types for a damaged header
            raise ConfigError(f"cannot read {weights} ({exc}); evaluate it again") from exc
        # Share every frozen tensor the artifact does not overwrite; copy the rest.
        memo: dict[int, Any] = {
            id(p): p for name, p in self.base.named_parameters() if f"backbone.{name}" not in keys
        }
        memo.update(
            {id(b): b for name, b in self.base.named_buffers() if f"backbone.{name}" not in keys}
        )
        net = copy.deepcopy(self.base, memo)
        artifact = load_tunable(directory, backbone=net)
        model = artifact.model.eval()
        tunable = {_storage_key(p) for _, p in model.tunable_named_parameters()}
        if tunable & self._shared:
            raise ConfigError(
                f"{artifact.method.name} trains a tensor of the shared backbone under another "
                f"name; it cannot share the frozen weights"
            )
        model.requires_grad_(False)  # inference only; autograd bookkeeping is wasted work
        return TaskModel(task, model, artifact.num_classes, artifact.method.name)

    @torch.inference_mode()
    def predict(self, task_model: TaskModel, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities [N, C] for uint8 images [N, 3, S, S] (fp32, eval mode)."""
        logits = task_model.model(normalize(images, self.mean, self.std))
        return torch.softmax(logits.float(), dim=-1)

    @torch.inference_mode()
    def predict_mixed(
        self, mixed: torch.nn.Module, images: torch.Tensor, tasks: torch.Tensor
    ) -> list[torch.Tensor]:
        """Class probabilities of each uint8 image ``images[j]`` from task ``tasks[j]`` of a
        :class:`~autopetl.serving.mixed.MixedTaskModel`, in one pass (a list: tasks have their
        own numbers of classes)."""
        logits = mixed(normalize(images, self.mean, self.std), tasks)
        return [torch.softmax(row.float(), dim=-1) for row in logits]

    def memory(self, models: list[TaskModel]) -> dict[str, Any]:
        """Bytes held: the shared frozen tensors once, each task's own tensors, and what the same
        models would take with a full copy of the backbone each."""
        shared = storage_bytes(_tensors(self.base))
        private = {m.task: storage_bytes(_tensors(m.model), self._shared) for m in models}
        unshared = sum(storage_bytes(_tensors(m.model)) for m in models)
        # Without sharing, each model holds its own copy of every tensor it uses.
        total = shared + sum(private.values())
        return {
            "tasks": len(models),
            "shared_frozen_bytes": shared,
            "task_private_bytes": private,
            "total_bytes": total,
            "without_sharing_bytes": unshared,
            "saved_bytes": unshared - total,
        }


def backbone_key(spec: dict[str, Any]) -> str:
    """A short stable name for a backbone spec (deployment names)."""
    canon = json.dumps(spec, sort_keys=True)
    name = "".join(c if c.isalnum() else "-" for c in str(spec.get("name", "vit")))[:40]
    return f"{name}-{hashlib.sha256(canon.encode()).hexdigest()[:8]}"
