"""autopetl: find, train and serve the best parameter-efficient adaptation of a frozen ViT.

The Python API (:mod:`autopetl.api`) is importable from here: ``autopetl.attach``,
``autopetl.save``, ``autopetl.load``, ``autopetl.list_methods``. It is loaded on first use, so
``autopetl --help`` does not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["attach", "list_methods", "load", "save"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from autopetl import api

        return getattr(api, name)
    raise AttributeError(f"module 'autopetl' has no attribute {name!r}")
