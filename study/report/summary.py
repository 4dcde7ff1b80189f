"""A short plain-text summary of the study, for a person at the end of a run: the teacher's score,
retained % per method and level (without recovery and after the best recovery), the findings'
verdicts one line each, and where the report and its figures are.

Like the rest of :mod:`study.report` it reads ``results/`` only (``results/runs.csv``; the verdicts
come from :mod:`study.report.findings`, not re-derived) and never loads a model.
:func:`study_summary` is pure; :func:`summary_from_files` reads the committed files first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from study.config.sections import ReportConfig
from study.report.document import finding_text
from study.report.figures import figure_paths, pct
from study.report.findings import Finding, cells, check_extensions, check_findings
from study.report.paired import read_paired_scores
from study.report.pruning_records import TEXT
from study.report.runs import UNPRUNED, families, read_runs

HEADER = ("method", "level", "no recovery", "best recovery", "recipe, data")


@dataclass
class SummaryInputs:
    """What :func:`study_summary` needs, as read by :func:`load_summary_inputs`."""

    runs: pd.DataFrame
    findings: list[Finding]
    report_md: Path
    figures: list[Path]


def study_summary(runs: pd.DataFrame, findings: list[Finding], report_md: str | Path, figures: Iterable[str | Path]) -> str:
    """The summary block: teacher, retained % table, one line per finding, report and figure paths.
    ``findings``: :func:`~study.report.findings.check_findings` (and ``check_extensions``) of ``runs``."""
    figures = [Path(p) for p in figures]
    out = [teacher_line(runs), "", *retained_lines(runs), "", "Findings:"]
    out += [verdict_line(f) for f in findings] or ["  none checked"]
    out += ["", f"Report: {report_md}", "Figures:", *[f"  {p}" for p in figures]]
    return "\n".join(out) + "\n"


def teacher_line(runs: pd.DataFrame) -> str:
    """``Teacher: run teacher, mean score 0.914 over 7 benchmark families``; says so when there is none."""
    teacher = runs[runs["paradigm"] == UNPRUNED]
    if teacher.empty:
        return "Teacher: not evaluated (retained % is each run's own relative score)"
    names = ", ".join(sorted(map(str, teacher["run"])))
    return f"Teacher: run {names}, mean score {teacher['mean_score'].mean():.3f} over {len(families(runs))} benchmark families"


def retained_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method (multimodal or no calibration, as the findings use) and requested level: the
    seed-mean retained % without recovery, and the best seed-mean retained % among its recovered
    runs (any recipe, any data fraction) with that recipe and fraction; NaN / ``""`` where not run."""
    table = cells(runs)
    table = table[table["calibration"] != TEXT]
    rows = []
    for (method, level), group in table.groupby(["method", "level"], sort=True):
        zero = group[group["recovery"] == "none"]["retained"]
        recovered = group[group["recovery"] != "none"]
        best = recovered.loc[recovered["retained"].idxmax()] if not recovered.empty else None
        rows.append(
            {
                "method": method,
                "level": level,
                "zero_shot": float(zero.iloc[0]) if not zero.empty else np.nan,
                "best_recovered": float(best["retained"]) if best is not None else np.nan,
                "recipe": best["recovery"] if best is not None else "",
                "data_fraction": float(best["data_fraction"]) if best is not None else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=["method", "level", "zero_shot", "best_recovered", "recipe", "data_fraction"])


def retained_lines(runs: pd.DataFrame) -> list[str]:
    """:func:`retained_table` as aligned text, with a title saying what the numbers are."""
    table = retained_table(runs)
    seeds = int(cells(runs)["seeds"].max()) if not table.empty else 0
    title = "Retained % (AVG-%" + (f", mean over up to {seeds} seeds" if seeds > 1 else "") + "; multimodal calibration):"
    if table.empty:
        return [title, "  no pruned run"]
    rows = [HEADER] + [
        (
            r["method"],
            pct(r["level"]),
            _percent(r["zero_shot"]),
            _percent(r["best_recovered"]),
            f"{r['recipe']}, {pct(r['data_fraction'])}" if r["recipe"] else "-",
        )
        for r in table.to_dict("records")
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    return [title] + ["  " + _aligned(row, widths) for row in rows]


def verdict_line(finding: Finding) -> str:
    """``  (a) width beats layer without recovery and with little data: does not hold``."""
    return f"  ({finding.key}) {finding_text(finding).short}: {finding.verdict}"


def load_summary_inputs(report: ReportConfig) -> SummaryInputs:
    """Read the report's runs table and check the findings with its thresholds."""
    runs_csv = Path(report.runs_csv)
    if not runs_csv.is_file():
        raise FileNotFoundError(f"runs table not found: {runs_csv} (the report stage writes it: dvc repro report)")
    runs = read_runs(runs_csv)
    paired = read_paired_scores(report.metrics_dir, report.predictions_dir)
    findings = check_findings(runs, report, paired) + check_extensions(runs, report, paired)
    return SummaryInputs(runs, findings, Path(report.report_md), list(figure_paths(report.figures_dir).values()))


def summary_from_files(report: ReportConfig) -> str:
    """:func:`study_summary` of the committed results named by the report settings."""
    inputs = load_summary_inputs(report)
    return study_summary(inputs.runs, inputs.findings, inputs.report_md, inputs.figures)


def _percent(value: float) -> str:
    return f"{value:.1f}%" if np.isfinite(value) else "-"


def _aligned(row: tuple[str, ...], widths: list[int]) -> str:
    """The method left-aligned, the numbers right-aligned, the recipe left-aligned."""
    method, *numbers, recipe = row
    cells_ = [method.ljust(widths[0]), *(n.rjust(w) for n, w in zip(numbers, widths[1:-1])), recipe]
    return "  ".join(cells_).rstrip()
