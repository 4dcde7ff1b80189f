"""The layer-skip ablation that shows whether a model is capacity-bound.

Drop the fraction of decoder blocks whose input and output are most alike (highest cosine, i.e.
lowest ShortGPT Block Influence) and score the result with no retraining. If that costs little,
the deep blocks are near pass-through and pruning experiments on the model would measure nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path

from study.evaluation.benchmark import evaluate
from study.models.layers import block_io_cosine, decoder_layers, drop_layers, most_similar_layers


def layer_skip_ablation(
    model,
    processor,
    calibration_batches: Iterable[dict],
    benchmarks: dict[str, list[dict]],
    image_folder: str | Path,
    fraction: float = 0.25,
    **evaluate_kwargs,
) -> dict:
    """Scores of ``model`` without its ``fraction`` most similar blocks (``model`` is untouched)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction of layers to skip must be in (0, 1), got {fraction}")
    cosines = block_io_cosine(model, calibration_batches)
    n_skip = max(1, round(fraction * len(decoder_layers(model))))
    skipped = most_similar_layers(cosines.tolist(), n_skip)
    ablated = drop_layers(copy.deepcopy(model), skipped)
    result = evaluate(ablated, processor, benchmarks, image_folder, **evaluate_kwargs)
    return {
        "fraction": fraction,
        "skipped_layers": skipped,
        "block_cosine": [round(float(c), 4) for c in cosines],
        "scores": result["scores"],
        "mean_score": result["mean_score"],
    }
