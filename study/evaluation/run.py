"""One run's evaluation, start to end: load the checkpoint, score the benchmarks, measure
efficiency, optionally the layer-skip ablation, and write the metrics record (JSON), the
predictions and the measured timings. The evaluation notebook calls it once per model, so that one kernel can
evaluate every recovered model of a student (start-up and imports are paid once)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from study.data.llava import calibration_batches
from study.evaluation.ablation import layer_skip_ablation
from study.evaluation.benchmark import evaluate, metrics_record
from study.evaluation.efficiency import measure_efficiency, split_timings
from study.evaluation.generate import encode_prompts
from study.evaluation.records import write_run
from study.models.io import load_model, read_pruning


def models_under(root: str | Path) -> list[tuple[Path, dict]]:
    """Every model folder directly under ``root`` (sorted), with the identity keys that say which
    run it is: a recovered model's ``recovery.json`` gives its run, recipe and data fraction; a
    pruned model of an extra calibration seed (``study.pruning.run.prune_seeds``) is run
    ``<folder name>`` with its ``pruning.json``'s seed. An empty ``root`` has no models."""
    from study.recovery.plan import RECORD, read_record

    models = []
    for folder in sorted(p.parent for p in Path(root).glob("*/config.json")):
        recovery, pruning = read_record(folder), read_pruning(folder)
        if recovery is not None:
            ident = {"run": recovery["run"], "recovery": recovery["recipe"]["name"], "data_fraction": recovery["data_fraction"]}
        elif pruning is not None:
            ident = {"run": folder.name, "seed": pruning["seed"]}
        else:
            raise FileNotFoundError(f"{folder}: neither {RECORD} nor pruning.json says which run this model is")
        models.append((folder, ident))
    return models


def reference_scores(metrics_json: str | Path | None) -> dict[str, float] | None:
    """The per-family scores of a reference run (the teacher's metrics JSON), or None."""
    return json.loads(Path(metrics_json).read_text())["scores"] if metrics_json else None


def evaluate_checkpoint(
    model_dir: str | Path,
    benchmarks: dict[str, list[dict]],
    image_folder: str | Path,
    identity: dict,
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
    seed: int = 0,
    timings_out: str | Path | None = None,
) -> dict:
    """Evaluate the HF folder ``model_dir`` and write its record; returns the record.

    The record's ``efficiency`` holds the exact counts (parameters, FLOPs); the measured latency,
    decode speed and memory go to ``timings_out`` (JSON) when given, apart from the record, so
    that rerunning an evaluation writes the same record.

    ``identity`` holds the run's identity keys (``study.evaluation.benchmark.IDENTITY_KEYS``);
    a pruned or recovered folder's ``pruning.json`` supplies ``paradigm``, ``level`` and
    ``achieved_level``. ``calibration`` = (train JSON, image folder, samples) feeds the layer-skip
    ablation when ``ablation_fraction`` is set."""
    torch.manual_seed(seed)
    model, processor = load_model(model_dir, device=device, dtype=dtype)
    result = evaluate(model, processor, benchmarks, image_folder, batch_size=batch_size, max_new_tokens=max_new_tokens)
    first = next(iter(benchmarks.values()))[0]
    with_image = next((qs[0] for qs in benchmarks.values() if qs[0].get("image")), first)
    counts, timings = split_timings(measure_efficiency(model, dict(encode_prompts([with_image], processor, image_folder))))
    extra = {}
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
    identity = {**identity, "model": str(model_dir)}
    pruning = read_pruning(model_dir)
    if pruning:  # a pruned (or recovered) model says what it is
        identity.update(paradigm=pruning["paradigm"], level=pruning["requested_ratio"], achieved_level=pruning["achieved_ratio"])
    record = metrics_record(identity, result, counts, reference, **extra)
    write_run(record, result["predictions"], metrics_out, predictions_out, timings, timings_out)
    return record
