"""Peak memory of this process on its device, for efficiency and importance-estimation reports."""

from __future__ import annotations

import resource
import sys

import torch


def reset_peak_memory(device: torch.device) -> None:
    """Start a new CUDA peak (``torch.cuda.max_memory_allocated``); the CPU's peak RSS cannot be reset."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """On CUDA the peak allocated memory since the last :func:`reset_peak_memory`; on the CPU the
    process's peak resident set size (everything it ever held)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux
