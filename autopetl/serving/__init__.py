"""Serving: many tasks' PETL weights on one frozen backbone, with Ray Serve (docs/SERVING.md).

- :mod:`~autopetl.serving.catalog`: what to serve, chosen through the store;
- :mod:`~autopetl.serving.models`: one shared frozen backbone and the task models on it (no Ray);
- :mod:`~autopetl.serving.images`: untrusted image bytes to tensors, with limits;
- :mod:`~autopetl.serving.app`: the FastAPI ingress and the per-backbone deployments.

Ray and FastAPI are imported by :mod:`~autopetl.serving.app` only.
"""

from __future__ import annotations

from autopetl.serving.catalog import (
    ServedTask,
    ServeError,
    check_servable,
    for_search,
    for_tasks,
    for_trial,
)
from autopetl.serving.images import ImageError, ImageLimits, preprocess
from autopetl.serving.models import SharedBackbone, TaskModel

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
