"""Prune a checkpoint folder into a new one: the function behind ``python -m study prune`` and
``notebooks/02_prune.ipynb``.

The output is a plain HF folder (safetensors + config + processor files) that stock
``from_pretrained`` loads, with ``pruning.json`` beside it: paradigm, requested and achieved
ratio, metric, removed layers and the layer map (student block -> parent block) and/or the kept
heads and channels of every (remaining) layer, the importance scores, the calibration (data,
samples, ``text_only``) and the parent path, and where importance was estimated (device, dtype,
peak memory).

The settings are a :class:`study.config.sections.PruneConfig` (the ``prune`` section of
``params.yaml``, or the command line's options): the model is loaded on ``device`` (``"auto"``:
CUDA if available) in ``dtype`` (``"auto"``: the checkpoint's stored dtype) and saved in that
dtype; calibration batches of ``calibration_batch_size`` samples are streamed to it one at a time.
The record's ``identity`` says which run the folder is (:mod:`study.records`).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from study.config.sections import PruneConfig
from study.config.vocabulary import check_ratio
from study.data.llava import calibration_samples as draw_calibration
from study.data.llava import encode_batches
from study.models.device import model_device, model_dtype
from study.models.io import load_model, require_model_folder, save_model
from study.models.memory import peak_memory_mb, reset_peak_memory, return_freed_memory_at_once
from study.outputs import atomic_folder, check_output, write_json
from study.pruning.importance import importance_scores
from study.pruning.prune import prune
from study.records import PRUNING_FILE, Method, pruned_identity

RUN_COST_KEYS = ("importance_seconds", "peak_mem_mb")


def load_for_pruning(cfg: PruneConfig):
    """``cfg.model_dir`` as pruning loads it: the weights read into memory, and freed memory given
    back at once (:func:`study.models.memory.return_freed_memory_at_once`), so that each full-width
    weight leaves the process when its slice replaces it."""
    return_freed_memory_at_once()
    return load_model(cfg.model_dir, device=cfg.device, dtype=cfg.dtype, in_memory=True)


def prune_checkpoint(
    out_dir: str | Path,
    method: Method | str,
    level: float,
    cfg: PruneConfig,
    seed: int | None = None,
    spare: tuple[int, int] = (0, 0),
    scores: dict | None = None,
) -> dict:
    """Load ``cfg.model_dir``, prune it with ``method`` at ``level``, save it to ``out_dir`` with
    its ``pruning.json``; return that record plus the run's cost (``importance_seconds``,
    ``peak_mem_mb``), which vary run to run and are left out of the folder. The run is named after
    ``out_dir``; ``seed`` (default ``cfg.seed``) draws the calibration samples. ``scores``: the
    importance of this method and seed computed beforehand (:func:`score_seeds`); then only a
    hybrid's width half reads calibration data.

    Every input is checked before the model is loaded (level, method, output folder, calibration
    samples and their images); ``out_dir`` must not be the model folder (nor inside it or hold
    it) and must be empty unless ``cfg.overwrite`` (see :mod:`study.outputs`)."""
    method = Method.parse(method) if isinstance(method, str) else method
    seed = cfg.seed if seed is None else seed
    check_ratio(level)
    check_output(out_dir, [cfg.model_dir], cfg.overwrite)
    require_model_folder(cfg.model_dir)
    calibrated = level > 0 and method.calibration != "none"  # in this run, or in the pass that computed scores
    needs_data = calibrated and (scores is None or method.paradigm == "hybrid")
    folder = cfg.calibration_images
    samples = draw_calibration(cfg.calibration, folder, cfg.calibration_samples, seed, method.text_only) if needs_data else []
    torch.manual_seed(seed)
    model, processor = load_for_pruning(cfg)
    batches = encode_batches(samples, folder, processor, cfg.calibration_batch_size)
    where = model_device(model)
    reset_peak_memory(where)
    start = time.perf_counter()
    record = prune(
        model,
        method.paradigm,
        level,
        method.metric,
        batches,
        mode=cfg.mode,
        seed=seed,
        spare=spare,
        depth_share=cfg.depth_share,
        round_to=cfg.round_to,
        scores=scores,
        match_budget=cfg.match_budget,
    )
    record = {
        "identity": pruned_identity(Path(out_dir).name, method, level, record["achieved_ratio"], seed),
        **record,
        "parent": str(cfg.model_dir),
        "calibration": {
            "data": str(cfg.calibration),
            "samples": cfg.calibration_samples if calibrated else 0,
            "batch_size": cfg.calibration_batch_size,
            "text_only": method.text_only,
        },
        "importance_seconds": time.perf_counter() - start,
        "device": str(where),
        "dtype": str(model_dtype(model)).removeprefix("torch."),
    }
    # the folder's record is deterministic (what was pruned), so a rerun yields the same folder
    # and DVC skips what depends on it; the cost of the run is only in the returned record
    with atomic_folder(out_dir, [cfg.model_dir], cfg.overwrite) as tmp:
        save_model(model, processor, tmp)
        write_json({k: v for k, v in record.items() if k not in RUN_COST_KEYS}, tmp / PRUNING_FILE)
    return record | {"peak_mem_mb": peak_memory_mb(where)}  # loading, importance, slicing and writing the folder


def seeds_dir(path: str | Path) -> Path:
    """Where the extra calibration seeds of a run go, beside its main output ``path`` (a model
    folder, or a ``.json`` record): ``<path without .json>-seeds``. Run names hold dots
    (``width-taylor-0.3``), so only ``.json`` counts as a suffix."""
    path = Path(path)
    return path.with_name(f"{path.name.removesuffix('.json')}-seeds")


def prune_seeds(cfg: PruneConfig) -> list[dict]:
    """The run ``cfg.method`` at ``cfg.level`` at every calibration seed: with ``cfg.seed`` to
    ``cfg.out_dir`` (record to ``cfg.record_out``), then once per extra seed to
    ``<out_dir>-seeds/<run>-s<seed>`` (record ``<record_out stem>-seeds/<run>-s<seed>.json``),
    where ``<run>`` is ``out_dir``'s name. The seeds directories always exist (empty without extra
    seeds), so a pipeline can declare them; with ``overwrite`` their old content goes first (no
    stale seeds from an earlier declaration), without it a non-empty one is refused. The records
    are the folders' ``pruning.json``; each run's cost (:data:`RUN_COST_KEYS`) goes to
    ``<timings_dir>/<run>.json``. Returns the records with their cost, main seed first."""
    missing = [name for name in ("method", "level", "out_dir", "record_out") if getattr(cfg, name) is None]
    if missing:
        raise ValueError(f"a prune run needs {missing}")
    run = Path(cfg.out_dir).name
    models, records = seeds_dir(cfg.out_dir), seeds_dir(cfg.record_out)
    for folder in (cfg.out_dir, models, records):
        check_output(folder, [cfg.model_dir], cfg.overwrite)
    for folder in (models, records):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    jobs = [(cfg.seed, Path(cfg.out_dir), Path(cfg.record_out))]
    jobs += [(s, models / f"{run}-s{s}", records / f"{run}-s{s}.json") for s in cfg.extra_seeds]
    scores = read_importance(cfg) if cfg.importance else {}
    results = []
    for seed, folder, record_path in jobs:
        record = prune_checkpoint(folder, cfg.method, cfg.level, cfg, seed=seed, scores=scores.get(seed))
        write_json({k: v for k, v in record.items() if k not in RUN_COST_KEYS}, record_path)
        write_json({"run": folder.name, **{k: record[k] for k in RUN_COST_KEYS}}, Path(cfg.timings_dir, f"{folder.name}.json"))
        results.append(record)
    return results


# the settings an importance file was computed with: a run reads it only if its own are the same
IMPORTANCE_KEYS = ("model_dir", "calibration", "image_folder", "calibration_samples", "calibration_batch_size", "device", "dtype")


def score_seeds(cfg: PruneConfig) -> dict:
    """One importance pass of ``cfg.method`` per calibration seed (``cfg.seed`` and
    ``cfg.extra_seeds``), on ``cfg.model_dir`` loaded once, written to ``cfg.importance``
    (:func:`study.pruning.importance.importance_scores`: what serves every level); each seed's
    cost goes to ``<timings_dir>/importance-<method>-s<seed>.json``. Returns the file's content."""
    if cfg.method is None or cfg.importance is None:
        raise ValueError("an importance pass needs method and importance (the file to write)")
    method = Method.parse(cfg.method)
    require_model_folder(cfg.model_dir)
    folder = cfg.calibration_images
    seeds = [cfg.seed, *cfg.extra_seeds]
    samples = (
        {s: draw_calibration(cfg.calibration, folder, cfg.calibration_samples, s, method.text_only) for s in seeds}
        if (method.calibration != "none")
        else dict.fromkeys(seeds, [])
    )
    model, processor = load_for_pruning(cfg)
    out = {"method": method.name, "settings": {k: getattr(cfg, k) for k in IMPORTANCE_KEYS}, "seeds": {}}
    for seed in seeds:
        torch.manual_seed(seed)
        where = model_device(model)
        reset_peak_memory(where)
        start = time.perf_counter()
        batches = encode_batches(samples[seed], folder, processor, cfg.calibration_batch_size)
        out["seeds"][seed] = importance_scores(model, method.paradigm, method.metric, batches, seed)
        cost = {"importance_seconds": time.perf_counter() - start, "peak_mem_mb": peak_memory_mb(where)}
        write_json({"run": f"importance-{method.name}-s{seed}", **cost}, Path(cfg.timings_dir, f"importance-{method.name}-s{seed}.json"))
    Path(cfg.importance).parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, cfg.importance)
    return out


def read_importance(cfg: PruneConfig) -> dict:
    """``{seed: scores}`` from ``cfg.importance``; an error when the file holds another method or
    was computed with other settings (see :data:`IMPORTANCE_KEYS`)."""
    content = torch.load(cfg.importance, weights_only=True)
    method = Method.parse(cfg.method).name
    settings = {k: getattr(cfg, k) for k in IMPORTANCE_KEYS}
    if content["method"] != method or content["settings"] != settings:
        raise ValueError(
            f"{cfg.importance} holds {content['method']} with {content['settings']}, not {method} with {settings}: compute it again"
        )
    missing = [s for s in (cfg.seed, *cfg.extra_seeds) if s not in content["seeds"]]
    if missing:
        raise ValueError(f"{cfg.importance} has no scores for calibration seed(s) {missing}: compute it again")
    return content["seeds"]
