"""Prune a checkpoint folder into a new one: the function behind ``python -m study prune`` and
``notebooks/02_prune.ipynb``.

The output is a plain HF folder (safetensors + config + processor files) that stock
``from_pretrained`` loads, with ``pruning.json`` beside it: paradigm, requested and achieved
ratio, metric, removed layers and the layer map (student block -> parent block) and/or the kept
heads and channels of every (remaining) layer, the importance scores, the calibration (data,
samples, ``text_only``) and the parent path, and where importance was estimated (device, dtype,
peak memory).

The model is loaded on ``device`` (``"auto"``: CUDA if available) in ``dtype`` (``"auto"``: the
checkpoint's stored dtype; see :mod:`study.models.device`) and saved in that dtype; calibration
batches of ``calibration_batch_size`` samples are streamed to it one at a time.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from study.data.llava import calibration_samples as draw_calibration
from study.data.llava import encode_batches
from study.models.device import model_device, model_dtype
from study.models.io import PRUNING_FILE, load_model, require_model_folder, save_model
from study.models.memory import peak_memory_mb, reset_peak_memory
from study.outputs import atomic_folder, check_output, write_json
from study.pruning.importance import needs_calibration
from study.pruning.prune import DEPTH_SHARE, check_method, check_ratio, prune

RUN_COST_KEYS = ("importance_seconds", "peak_mem_mb")


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
    device: str = "auto",
    dtype: str = "auto",
    depth_share: float = DEPTH_SHARE,
    overwrite: bool = False,
) -> dict:
    """Load ``model_dir``, prune it, save it to ``out_dir`` with its ``pruning.json``; return that
    record plus the run's cost (``importance_seconds``, ``peak_mem_mb``), which vary run to run
    and are left out of the folder. ``depth_share``: hybrid runs only (see
    :func:`study.pruning.prune.hybrid_split`).

    Every input is checked before the model is loaded (ratio, metric, output folder, calibration
    samples and their images); ``out_dir`` must not be ``model_dir`` (nor inside it or hold it)
    and must be empty unless ``overwrite`` (see :mod:`study.outputs`)."""
    check_ratio(ratio)
    check_method(paradigm, metric)
    if calibration_batch_size < 1:
        raise ValueError(f"calibration batch size must be >= 1, got {calibration_batch_size}")
    check_output(out_dir, [model_dir], overwrite)
    require_model_folder(model_dir)
    needs_data = ratio > 0 and needs_calibration(metric)
    folder = image_folder if image_folder is not None else Path(calibration).parent / "images"
    samples = draw_calibration(calibration, folder, calibration_samples, seed, text_only) if needs_data else []
    torch.manual_seed(seed)
    model, processor = load_model(model_dir, device=device, dtype=dtype)
    batches = encode_batches(samples, folder, processor, calibration_batch_size)
    where = model_device(model)
    reset_peak_memory(where)
    start = time.perf_counter()
    record = prune(model, paradigm, ratio, metric, batches, mode=mode, seed=seed, spare=spare, depth_share=depth_share)
    record.update(
        parent=str(model_dir),
        calibration={
            "data": str(calibration),
            "samples": calibration_samples if needs_data else 0,
            "batch_size": calibration_batch_size,
            "text_only": text_only,
        },
        importance_seconds=time.perf_counter() - start,
        peak_mem_mb=peak_memory_mb(where),
        device=str(where),
        dtype=str(model_dtype(model)).removeprefix("torch."),
    )
    # the folder's record is deterministic (what was pruned), so a rerun yields the same folder
    # and DVC skips what depends on it; the cost of the run is only in the returned record
    with atomic_folder(out_dir, [model_dir], overwrite) as tmp:
        save_model(model, processor, tmp)
        write_json({k: v for k, v in record.items() if k not in RUN_COST_KEYS}, tmp / PRUNING_FILE)
    return record


def seeds_dir(path: str | Path) -> Path:
    """Where the extra calibration seeds of a run go, beside its main output ``path`` (a model
    folder, or a ``.json`` record): ``<path without .json>-seeds``. Run names hold dots
    (``width-taylor-0.3``), so only ``.json`` counts as a suffix."""
    path = Path(path)
    return path.with_name(f"{path.name.removesuffix('.json')}-seeds")


def prune_seeds(
    model_dir: str | Path,
    out_dir: str | Path,
    record_out: str | Path,
    extra_seeds: list[int],
    seed: int = 0,
    overwrite: bool = False,
    timings_dir: str | Path | None = None,
    **options,
) -> list[dict]:
    """One run at every calibration seed: :func:`prune_checkpoint` with ``seed`` to ``out_dir``
    (record to ``record_out``), then once per extra seed to ``<out_dir>-seeds/<run>-s<seed>``
    (record ``<record_out stem>-seeds/<run>-s<seed>.json``), where ``<run>`` is ``out_dir``'s
    name. The seeds directories always exist (empty without extra seeds), so a pipeline can
    declare them; with ``overwrite`` their old content goes first (no stale seeds from an earlier
    declaration), without it a non-empty one is refused. The records are the folders'
    ``pruning.json``; each run's cost (:data:`RUN_COST_KEYS`) goes to ``<timings_dir>/<run>.json``
    when ``timings_dir`` is given. Returns the records with their cost, main seed first."""
    if seed in extra_seeds or len(set(extra_seeds)) != len(extra_seeds):
        raise ValueError(f"extra seeds must be distinct and differ from the main seed {seed}, got {extra_seeds}")
    run = Path(out_dir).name
    models, records = seeds_dir(out_dir), seeds_dir(record_out)
    for folder in (out_dir, models, records):
        check_output(folder, [model_dir], overwrite)
    for folder in (models, records):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    jobs = [(seed, Path(out_dir), Path(record_out))] + [(s, models / f"{run}-s{s}", records / f"{run}-s{s}.json") for s in extra_seeds]
    results = []
    for s, folder, record_path in jobs:
        record = prune_checkpoint(model_dir, folder, seed=s, overwrite=overwrite, **options)
        write_json({k: v for k, v in record.items() if k not in RUN_COST_KEYS}, record_path)
        if timings_dir is not None:
            write_json({"run": folder.name, **{k: record[k] for k in RUN_COST_KEYS}}, Path(timings_dir, f"{folder.name}.json"))
        results.append(record)
    return results
