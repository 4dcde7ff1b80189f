"""Writing a run's evaluation: the metrics JSON DVC tracks, the predictions, and the measured
timings (kept out of the tracked results: they change from run to run)."""

from __future__ import annotations

import json
from pathlib import Path

from study.outputs import write_json


def write_run(
    record: dict,
    predictions: list[dict],
    metrics_out: str | Path,
    predictions_out: str | Path | None = None,
    timings: dict | None = None,
    timings_out: str | Path | None = None,
) -> None:
    """``metrics_out`` (JSON), the predictions JSONL and, with ``timings_out``, the run's measured
    ``timings`` with its identity (``run``, ``model``)."""
    write_json(record, metrics_out)
    if predictions_out:
        predictions_out = Path(predictions_out)
        predictions_out.parent.mkdir(parents=True, exist_ok=True)
        predictions_out.write_text("".join(json.dumps(p) + "\n" for p in predictions))
    if timings_out and timings:
        write_json({"run": record["run"], "model": record["model"], **timings}, timings_out)
