"""What the ``pruning.json`` files say, as tidy tables for the figures.

A layerwise record holds one importance score per decoder block of the parent and the removed
blocks; a widthwise record holds the kept query heads, KV heads and MLP channels of every layer
(its importance scores are not recorded, so the width figure shows what was kept).

The files sit beside the pruned models (``results/pruned/<run>/pruning.json``), which are
DVC-cached rather than committed: on a fresh clone they appear once the prune stages have run. A
file named otherwise (``results/pruning/<run>.json``) is read the same way, its stem naming the run.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pandas as pd

PRUNING_FILE = "pruning.json"


def read_pruning_records(pattern: str | Path) -> list[dict]:
    """The records matching a glob (sorted), each with ``run`` (its folder name, or the file stem)."""
    records = []
    for name in sorted(glob.glob(str(pattern))):
        path = Path(name)
        run = path.parent.name if path.name == PRUNING_FILE else path.stem
        records.append({**json.loads(path.read_text()), "run": run})
    return records


def block_importance(records: list[dict]) -> pd.DataFrame:
    """Layerwise records -> one row per (run, block): ``run, metric, level, achieved_level,
    block, score, removed`` (``score`` NaN where the metric gives none, e.g. ``last``)."""
    rows = []
    for record in records:
        if record.get("paradigm") != "layer" and "removed_layers" not in record:  # a hybrid cut has both
            continue
        n_blocks = record.get("num_layers_before") or len(record.get("scores") or [])
        scores = record.get("scores") or [None] * n_blocks
        removed = set(record.get("removed_layers") or [])
        for block in range(n_blocks):
            score = scores[block] if block < len(scores) else None
            rows.append(
                {
                    "run": record["run"],
                    "metric": record.get("metric", ""),
                    "level": record.get("requested_ratio"),
                    "achieved_level": record.get("achieved_ratio"),
                    "block": block,
                    "score": float("nan") if score is None else float(score),
                    "removed": block in removed,
                }
            )
    return pd.DataFrame(rows, columns=["run", "metric", "level", "achieved_level", "block", "score", "removed"])


def kept_widths(records: list[dict]) -> pd.DataFrame:
    """Widthwise records -> one row per (run, layer, component): ``run, metric, level,
    achieved_level, layer, component, kept`` with components ``q_heads``, ``kv_heads``, ``channels``."""
    rows = []
    for record in records:
        if not record.get("widths"):
            continue
        for layer, width in enumerate(record["widths"]):
            for component, kept in width.items():
                rows.append(
                    {
                        "run": record["run"],
                        "metric": record.get("metric", ""),
                        "level": record.get("requested_ratio"),
                        "achieved_level": record.get("achieved_ratio"),
                        "layer": layer,
                        "component": component,
                        "kept": len(kept) if isinstance(kept, list) else int(kept),
                    }
                )
    return pd.DataFrame(rows, columns=["run", "metric", "level", "achieved_level", "layer", "component", "kept"])


def filter_pruning_records(records: list[dict], paradigm=None, level=None) -> list[dict]:
    """The records of the given paradigm(s) and requested level(s) (``None``: any)."""
    paradigms = None if paradigm is None else set(paradigm if isinstance(paradigm, list | tuple) else [paradigm])
    levels = None if level is None else {round(float(v), 6) for v in (level if isinstance(level, list | tuple) else [level])}
    return [
        r
        for r in records
        if (paradigms is None or r.get("paradigm") in paradigms)
        and (levels is None or round(float(r.get("requested_ratio", -1)), 6) in levels)
    ]
