"""Prune a checkpoint folder into a new one: the function behind ``python -m study prune`` and
``notebooks/02_prune.ipynb``.

The output is a plain HF folder (safetensors + config + processor files) that stock
``from_pretrained`` loads, with ``pruning.json`` beside it: paradigm, requested and achieved
ratio, metric, removed layers and the layer map (student block -> parent block) or the kept
heads and channels of every layer, the importance scores, the calibration and the parent path.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from study.data.llava import calibration_batches
from study.models.io import load_model, save_model
from study.models.memory import peak_memory_mb
from study.pruning.prune import check_ratio, prune

PRUNING_FILE = "pruning.json"


def prune_checkpoint(
    model_dir: str | Path,
    out_dir: str | Path,
    paradigm: str,
    ratio: float,
    metric: str,
    calibration: str | Path,
    image_folder: str | Path | None = None,
    calibration_samples: int = 64,
    calibration_batch_size: int = 8,
    text_only: bool = False,
    mode: str = "query_heads",
    seed: int = 0,
    spare: tuple[int, int] = (0, 0),
) -> dict:
    """Load ``model_dir``, prune it, save it to ``out_dir``; return the ``pruning.json`` record."""
    check_ratio(ratio)
    torch.manual_seed(seed)
    model, processor = load_model(model_dir)
    needs_data = ratio > 0 and metric not in ("last", "random", "magnitude_l1", "magnitude_l2")
    batches = []
    if needs_data:
        folder = image_folder if image_folder is not None else Path(calibration).parent / "images"
        batches = calibration_batches(
            calibration, folder, processor, calibration_samples, seed, calibration_batch_size, text_only=text_only
        )
    start = time.perf_counter()
    record = prune(model, paradigm, ratio, metric, batches, mode=mode, seed=seed, spare=spare)
    record.update(
        parent=str(model_dir),
        calibration={"data": str(calibration), "samples": calibration_samples if needs_data else 0, "text_only": text_only},
        importance_seconds=time.perf_counter() - start,
        peak_mem_mb=peak_memory_mb(next(model.parameters()).device),
    )
    save_model(model, processor, out_dir)
    (Path(out_dir) / PRUNING_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def read_pruning(model_dir: str | Path) -> dict | None:
    """The ``pruning.json`` of a folder, or None for an unpruned model."""
    path = Path(model_dir) / PRUNING_FILE
    return json.loads(path.read_text()) if path.exists() else None
