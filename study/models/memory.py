"""Peak memory of this process on its device, for efficiency and importance-estimation reports."""

from __future__ import annotations

import ctypes
import platform
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


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter: allocations this large get their own mapping
OWN_MAPPING_BYTES = 1 << 20


def return_freed_memory_at_once() -> None:
    """On glibc, give every allocation of 1 MiB or more its own mapping (``mallopt``), so a freed
    tensor goes back to the system at once. Pruning calls it: slicing frees each full-width weight
    after its kept slice is written, and in glibc's heap the freed blocks stay part of the
    process (about 80 MB a layer of a 7B model). Elsewhere (not glibc) it does nothing."""
    if platform.libc_ver()[0] == "glibc":
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, OWN_MAPPING_BYTES)
