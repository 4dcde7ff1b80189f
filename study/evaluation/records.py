"""Writing a run's metrics: the JSON DVC tracks, a tidy CSV beside it, and the predictions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from study.evaluation.benchmark import IDENTITY_KEYS


def tidy_rows(record: dict) -> list[dict]:
    """One row per (family, metric) with the run's identity: the long format tables are built from."""
    identity = {k: record[k] for k in IDENTITY_KEYS}
    rows = [
        {**identity, "family": family, "metric": metric, "value": value}
        for family, metrics in record["details"].items()
        for metric, value in metrics.items()
    ]
    rows += [{**identity, "family": "all", "metric": m, "value": record[m]} for m in ("mean_score", "relative_score")]
    rows += [{**identity, "family": "efficiency", "metric": m, "value": v} for m, v in record["efficiency"].items()]
    return rows


def write_run(record: dict, predictions: list[dict], metrics_out: str | Path, predictions_out: str | Path | None = None) -> None:
    """``metrics_out`` (JSON), the same path with ``.csv`` (tidy rows) and the predictions JSONL."""
    metrics_out = Path(metrics_out)
    metrics_out.parent.mkdir(parents=True, exist_ok=True)
    metrics_out.write_text(json.dumps(record, indent=2) + "\n")
    rows = tidy_rows(record)
    with metrics_out.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if predictions_out:
        predictions_out = Path(predictions_out)
        predictions_out.parent.mkdir(parents=True, exist_ok=True)
        predictions_out.write_text("".join(json.dumps(p) + "\n" for p in predictions))
