"""What the ``pruning.json`` files say, as tidy tables for the figures.

A layerwise record holds one importance score per decoder block of the parent and the removed
blocks; a widthwise record holds the kept query heads, KV heads and MLP channels of every layer
(its importance scores are not recorded, so the width figure shows what was kept); a hybrid record
holds both (its widths are those of the blocks it kept, ``layer_map`` naming their parent blocks).
Every record says how it was calibrated (``calibration.text_only``, ``calibration.samples``).

The files sit beside the pruned models (``results/pruned/<run>/pruning.json``), which are
DVC-cached rather than committed: on a fresh clone they appear once the prune stages have run. A
file named otherwise (``results/pruning/<run>.json``) is read the same way, its stem naming the run.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pandas as pd

from study.config.vocabulary import TEXT


def calibration_of(record: dict) -> str:
    """``text`` (text-only calibration), ``multimodal``, or ``none`` (a metric that reads no
    calibration data, e.g. ``magnitude_l1``)."""
    return record["identity"]["calibration"]


def record_label(record: dict) -> str:
    """``layer/block_influence 30%``, ``width/taylor text 30%``: one row of the pruning figures
    (the seeds of a setting share it)."""
    text = " text" if calibration_of(record) == TEXT else ""
    level = record.get("requested_ratio")
    return f"{record.get('paradigm', '?')}/{record.get('metric', '')}{text} {100 * float(level or 0):.4g}%"


def read_pruning_records(pattern: str | Path) -> list[dict]:
    """The records matching a glob (sorted; ``**`` matches any depth), each with its ``run``."""
    records = []
    for name in sorted(glob.glob(str(pattern), recursive=True)):
        record = json.loads(Path(name).read_text())
        if "identity" not in record:
            raise ValueError(f"{name} has no 'identity': written by an older version; prune the run again")
        records.append({**record, "run": record["identity"]["run"]})
    return records


BLOCK_COLUMNS = ["run", "metric", "level", "achieved_level", "block", "score", "removed", "label", "layer_metric", "calibration"]
WIDTH_COLUMNS = ["run", "metric", "level", "achieved_level", "layer", "component", "kept", "label", "calibration"]


def block_importance(records: list[dict]) -> pd.DataFrame:
    """Layerwise and hybrid records -> one row per (run, block): ``run, metric, level,
    achieved_level, block, score, removed, label, layer_metric, calibration`` (``score`` NaN where
    the metric gives none, e.g. ``last``; ``layer_metric`` the metric that scored the blocks, the
    first half of a hybrid's)."""
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
                    "label": record_label(record),
                    "layer_metric": record.get("layer_metric", record.get("metric", "")),
                    "calibration": calibration_of(record),
                }
            )
    return pd.DataFrame(rows, columns=BLOCK_COLUMNS)


def kept_widths(records: list[dict]) -> pd.DataFrame:
    """Widthwise and hybrid records -> one row per (run, layer, component): ``run, metric, level,
    achieved_level, layer, component, kept, label, calibration`` with components ``q_heads``,
    ``kv_heads``, ``channels``; ``layer`` is the parent's block (a hybrid's ``layer_map``), so the
    blocks a hybrid cut removed have no row."""
    rows = []
    for record in records:
        if not record.get("widths"):
            continue
        parents = record.get("layer_map") or list(range(len(record["widths"])))
        for layer, width in zip(parents, record["widths"]):
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
                        "label": record_label(record),
                        "calibration": calibration_of(record),
                    }
                )
    return pd.DataFrame(rows, columns=WIDTH_COLUMNS)


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


def main_seed_records(records: list[dict]) -> list[dict]:
    """Per setting (:func:`record_label`) of multimodal (or no) calibration, the record of its
    lowest calibration seed, in the order of ``records``."""
    main: dict[str, dict] = {}
    for record in records:
        if calibration_of(record) != TEXT:
            label = record_label(record)
            if label not in main or record["identity"]["seed"] < main[label]["identity"]["seed"]:
                main[label] = record
    return list(main.values())


SPENDING_COLUMNS = [
    "paradigm",
    "metric",
    "level",
    "budget",
    "achieved_level",
    "blocks",
    "removed_blocks",
    "q_heads",
    "kv_heads",
    "channels",
]


def budget_spending(records: list[dict]) -> pd.DataFrame:
    """How each main-seed run of multimodal (or no) calibration spends its budget: one row per
    (paradigm, metric, level) with the ``budget`` it pruned to, the achieved level, the parent's
    ``blocks``, the ``removed_blocks`` (a tuple) and, for widthwise and hybrid runs, the query heads,
    KV heads and MLP channels each kept block keeps, as ``(kept, of)`` (the most any block keeps;
    blocks are cut alike unless layers were spared)."""
    rows = []
    for record in main_seed_records(records):
        row = {
            "paradigm": record.get("paradigm"),
            "metric": record.get("metric", ""),
            "level": record.get("requested_ratio"),
            "budget": record.get("budget_ratio", record.get("requested_ratio")),
            "achieved_level": record.get("achieved_ratio"),
            "blocks": record.get("num_layers_before"),
            "removed_blocks": tuple(record.get("removed_layers") or ()),
        }
        widths, plan = record.get("widths"), record.get("plan") or {}
        if widths:
            kept = {c: max(len(w[c]) for w in widths) for c in ("q_heads", "kv_heads", "channels")}
            kv_total = kept["kv_heads"] + plan.get("kv_groups", 0)
            q_total = (
                kept["q_heads"]
                + plan.get("q_heads_per_group", 0) * kept["kv_heads"]
                + plan.get("kv_groups", 0) * (kept["q_heads"] // max(kept["kv_heads"], 1))
            )
            row |= {
                "q_heads": (kept["q_heads"], q_total),
                "kv_heads": (kept["kv_heads"], kv_total),
                "channels": (kept["channels"], kept["channels"] + plan.get("channels", 0)),
            }
        rows.append(row)
    table = pd.DataFrame(rows, columns=SPENDING_COLUMNS)
    return table.sort_values(["paradigm", "metric", "level"], kind="stable").reset_index(drop=True)
