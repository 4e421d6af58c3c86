"""Frozen features shared by the head-only runs of one process (a search worker's trials).

A linear or MLP head on a frozen backbone sees the same features in every epoch, so training
computes them once per run (``TrainConfig.cache_features``, 8x faster for 10 epochs). A search
worker runs many such trials on the same backbone and the same data, differing only in the
head's learning rate, weight decay or depth: each of them paid the same forward pass again. This
cache keeps the features between runs.

An entry is valid for one backbone object (frozen and never changed: search workers lend their
backbone only to methods whose ``changes_backbone`` is False, and a copied backbone is another
object), one set of images (by content digest), one normalisation, precision and device. A weak
reference to the backbone guards against a new object reusing a freed one's ``id``.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch


def content_digest(tensor: torch.Tensor) -> str:
    """A digest of a tensor's values (and shape and dtype): same images, same digest."""
    data = tensor.detach().cpu().contiguous()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{tuple(data.shape)} {data.dtype}".encode())
    h.update(data.view(torch.uint8).numpy().data if data.numel() else b"")
    return h.hexdigest()


class FeatureCache:
    """Least-recently-used features, at most ``max_entries`` sets (a few MB each)."""

    def __init__(self, max_entries: int = 4) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[weakref.ref, torch.Tensor]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def features(
        self,
        backbone: torch.nn.Module,
        images: torch.Tensor,
        settings: Hashable,
        compute: Callable[[], torch.Tensor],
    ) -> torch.Tensor:
        """The features of ``images`` through ``backbone``, computed by ``compute`` on a miss.

        ``settings`` holds everything else the features depend on (normalisation, precision,
        device).
        """
        key = (id(backbone), content_digest(images), settings)
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is backbone:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]
        self.misses += 1
        value = compute()
        self._entries[key] = (weakref.ref(backbone), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value
