"""benchmarks/perf.py, part 4: peak memory of one trial's training step, per method.

On CPU the process's resident set is shared by Python, torch, Ray and the data, and only grows
(``ru_maxrss``), so it cannot say what one trial costs. Instead every tensor storage a training step
holds is accounted exactly, by a dispatch mode that registers each op's output storage and a weak
reference that unregisters it when the storage is freed (the technique of torch's own
``MemTracker``, which fails on models with frozen parameters). Registered up front: the model's
parameters and buffers that are the trial's own (a trial of a method that changes the backbone
trains on its own deep copy of it, so the copy counts; the others use the worker's one frozen
backbone as it is, as ``run_trial`` does, and only their added modules and head count), the
gradients left from the previous step and the optimiser state. The peak of all live
bytes over one steady-state step (after a warm-up step created the optimiser state) is the trial's
memory; the uint8 input batch itself is not counted.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import torch
from _perf_compute import make_step
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from autopetl.methods import build_method
from autopetl.pipeline import attach


class LiveBytes(TorchDispatchMode):
    """Bytes of live tensor storages that were registered or produced by an op, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, weakref.ref] = {}
        self.ignored: set[int] = set()
        self.current = 0
        self.peak = 0

    def ignore(self, tensor: torch.Tensor) -> None:
        """Never count this tensor's storage, nor the views ops make of it (a transpose of a
        weight is an op output on the weight's own storage)."""
        self.ignored.add(tensor.untyped_storage()._cdata)

    def add(self, tensor: torch.Tensor) -> int:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self.live or key in self.ignored:
            return 0
        size = storage.nbytes()

        def gone(_ref: Any, key: int = key, size: int = size) -> None:
            if self.live.pop(key, None) is not None:
                self.current -= size

        self.live[key] = weakref.ref(storage, gone)
        self.current += size
        self.peak = max(self.peak, self.current)
        return size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.add(t)
        return out


def _mib(n: float) -> float:
    return n / 2**20


def method_memory(
    backbone: torch.nn.Module,
    configs: list[tuple[str, str, dict[str, Any], float]],
    images: torch.Tensor,
    labels: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    precision: str,
    timed_steps: int = 2,
) -> list[dict[str, Any]]:
    rows = []
    for label, method, values, lr in configs:
        petl = build_method(method, values)
        # As a search worker does it (autopetl.search.trainable.run_trial).
        model = attach(backbone, petl, seed=0, copy_backbone=petl.changes_backbone)
        step, optimizer = make_step(model, images, labels, mean, std, precision, lr=lr)
        step()  # optimiser state exists from here on
        tracker = LiveBytes()
        if not petl.changes_backbone:  # the worker's backbone, not this trial's
            for name, t in [*backbone.named_parameters(), *backbone.named_buffers()]:
                if not name.startswith("head."):
                    tracker.ignore(t)
        params = sum(tracker.add(t) for t in [*model.parameters(), *model.buffers()])
        grads = sum(tracker.add(p.grad) for p in model.parameters() if p.grad is not None)
        state = [
            v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)
        ]
        opt = sum(tracker.add(t) for t in state)
        persistent = tracker.current
        with tracker:
            step()
        times = []
        for _ in range(timed_steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        rows.append(
            {
                "config": label,
                "method": method,
                "precision": precision,
                "tunable_params": model.num_tunable(),
                "copies_backbone": petl.changes_backbone,
                "peak_total_mib": _mib(tracker.peak),
                "params_mib": _mib(params),
                "grads_mib": _mib(grads),
                "optimizer_mib": _mib(opt),
                "step_transient_peak_mib": _mib(tracker.peak - persistent),
                "step_s": min(times),
                "images_per_s": len(labels) / min(times),
            }
        )
        r = rows[-1]
        print(
            f"  {label:24s} peak {r['peak_total_mib']:7.1f} MiB (params {r['params_mib']:.0f}, "
            f"grads {r['grads_mib']:.1f}, opt {r['optimizer_mib']:.1f}, step transient "
            f"{r['step_transient_peak_mib']:.0f})  {r['images_per_s']:.1f} img/s",
            flush=True,
        )
        del model, step, optimizer, tracker
    return rows
