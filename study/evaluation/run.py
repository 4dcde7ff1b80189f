"""One run's evaluation, start to end: load the checkpoint, score the benchmarks (with the project's
evaluator, or with lmms-eval: :mod:`study.evaluation.lmms`), measure efficiency, optionally the
layer-skip ablation, and write the metrics record (JSON), the predictions and the measured timings. The evaluation notebook calls it once per model, so that one kernel can
evaluate every recovered model of a student (start-up and imports are paid once)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from study.config.sections import EvaluateConfig
from study.config.vocabulary import BACKENDS, LMMS_EVAL, STUDY
from study.data.llava import calibration_batches
from study.evaluation.ablation import layer_skip_ablation
from study.evaluation.benchmark import evaluate, metrics_record
from study.evaluation.efficiency import measure_efficiency, split_timings
from study.evaluation.generate import encode_prompts
from study.evaluation.lmms import evaluate_with_lmms, require_lmms
from study.evaluation.records import write_run
from study.models.io import load_model
from study.records import model_identity


def models_under(root: str | Path) -> list[Path]:
    """Every model folder directly under ``root``, sorted (an empty ``root`` has none); each one's
    record says which run it is (:func:`study.records.model_identity`)."""
    return sorted(p.parent for p in Path(root).glob("*/config.json"))


def evaluation_jobs(cfg: EvaluateConfig) -> list[tuple[Path, Path, Path | None]]:
    """(model folder, metrics JSON, predictions JSONL) of each folder ``cfg`` names: ``model_dir``,
    then each folder under ``models_root``, written as ``<metrics_dir>/<run>.json`` (the folders
    are made even when ``models_root`` holds no model, as for a run without extra seeds)."""
    jobs = (
        [] if cfg.model_dir is None else [(Path(cfg.model_dir), Path(cfg.metrics_out), cfg.predictions_out and Path(cfg.predictions_out))]
    )
    if cfg.models_root is not None:
        for folder in (cfg.metrics_dir, cfg.predictions_dir):
            Path(folder).mkdir(parents=True, exist_ok=True)
        for folder in models_under(cfg.models_root):
            run = model_identity(folder)["run"]
            jobs.append((folder, Path(cfg.metrics_dir, f"{run}.json"), Path(cfg.predictions_dir, f"{run}.jsonl")))
    return jobs


def reference_scores(metrics_json: str | Path | None) -> dict[str, float] | None:
    """The per-family scores of a reference run (the teacher's metrics JSON), or None."""
    return json.loads(Path(metrics_json).read_text())["scores"] if metrics_json else None


def evaluate_checkpoint(
    model_dir: str | Path,
    benchmarks: dict[str, list[dict]],
    image_folder: str | Path,
    metrics_out: str | Path,
    predictions_out: str | Path | None = None,
    reference: dict[str, float] | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 64,
    max_new_tokens: int = 16,
    ablation_fraction: float | None = None,
    calibration: tuple[str | Path, str | Path, int] | None = None,
    timings_dir: str | Path | None = None,
    backend: str = STUDY,
    lmms_tasks: Sequence[str] = (),
    lmms_limit: int | None = None,
    lmms_include_path: str | Path | None = None,
) -> dict:
    """Evaluate the HF folder ``model_dir`` and write its record; returns the record.

    The record's ``efficiency`` holds the exact counts (parameters, FLOPs); the measured latency,
    decode speed and memory go to ``<timings_dir>/<run>.json`` when given, apart from the record, so
    that rerunning an evaluation writes the same record.

    The run's identity comes from the folder's records (:func:`study.records.model_identity`).
    ``calibration`` = (train JSON, image folder, samples) feeds the layer-skip ablation when
    ``ablation_fraction`` is set; the run's seed draws its samples.

    ``backend`` ``lmms-eval``: lmms-eval answers and scores instead, its ``lmms_tasks`` (the first
    ``lmms_limit`` questions of each; ``lmms_include_path``: a folder of more task YAMLs), or without tasks the families of ``benchmarks`` as local tasks
    (:func:`study.evaluation.lmms.evaluate_with_lmms`); the record then names it in ``evaluator``.
    Efficiency is measured on a question of ``benchmarks`` either way."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == LMMS_EVAL and ablation_fraction:
        raise ValueError("the layer-skip ablation is scored by the project's evaluator: no ablation_fraction with backend lmms-eval")
    identity = model_identity(model_dir)
    seed = identity["seed"]
    torch.manual_seed(seed)
    extra = {} if backend == STUDY else {"evaluator": f"lmms-eval {require_lmms()}"}
    model, processor = load_model(model_dir, device=device, dtype=dtype)
    if backend == LMMS_EVAL:
        result = evaluate_with_lmms(
            model,
            processor,
            lmms_tasks,
            benchmarks,
            image_folder,
            max_new_tokens=max_new_tokens,
            limit=lmms_limit,
            include_path=lmms_include_path,
            name=identity["run"],
        )
    else:
        result = evaluate(model, processor, benchmarks, image_folder, batch_size=batch_size, max_new_tokens=max_new_tokens)
    first = next(iter(benchmarks.values()))[0]
    with_image = next((qs[0] for qs in benchmarks.values() if qs[0].get("image")), first)
    counts, timings = split_timings(measure_efficiency(model, dict(encode_prompts([with_image], processor, image_folder))))
    if ablation_fraction:
        if calibration is None:
            raise ValueError("the layer-skip ablation needs calibration data (train JSON, image folder, samples)")
        train_json, calibration_images, samples = calibration
        batches = calibration_batches(train_json, calibration_images, processor, samples, seed)
        ablation = layer_skip_ablation(
            model, processor, batches, benchmarks, image_folder, ablation_fraction, batch_size=batch_size, max_new_tokens=max_new_tokens
        )
        ablation["drop"] = result["mean_score"] - ablation["mean_score"]
        extra["ablation"] = {"layer_skip": ablation}
    record = metrics_record(identity, result, counts, reference, **extra)
    timings_out = Path(timings_dir, f"{identity['run']}.json") if timings_dir else None
    write_run(record, result["predictions"], metrics_out, predictions_out, timings, timings_out)
    return record
