"""Serving: many tasks' PETL weights on one frozen backbone, with Ray Serve (docs/SERVING.md).

- :mod:`~autopetl.serving.catalog`: what to serve, chosen through the store;
- :mod:`~autopetl.serving.models`: one shared frozen backbone and the task models on it (no Ray);
- :mod:`~autopetl.serving.images`: untrusted image bytes to tensors, with limits;
- :mod:`~autopetl.serving.app`: the FastAPI ingress and the per-backbone deployments.

Ray and FastAPI are imported by :mod:`~autopetl.serving.app` only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from autopetl.serving.catalog import (
    ServedTask,
    ServeError,
    check_servable,
    for_search,
    for_tasks,
    for_trial,
)

if TYPE_CHECKING:
    from autopetl.serving.images import ImageError, ImageLimits, preprocess
    from autopetl.serving.models import SharedBackbone, TaskModel

# The catalog reads the store only; images and models need torch, and are imported on first use,
# so that `serve` refuses what it cannot serve without loading torch.
_LAZY = {
    "ImageError": "images",
    "ImageLimits": "images",
    "preprocess": "images",
    "SharedBackbone": "models",
    "TaskModel": "models",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ImageError",
    "ImageLimits",
    "ServeError",
    "ServedTask",
    "SharedBackbone",
    "TaskModel",
    "check_servable",
    "for_search",
    "for_tasks",
    "for_trial",
    "preprocess",
]
