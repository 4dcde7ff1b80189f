"""The text of ``results/REPORT.md``: what was run, the four findings with their numbers and
figures, this study's own questions (calibration data, hybrid cuts) put the same way, accuracy
against compute and size (deterministic counts; measured speed is machine-specific and stays out),
then every figure and table. Every number is read from the runs table; links are relative to the
report's folder."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from study.report.figures import compact, pareto_front, pct, recovered, recovery_order, zero_shot
from study.report.findings import Finding
from study.report.runs import TEACHER, families

FIGURE_CAPTIONS = {
    "retained_vs_level": "Retained performance (AVG-%) against the achieved compression level, without recovery",
    "recovery_heatmap": "Retained performance of each recovery method at each level",
    "data_fraction": "Retained performance against the fraction of the data used for recovery",
    "pareto": "Retained performance against FLOPs per sample and LLM parameters",
    "layer_importance": "Layerwise pruning: importance of each decoder block and the blocks each run removed",
    "kept_widths": "Widthwise pruning: heads and MLP channels kept in each layer",
}


def relative_links(paths: dict[str, str | Path], folder: str | Path) -> dict[str, str]:
    """Each path relative to ``folder`` (the report's), with forward slashes, for Markdown links."""
    return {name: Path(os.path.relpath(path, folder)).as_posix() for name, path in paths.items()}


def grid_summary(runs: pd.DataFrame) -> list[str]:
    """One line per kind of run in the table."""
    lines = []
    teacher = runs[runs["paradigm"] == TEACHER]
    names = families(runs)
    if teacher.empty:
        lines.append("no teacher run: AVG-% is each record's own `relative_score`")
    else:
        lines.append(
            f"teacher: `{teacher['model'].iloc[0]}`, mean score {teacher['mean_score'].mean():.3f} over {len(names)} families "
            f"({', '.join(f'`{f}`' for f in names)})"
        )
    zero = zero_shot(runs)
    for method, group in zero.groupby("method"):
        seeds = group.groupby("level")["seed"].nunique().max()
        lines.append(
            f"pruned, no recovery: {method} at {', '.join(pct(v) for v in sorted(group['level'].unique()))}"
            + (f" ({seeds} calibration seeds)" if seeds > 1 else "")
        )
    rec = recovered(runs)
    if rec.empty:
        lines.append("recovered: none")
    for method, group in rec.groupby("method"):
        lines.append(
            f"recovered: {method} at {', '.join(pct(v) for v in sorted(group['level'].unique()))} with "
            f"{', '.join(recovery_order(group['recovery']))} on {', '.join(pct(v) for v in sorted(group['data_fraction'].unique()))} of the data"
        )
    pruned = runs[runs["paradigm"] != TEACHER]
    if "retained_se" in runs and pruned["retained_se"].notna().any():
        se = float(pruned["retained_se"].median())
        lines.append(
            f"evaluation noise: a run's AVG-% has a binomial standard error of about {se:.1f} points (median over runs; "
            f"at least {int(runs['n_questions'].min())} questions per family), so gaps under about {2 * se:.1f} points are within noise (conservative for "
            "a gap between two runs, since they answer the same questions)"
        )
    seeds = sorted(runs["seed"].unique())
    lines.append(f"seeds: {', '.join(map(str, seeds))}" + (" (one run per setting: no spread across seeds)" if len(seeds) == 1 else ""))
    return lines


TIMINGS_NOTE = (
    "Measured latency and memory are machine-specific: the evaluation writes them per run under `results/timings/` "
    "(not committed), and speed at real widths is measured by the scripts in `benchmarks/`."
)


def efficiency_summary(runs: pd.DataFrame) -> list[str]:
    """What the Pareto plot shows: the runs on the front of retained % against FLOPs per sample and
    against LLM parameters (deterministic counts), then where measured speed lives instead."""
    lines = []
    axes = (
        ("flops_per_sample", "FLOPs per sample", lambda v: compact(v, "FLOPs")),
        ("llm_params", "LLM parameters", lambda v: f"{compact(v)} params"),
    )
    for column, label, amount in axes:
        if column not in runs or runs[column].isna().all():
            lines.append(f"not measured: no run has `{column}`")
            continue
        front = pareto_front(runs, column, "retained_pct")
        points = ", ".join(f"`{r['run']}` ({amount(r[column])}, {r['retained_pct']:.1f}%)" for r in front.to_dict("records"))
        lines.append(f"Pareto front in {label}: {points}")
    return [*lines, TIMINGS_NOTE]


def finding_section(f: Finding, figure_links: dict[str, str]) -> list[str]:
    """The lines of one finding: claim, verdict and summary, evidence, context, missing runs, figures."""
    summary = f.summary.removeprefix(f"{f.verdict}: ")
    out = [f"### ({f.key}) {f.claim}", "", f"**{f.verdict[0].upper() + f.verdict[1:]}**: {summary}", ""]
    out += [f"- {line}" for line in f.evidence]
    out += [f"- context: {line}" for line in dict.fromkeys(f.context)]
    if f.missing and f.verdict != "not measured":
        out.append("- runs that would complete the comparison, not in the grid: " + ", ".join(f"`{m}`" for m in f.missing))
    links = [f"[{name}]({figure_links[name]})" for name in f.figures if name in figure_links]
    if links:
        out += ["", "Figures: " + ", ".join(links) + "."]
    out.append("")
    return out


def report_markdown(
    runs: pd.DataFrame,
    findings: list[Finding],
    figure_links: dict[str, str],
    tables: dict[str, str],
    table_links: dict[str, str],
    runs_link: str = "runs.csv",
    extensions: list[Finding] = (),
) -> str:
    """REPORT.md. ``figure_links`` / ``table_links``: relative paths by figure name / recovery;
    ``extensions``: this study's own questions (:func:`study.report.findings.check_extensions`)."""
    out = [
        "# Report: pruning and recovery, checked against the reference study",
        "",
        f"Generated by `notebooks/05_report.ipynb` from [`{runs_link}`]({runs_link}) ({len(runs)} runs); "
        "`dvc repro report` rewrites it, so do not edit it by hand. AVG-% (retained %) is the mean over benchmark "
        "families of a run's score divided by the teacher's score.",
        "",
        "## The runs",
        "",
        *[f"- {line}" for line in grid_summary(runs)],
        "",
        "## The reference study's findings on this study's data",
        "",
        "| finding | verdict |",
        "| --- | --- |",
        *[f"| ({f.key}) {f.claim} | **{f.verdict}** |" for f in findings],
        "",
    ]
    out += [line for f in findings for line in finding_section(f, figure_links)]
    if extensions:
        out += [
            "## Beyond the reference study: calibration data and hybrid cuts",
            "",
            "The reference study calibrates importance on multimodal data and prunes either whole blocks or widths. "
            "This study also calibrates on the text of the same samples (images dropped: runs `<paradigm>-<metric>-text-<level>`) "
            "and cuts blocks and widths together at the same parameter budget (paradigm `hybrid`); the four findings above "
            "use the multimodal calibration only.",
            "",
            "| question | verdict |",
            "| --- | --- |",
            *[f"| ({f.key}) {f.claim} | **{f.verdict}** |" for f in extensions],
            "",
        ]
        out += [line for f in extensions for line in finding_section(f, figure_links)]
    out += ["## Accuracy against compute and size", "", *[f"- {line}" for line in efficiency_summary(runs)]]
    if "pareto" in figure_links:
        out += ["", f"Figure: [pareto]({figure_links['pareto']})."]
    out += ["", "## Figures", ""]
    for name, link in figure_links.items():
        out += [f"**{FIGURE_CAPTIONS.get(name, name)}** (`{link}`)", "", f"![{name}]({link})", ""]
    out += [
        "## Tables",
        "",
        "One table per recovery method, as in the reference paper: "
        + ", ".join(f"[{r}]({table_links[r]})" if r in table_links else r for r in tables)
        + ".",
        "",
    ]
    out += [text for text in tables.values()]
    return "\n".join(out).rstrip() + "\n"
