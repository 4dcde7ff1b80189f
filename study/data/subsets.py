"""Nested, stratified fractions of a training set for recovery-training experiments.

Each stratum (task family) is shuffled once by seed and every fraction takes a prefix of every
stratum, so a fraction is a superset of each smaller one and keeps the strata's proportions (up
to rounding, at least one sample per non-empty stratum). The stratum of a sample is its
``family`` field when present (the synthetic data has one); otherwise the first folder of its
image path (``coco``, ``gqa``, ``ocr_vqa``, ... in LLaVA-665K) or ``text`` for text-only samples.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from study.config.vocabulary import check_fractions


def stratum(sample: dict) -> str:
    if "family" in sample:
        return str(sample["family"])
    if "image" not in sample:
        return "text"
    image = str(sample["image"])
    return image.split("/", 1)[0] if "/" in image else "image"


def nested_subsets(samples: Sequence[dict], fractions: Sequence[float], seed: int) -> dict[float, list[int]]:
    """``{fraction: sorted sample indices}``, nested and stratified by :func:`stratum`."""
    fractions = check_fractions(fractions)
    groups: dict[str, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        groups[stratum(sample)].append(index)
    rng = random.Random(f"subsets-{seed}")
    for key in sorted(groups):
        rng.shuffle(groups[key])
    return {
        fraction: sorted(i for members in groups.values() for i in members[: max(1, math.ceil(fraction * len(members) - 1e-9))])
        for fraction in fractions
    }


def subset_name(fraction: float) -> str:
    """File-friendly name of a fraction: 0.05 -> ``"5pct"``, 0.005 -> ``"0.5pct"``."""
    return f"{fraction * 100:g}pct"


def write_subsets(train_json: str | Path, fractions: Sequence[float], seed: int, out_dir: str | Path) -> dict[str, Counter]:
    """Write ``<out_dir>/<N>pct.json`` (LLaVA format) per fraction; return samples per stratum."""
    samples = json.loads(Path(train_json).read_text())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {}
    for fraction, indices in nested_subsets(samples, fractions, seed).items():
        chosen = [samples[i] for i in indices]
        (out_dir / f"{subset_name(fraction)}.json").write_text(json.dumps(chosen, sort_keys=True) + "\n")
        summary[subset_name(fraction)] = Counter(stratum(s) for s in chosen)
    return summary
