"""The tidy table of runs (``results/runs.csv``): one row per metrics JSON.

Columns: the run's identity as every metrics JSON holds it (:data:`study.records.IDENTITY_KEYS`:
among them the importance ``metric`` and the ``calibration`` of its scores, ``multimodal`` |
``text`` | ``none`` (the teacher, or a metric that reads no data)), a ``method`` label
``<paradigm>/<metric>``, with `` (text)`` for text-only calibration, one ``score_<family>`` per
benchmark family,
``mean_score``, ``relative_score`` (AVG-% as a fraction: mean over families of score / teacher's
score), ``retained_pct`` (the same in percent), ``retained_se`` (its binomial standard error in
points: each family's score read as a proportion of its ``n`` questions, the teacher's scores held
fixed; approximate for scores that are not proportions), ``n_questions`` (the fewest questions of
a family) and the efficiency counts ``llm_params``, ``total_params`` and ``flops_per_sample``, which
are deterministic. Any other scalar top-level key of a record (a future identity key) is kept as a
column too.

Measured timings (``prefill_ms``, ``decode_tokens_per_s``, ``peak_mem_mb``) vary from run to run on a
shared machine, so they are not part of the committed table: the evaluation writes them per run
under ``results/timings/`` (not committed), and a metrics JSON written before that move has them
dropped here. :func:`read_timings` reads them for exploration only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from study.config.vocabulary import MULTIMODAL, NONE, TEXT
from study.evaluation.metrics import relative_score
from study.records import IDENTITY_KEYS

EFFICIENCY_COLUMNS = ("llm_params", "total_params", "flops_per_sample")
# Measured per run but machine-specific: kept out of runs.csv (results/timings/, see the module docstring).
TIMING_COLUMNS = ("prefill_ms", "decode_tokens_per_s", "peak_mem_mb")
SCORE_PREFIX = "score_"
UNPRUNED = NONE  # the paradigm (and recovery) of the unpruned model (the run named records.TEACHER)


def read_records(metrics_dir: str | Path) -> list[dict]:
    """Every ``*.json`` under ``metrics_dir`` (also in subfolders, e.g. ``recovered/<student>/``;
    sorted by path), each with its path relative to ``metrics_dir`` as ``source``."""
    records = []
    for path in sorted(Path(metrics_dir).rglob("*.json")):
        record = json.loads(path.read_text())
        if "scores" not in record or "run" not in record:
            raise ValueError(f"{path} is not a run's metrics JSON (needs 'run' and 'scores'), keys: {sorted(record)}")
        records.append({**record, "source": str(path.relative_to(metrics_dir))})
    return records


def method_label(paradigm: str, metric: str, calibration: str = MULTIMODAL) -> str:
    """``layer/block_influence``, ``layer/block_influence (text)`` for text-only calibration;
    ``teacher`` for the unpruned model."""
    if paradigm == UNPRUNED:
        return "teacher"
    label = f"{paradigm}/{metric}" if metric else paradigm
    return f"{label} ({TEXT})" if calibration == TEXT else label


def runs_table(records: Iterable[dict]) -> pd.DataFrame:
    """One row per record (see the module docstring), teacher first, then by paradigm, metric,
    calibration, level, recovery, fraction and seed."""
    records = list(records)
    if not records:
        return pd.DataFrame(columns=[*IDENTITY_KEYS, "method", "mean_score", "relative_score", "retained_pct"])
    families = sorted({f for r in records for f in r["scores"]})
    reference = teacher_scores(records)
    rows = []
    for record in records:
        missing = [key for key in IDENTITY_KEYS if key not in record]
        if missing:
            name = record.get("source") or record.get("run", "a metrics record")
            raise ValueError(f"{name} lacks the identity fields {missing}: evaluate the run again")
        row = {key: record[key] for key in IDENTITY_KEYS}
        row["method"] = method_label(row["paradigm"], row["metric"], row["calibration"])
        extra = {k: v for k, v in record.items() if k not in row and k != "source" and _is_scalar(v)}
        extra.pop("mean_score", None)
        extra.pop("relative_score", None)
        row.update(extra)
        row.update({SCORE_PREFIX + f: record["scores"].get(f, math.nan) for f in families})
        row["mean_score"] = record.get("mean_score", sum(record["scores"].values()) / len(record["scores"]))
        if reference:
            row["relative_score"] = relative_score(record["scores"], reference)
        else:
            row["relative_score"] = record.get("relative_score", math.nan)
        row["retained_pct"] = 100 * row["relative_score"]
        counts = {f: d.get("n") for f, d in (record.get("details") or {}).items() if isinstance(d, dict)}
        row["retained_se"] = retained_standard_error(record["scores"], reference, counts) if reference else math.nan
        row["n_questions"] = min((n for n in counts.values() if n), default=math.nan)
        efficiency = record.get("efficiency") or {}
        row.update({k: efficiency.get(k, math.nan) for k in EFFICIENCY_COLUMNS})
        row.update({k: v for k, v in efficiency.items() if k not in (*EFFICIENCY_COLUMNS, *TIMING_COLUMNS) and _is_scalar(v)})
        rows.append(row)
    table = pd.DataFrame(rows)
    table["is_teacher"] = table["paradigm"] == UNPRUNED
    table = table.sort_values(
        ["is_teacher", "paradigm", "metric", "calibration", "level", "recovery", "data_fraction", "seed", "run"],
        ascending=[False, True, True, True, True, True, True, True, True],
        kind="stable",
    )
    return table.drop(columns="is_teacher").reset_index(drop=True)


def retained_standard_error(scores: dict[str, float], reference: dict[str, float], counts: dict[str, int | None]) -> float:
    """The binomial standard error of AVG-% in points: ``100 / F * sqrt(sum_f s_f (1 - s_f) / n_f / t_f^2)``
    over the F families with a teacher score ``t_f`` and a question count ``n_f``; NaN without any."""
    used = [f for f in scores if reference.get(f) and counts.get(f)]
    if not used:
        return math.nan
    variance = sum(max(scores[f] * (1 - scores[f]), 0.0) / counts[f] / reference[f] ** 2 for f in used)
    return 100 * math.sqrt(variance) / len(used)


def teacher_scores(records: Iterable[dict]) -> dict[str, float]:
    """Per family, the mean score of the teacher's records (paradigm ``none``, no recovery);
    ``{}`` when no teacher was evaluated."""
    teachers = [r for r in records if r.get("paradigm") == UNPRUNED and r.get("recovery", "none") == "none"]
    families = sorted({f for r in teachers for f in r["scores"]})
    return {f: sum(r["scores"][f] for r in teachers if f in r["scores"]) / sum(f in r["scores"] for r in teachers) for f in families}


def families(runs: pd.DataFrame) -> list[str]:
    """The benchmark families of a runs table (from its ``score_<family>`` columns)."""
    return [c.removeprefix(SCORE_PREFIX) for c in runs.columns if c.startswith(SCORE_PREFIX)]


def build_runs_csv(metrics_dir: str | Path, out: str | Path) -> pd.DataFrame:
    """Read every metrics JSON of ``metrics_dir``, write the table to ``out``; return it."""
    table = runs_table(read_records(metrics_dir))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return table


def read_runs(path: str | Path) -> pd.DataFrame:
    """``results/runs.csv`` as written by :func:`build_runs_csv` (empty strings stay strings)."""
    table = pd.read_csv(
        path, keep_default_na=False, na_values=[""], dtype={"metric": str, "recovery": str, "paradigm": str, "calibration": str}
    ).assign(metric=lambda t: t["metric"].fillna(""))
    return table


def read_timings(folder: str | Path) -> pd.DataFrame:
    """The measured timings of ``<folder>/*.json`` (flat dicts with ``run`` and :data:`TIMING_COLUMNS`),
    one row per run (the mean of several files for one run); empty without any file. For exploring on
    the machine that measured them: the committed report never reads them."""
    rows = []
    for path in sorted(Path(folder).glob("*.json")):
        record = json.loads(path.read_text())
        missing = [k for k in ("run", *TIMING_COLUMNS) if k not in record]
        if missing:
            raise ValueError(f"{path} is not a run's timings JSON: missing {missing}, keys: {sorted(record)}")
        rows.append({k: record[k] for k in ("run", *TIMING_COLUMNS)})
    if not rows:
        return pd.DataFrame(columns=["run", *TIMING_COLUMNS])
    return pd.DataFrame(rows).groupby("run", as_index=False, sort=True).mean()


def filter_runs(
    runs: pd.DataFrame,
    paradigm=None,
    level=None,
    recovery=None,
    fraction=None,
    seed=None,
    keep_teacher: bool = True,
    calibration=None,
) -> pd.DataFrame:
    """The rows matching every given filter (a value or a list of values; ``None``: any;
    ``calibration``: ``multimodal`` / ``text``).
    Levels and fractions match to 6 decimals. ``fraction`` selects among the recovered runs: the
    runs without recovery (whose ``data_fraction`` is 1.0 by convention) stay as their baseline
    unless ``recovery`` excludes them. The teacher rows stay unless ``keep_teacher`` is False,
    since retained % and the figures refer to them."""
    mask = pd.Series(True, index=runs.index)
    for column, wanted in (("paradigm", paradigm), ("recovery", recovery), ("seed", seed), ("calibration", calibration)):
        if wanted is not None:
            mask &= runs[column].isin(_as_list(wanted))
    if level is not None:
        mask &= runs["level"].round(6).isin([round(float(v), 6) for v in _as_list(level)])
    if fraction is not None:
        mask &= (runs["recovery"] == "none") | runs["data_fraction"].round(6).isin([round(float(v), 6) for v in _as_list(fraction)])
    teacher = runs["paradigm"] == UNPRUNED
    mask = (mask & ~teacher) | (teacher if keep_teacher else False)
    return runs[mask]


def compare_runs(runs: pd.DataFrame, run_a: str, run_b: str) -> pd.DataFrame:
    """Per family (and the mean and AVG-%), the scores of two runs and ``b - a``."""
    if run_a == run_b:
        raise ValueError(f"compare two different runs, got {run_a!r} twice")
    chosen = {}
    for name in (run_a, run_b):
        rows = runs[runs["run"] == name]
        if rows.empty:
            raise KeyError(f"run {name!r} is not in the table (runs: {sorted(runs['run'])})")
        chosen[name] = rows.iloc[0]
    columns = [SCORE_PREFIX + f for f in families(runs)] + ["mean_score", "relative_score"]
    a, b = (chosen[n][columns].astype(float) for n in (run_a, run_b))
    index = [c.removeprefix(SCORE_PREFIX) for c in columns]
    return pd.DataFrame({run_a: a.to_numpy(), run_b: b.to_numpy(), "difference": (b - a).to_numpy()}, index=index)


def _as_list(value) -> list:
    return list(value) if isinstance(value, list | tuple | set) else [value]


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, str | int | float | bool)
