"""A training run's own peak memory, not its worker's.

A Ray worker trains trial after trial; the process's lifetime high-water mark gave each trial
the largest peak of any before it (1410, 1634, 1842, 2000 MB for four trials in a row, a 0.3 s
linear probe among them). Each run resets the peak when it starts and reads it when it ends.
"""

from __future__ import annotations

import contextlib
import re
import resource
from pathlib import Path

import torch


def reset_peak_memory(device: torch.device) -> None:
    """Start this run's peak from what the process holds now: a worker trains many trials, and
    its lifetime peak would give each trial the largest of those before it."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):  # Linux >= 4.0: "5" resets the resident set's peak
        _CLEAR_REFS.write_text("5")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError, AttributeError):
        # VmHWM: the peak resident set since the reset above (Linux reports kB).
        found = re.search(r"^VmHWM:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
        return int(found.group(1)) / 1024  # type: ignore[union-attr]
    # Elsewhere the process's lifetime peak is all there is.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")
