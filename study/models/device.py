"""Where a model runs: the ``device`` and ``dtype`` parameters of the prune and evaluate stages,
and moving a batch to the model.

- ``device``: ``"auto"`` is CUDA when it is available, else the CPU; any other value is a torch
  device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).
- ``dtype``: ``"auto"`` keeps the checkpoint's stored dtype (what ``from_pretrained(dtype="auto")``
  reads from ``config.json``, else from the weights); ``"float32"``, ``"bfloat16"`` or
  ``"float16"`` cast the weights on load.

Batches are built on the CPU (calibration data, encoded prompts) and moved one at a time, so a
stream of calibration batches never sits on the GPU at once.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from study.config.vocabulary import DTYPES

_SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) -> ``cuda`` if available else ``cpu``; otherwise the named device."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'auto' or a torch device such as 'cpu', 'cuda' or 'cuda:1', got {device!r}") from err


def resolve_dtype(dtype: str | torch.dtype | None = "auto") -> str | torch.dtype:
    """``"auto"`` (or None) stays ``"auto"`` (the checkpoint's dtype); a name becomes a torch dtype."""
    if dtype is None or dtype == "auto":
        return "auto"
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return getattr(torch, dtype)


def stored_dtype(model_dir: str | Path) -> torch.dtype:
    """The dtype a checkpoint folder is stored in: ``config.json``'s ``dtype`` (``torch_dtype`` in
    older files), else that of its first floating-point tensor, as ``dtype="auto"`` loads it."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype")
    if isinstance(name, str) and name in DTYPES[1:]:
        return getattr(torch, name)
    from safetensors import safe_open

    for shard in sorted(model_dir.glob("*.safetensors")):
        with safe_open(shard, "pt") as f:
            for key in f.keys():
                found = _SAFETENSORS_DTYPES.get(f.get_slice(key).get_dtype())
                if found is not None:
                    return found
    return torch.float32


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter."""
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


def move_to_model(batch: dict, model: torch.nn.Module) -> dict:
    """The batch's tensors on the model's device, the floating-point ones (``pixel_values``) in its
    dtype; token ids and masks keep theirs."""
    device, dtype = model_device(model), model_dtype(model)
    return {
        k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }
