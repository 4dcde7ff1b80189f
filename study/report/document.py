"""The text of ``results/REPORT.md``: what was run, the four findings with their numbers and
figures, this study's own questions (calibration data, hybrid cuts) put the same way, accuracy
against compute and size (deterministic counts; measured speed is machine-specific and stays out),
then every figure and table. Every number is read from the runs table; links are relative to the
report's folder. The findings' English (claims, summaries, evidence, missing runs) is written here,
from the data :mod:`study.report.findings` returns."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from study.report.figures import compact, pareto_front, pct, recovered, recovery_order, zero_shot
from study.report.findings import EPS, HOLDS, NOT_MEASURED, Cell, Comparison, Finding, FindingsConfig
from study.report.pruning_records import block_importance, budget_spending, main_seed_records
from study.report.runs import UNPRUNED, families

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
    teacher = runs[runs["paradigm"] == UNPRUNED]
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
    lines += budget_summary(zero)
    pruned = runs[runs["paradigm"] != UNPRUNED]
    if "retained_se" in runs and pruned["retained_se"].notna().any():
        se = float(pruned["retained_se"].median())
        lines.append(
            f"evaluation noise: a run's AVG-% alone has a binomial standard error of about {se:.1f} points (median over runs; "
            f"at least {int(runs['n_questions'].min())} questions per family; `retained_se` in the runs table). Two runs answer "
            "the same questions, so every comparison below is judged by a paired bootstrap of their gap instead (questions "
            "resampled within each family for both runs at once, seeds averaged per question): it counts when its 95% "
            "interval excludes 0"
        )
    seeds = sorted(runs["seed"].unique())
    lines.append(f"seeds: {', '.join(map(str, seeds))}" + (" (one run per setting: no spread across seeds)" if len(seeds) == 1 else ""))
    return lines


def budget_summary(zero: pd.DataFrame) -> list[str]:
    """Per requested level pruned by several paradigms (no recovery), each paradigm's achieved level
    (seed means): the parameter budgets the comparisons are made at."""
    if zero.empty or zero["paradigm"].nunique() < 2:
        return []
    achieved = zero.groupby(["level", "paradigm"])["achieved_level"].mean()
    parts = []
    for level, by_paradigm in achieved.groupby(level=0):
        shown = ", ".join(f"{p} {100 * v:.1f}%" for (_, p), v in by_paradigm.items())
        parts.append(f"{pct(level)}: {shown}")
    return ["levels requested → achieved (decoder parameters removed, per paradigm): " + "; ".join(parts)]


def spending_lines(records: list[dict]) -> list[str]:
    """How each paradigm spends its budget (:func:`~study.report.pruning_records.budget_spending`):
    the blocks a layerwise or hybrid cut removes, the widths a widthwise or hybrid cut keeps, and
    the teacher's per-block importance that chose the blocks (main calibration seed)."""
    table = budget_spending(records)
    lines = []
    for row in table.to_dict("records"):
        head = f"`{row['paradigm']}/{row['metric']}` at {pct(row['level'])} (budget {100 * row['budget']:.1f}%, achieved {100 * row['achieved_level']:.1f}%): "
        parts = []
        if row["removed_blocks"]:
            blocks = ", ".join(map(str, row["removed_blocks"]))
            parts.append(f"removes block{'s' if len(row['removed_blocks']) > 1 else ''} {blocks} of {row['blocks']}")
        if isinstance(row["q_heads"], tuple):
            (q, q_of), (kv, kv_of), (ch, ch_of) = row["q_heads"], row["kv_heads"], row["channels"]
            who = "the others keep" if row["removed_blocks"] else "every block keeps"
            parts.append(f"{who} {q} of {q_of} query heads, {kv} of {kv_of} KV heads and {ch} of {ch_of} MLP channels")
        lines.append(head + ("; ".join(parts) or "removes nothing"))
    scores = block_importance([r for r in main_seed_records(records) if r.get("paradigm") == "layer"])
    if not scores.empty:
        first = scores[scores["run"] == scores["run"].iloc[0]]
        metric = first["layer_metric"].iloc[0]
        shown = ", ".join(f"{b}: {v:.3g}" for b, v in zip(first["block"], first["score"]))
        lines.append(f"`{metric}` of the teacher's blocks (run `{first['run'].iloc[0]}`; the lowest go first): {shown}")
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


# ---------------------------------------------------------------------------------------------
# the findings in English

# The figures that show each finding's numbers (names of study.report.figures.FIGURES).
FINDING_FIGURES = {
    "width_over_layer": ("retained_vs_level", "recovery_heatmap"),
    "projector_suffices": ("recovery_heatmap",),
    "best_recipe": ("recovery_heatmap",),
    "little_data": ("data_fraction", "recovery_heatmap"),
    "multimodal_calibration": ("retained_vs_level", "layer_importance", "kept_widths"),
    "hybrid_cut": ("retained_vs_level", "pareto"),
}


@dataclass(frozen=True)
class FindingText:
    """The English of one :class:`~study.report.findings.Finding`, as the report states it."""

    claim: str
    short: str  # the claim in a few words, for a one-line verdict (study.report.summary)
    summary: str  # one sentence with the deciding numbers ("not measured: ..." when none)
    evidence: tuple[str, ...]  # one line per deciding comparison
    context: tuple[str, ...]  # numbers that inform but do not decide


def finding_text(f: Finding) -> FindingText:
    """Claim, short claim, summary, evidence and context of ``f``, from its numbers."""
    claim, short = _CLAIMS[f.claim_id](f.config)
    line = _LINES[f.claim_id]
    evidence = tuple(line(c, f.config) for c in f.comparisons)
    return FindingText(claim, short, _summary(f), evidence, tuple(_context(f)))


def fmt(cell: Cell) -> str:
    """``94.8%`` or ``94.8% ± 0.6 (3 seeds)``."""
    text = f"{cell.retained:.1f}%"
    return text + (f" ± {cell.sd:.1f} ({cell.seeds} seeds)" if cell.seeds > 1 else "")


def _noise(c: Comparison, what: str = "gap") -> str:
    """`` [paired 95% interval of the gap: +0.4 to +3.1]``, with ``: includes 0, within noise`` when
    it does not count; a note when there was nothing to pair."""
    if not c.paired:
        return " [no per-question scores to pair: decided on the point estimate]"
    return f" [paired 95% interval of the {what}: {c.low:+.1f} to {c.high:+.1f}{'' if c.counts else ', includes 0: within noise'}]"


def _achieved(*cells: Cell) -> str:
    """`` (achieved 25.0% / 24.9%)``: the real budgets of compared cells, beside their requested level."""
    shown = [pct(round(c.achieved_level, 4)) for c in cells if np.isfinite(c.achieved_level)]
    return f" (achieved {' / '.join(shown)})" if shown else ""


def _where(cell: Cell) -> str:
    return "no recovery" if cell.recovery == "none" else f"{cell.recovery} on {pct(cell.data_fraction)} of the data"


def _with_cost(cell: Cell) -> str:
    """``80.1% (achieved 29.8%, 0.71x the teacher's FLOPs)``: the retained % at its real budget and
    compute (``3.1 MFLOPs`` per sample without a teacher to compare with)."""
    parts = [f"achieved {pct(cell.achieved_level)}"] if np.isfinite(cell.achieved_level) else []
    if np.isfinite(cell.flops_vs_teacher):
        parts.append(f"{cell.flops_vs_teacher:.2f}x the teacher's FLOPs")
    elif np.isfinite(cell.flops_per_sample):
        parts.append(compact(cell.flops_per_sample, "FLOPs"))
    return fmt(cell) + (f" ({', '.join(parts)})" if parts else "")


def _below(config: FindingsConfig) -> str:
    return f"below {pct(config.low_level)} compression"


_CLAIMS = {  # claim_id -> config -> (claim, short claim)
    "width_over_layer": lambda c: (
        "Widthwise pruning holds up better than layerwise pruning without recovery and with little data.",
        "width beats layer without recovery and with little data",
    ),
    "projector_suffices": lambda c: (
        f"Finetuning the projector alone suffices {_below(c)}.",
        f"projector-only recovery suffices {_below(c)}",
    ),
    "best_recipe": lambda c: (
        f"SFT with hidden-state distillation (`{c.best_recipe}`) recovers best.",
        f"{c.best_recipe} recovers best",
    ),
    "little_data": lambda c: (
        f"Recovery on {pct(c.target_fraction)} of the data retains more than {c.target_retained_pct:g}% of the performance.",
        f"{pct(c.target_fraction)} of the data retains > {c.target_retained_pct:g}%",
    ),
    "multimodal_calibration": lambda c: (
        "Calibrating importance on multimodal data prunes better than calibrating on text alone (no recovery).",
        "multimodal calibration beats text-only",
    ),
    "hybrid_cut": lambda c: (
        "At the same parameter budget, a hybrid (depth + width) cut retains more than layerwise or widthwise pruning alone.",
        "hybrid beats depth or width alone at the same budget",
    ),
}


def _width_over_layer_line(c: Comparison, config: FindingsConfig) -> str:
    width, layer = c.subject, c.rival
    return (
        f"{_where(width)}, level {pct(width.level)}{_achieved(width, layer)}: width ({width.method}) {fmt(width)} vs "
        f"layer ({layer.method}) {fmt(layer)} "
        f"→ {'width' if c.holds else 'layer'} ahead by {abs(c.gap):.1f} points{_noise(c)}"
    )


def _projector_line(c: Comparison, config: FindingsConfig) -> str:
    row, best = c.subject, c.rival
    return (
        f"{row.method} at {pct(row.level)}, {pct(row.data_fraction)} of the data: projector {fmt(row)} vs "
        f"{best.recovery} {fmt(best)} ({c.gap:+.1f} points) → {'suffices' if c.holds else 'falls short'}"
        f"{_noise(c, f'gap + {config.projector_margin_pct:g} (the margin)')}"
    )


def _best_recipe_line(c: Comparison, config: FindingsConfig) -> str:
    best = c.ranking[0]
    ranking = " > ".join(f"{r.recovery} {r.retained:.1f}" for r in c.ranking)
    verdict = f"best, {c.gap:.1f} points ahead of {c.rival.recovery}" if c.holds else f"{-c.gap:.1f} points behind {c.rival.recovery}"
    return (
        f"{best.method} at {pct(best.level)}, {pct(best.data_fraction)} of the data: {ranking} → {config.best_recipe} {verdict}{_noise(c)}"
    )


def _little_data_line(c: Comparison, config: FindingsConfig) -> str:
    best, full, share = c.subject, c.full_data, pct(config.target_fraction)
    line = f"{best.method} at {pct(best.level)}: best recovery on {share} of the data is {best.recovery}, {fmt(best)}"
    if full is not None:
        line += f" (on all the data: {fmt(full)}, so {share} keeps {100 * best.retained / full.retained:.1f}% of it)"
    return (
        line + f" → {'above' if c.holds else 'below'} {config.target_retained_pct:g}%{_noise(c, f'AVG-% - {config.target_retained_pct:g}')}"
    )


def _calibration_line(c: Comparison, config: FindingsConfig) -> str:
    mm, tx = c.subject, c.rival
    verdict = "a tie" if abs(c.gap) <= EPS else f"{'multimodal' if c.gap > 0 else 'text-only'} ahead by {abs(c.gap):.1f} points"
    return f"{mm.method} at {pct(mm.level)}{_achieved(mm, tx)}: multimodal {fmt(mm)} vs text-only {fmt(tx)} → {verdict}{_noise(c)}"


def _hybrid_line(c: Comparison, config: FindingsConfig) -> str:
    hybrid = c.subject
    versus = " vs ".join(f"{r.method} {_with_cost(r)}" for r in c.ranking)
    return (
        f"{_where(hybrid)}, level {pct(hybrid.level)}: {hybrid.method} {_with_cost(hybrid)} vs {versus} → "
        f"{'hybrid' if c.holds else c.rival.paradigm} ahead by {abs(c.gap):.1f} points{_noise(c)}"
    )


_LINES = {
    "width_over_layer": _width_over_layer_line,
    "projector_suffices": _projector_line,
    "best_recipe": _best_recipe_line,
    "little_data": _little_data_line,
    "multimodal_calibration": _calibration_line,
    "hybrid_cut": _hybrid_line,
}


def _summary(f: Finding) -> str:
    """One sentence with the deciding counts, or which runs would decide it."""
    if not f.comparisons:
        if f.claim_id == "width_over_layer" and not f.missing:
            return "not measured: no level was pruned by both paradigms"
        return _not_measured(f.missing)
    config, held, n = f.config, sum(c.holds for c in f.comparisons), len(f.comparisons)
    if f.claim_id == "width_over_layer":
        zero = [c.holds for c in f.comparisons if c.subject.recovery == "none"]
        after = [c.holds for c in f.comparisons if c.subject.recovery != "none"]
        little = pct(config.little_data_fraction)
        parts = [f"width retains more than layer in {sum(zero)} of {len(zero)} comparisons without recovery"]
        if after:
            parts.append(f"{sum(after)} of {len(after)} after recovery on ≤ {little} of the data")
        else:
            parts.append(f"the little-data half is not measured (no level recovered for both paradigms on ≤ {little})")
        text = "; ".join(parts) + "."
    elif f.claim_id == "projector_suffices":
        text = (
            f"projector-only recovery is within {config.projector_margin_pct:g} points of the best recovery that trains the LLM "
            f"(or ahead of it) in {held} of {n} comparisons {_below(config)}."
        )
    elif f.claim_id == "best_recipe":
        text = f"`{config.best_recipe}` is the best recovery in {held} of {n} (student, data fraction) cells."
    elif f.claim_id == "little_data":
        text = (
            f"the best recovery on {pct(config.target_fraction)} of the data retains more than "
            f"{config.target_retained_pct:g}% in {held} of {n} students."
        )
    elif f.claim_id == "multimodal_calibration":
        ties = sum(abs(c.gap) <= EPS for c in f.comparisons)
        text = (
            f"multimodal calibration retains more in {held} of {n} comparisons without recovery"
            f" (text-only more in {n - held - ties}, the same in {ties})."
        )
    else:
        text = f"the hybrid cut retains more than the better of layerwise and widthwise in {held} of {n} comparisons."
    if f.within_noise:
        text = text.rstrip(".") + (
            f" ({f.within_noise} of these comparisons within noise: their paired 95% interval includes 0, so they do not count)."
        )
    return text


def _context(f: Finding) -> list[str]:
    """Numbers that inform the finding without deciding it."""
    config, lines = f.config, []
    if f.claim_id == "projector_suffices":
        lines += [f"for contrast, at or above {pct(config.low_level)}: {_projector_line(c, config)}" for c in f.contrast]
        lines += [f"without any recovery, {c.method} at {pct(c.level)} retains {fmt(c)}" for c in f.unrecovered]
        if f.no_low_level:
            lines.append(f"no run of the grid is pruned {_below(config)} (prune_runs.levels)")
    else:
        lines += [f"{c.method} at {pct(c.level)} retains {fmt(c)} without recovery" for c in f.unrecovered]
    if f.absent_recipes and f.comparisons:
        lines.append(f"recovery methods of the reference study not in the grid, so not compared: {', '.join(f.absent_recipes)}")
    return lines


def _not_measured(missing: tuple[str, ...]) -> str:
    if not missing:
        return "not measured: the runs needed are not in the grid"
    names = ", ".join(f"`{m}`" for m in missing)
    return f"not measured: run {names} is not in the grid" if len(missing) == 1 else f"not measured: runs {names} are not in the grid"


def finding_section(f: Finding, figure_links: dict[str, str]) -> list[str]:
    """The lines of one finding: claim, verdict and summary, evidence, context, missing runs, figures."""
    text = finding_text(f)
    summary = text.summary.removeprefix(f"{f.verdict}: ")
    out = [f"### ({f.key}) {text.claim}", "", f"**{f.verdict[0].upper() + f.verdict[1:]}**: {summary}", ""]
    out += [f"- {line}" for line in text.evidence]
    out += [f"- context: {line}" for line in dict.fromkeys(text.context)]
    if f.missing and f.verdict != NOT_MEASURED:
        out.append("- runs that would complete the comparison, not in the grid: " + ", ".join(f"`{m}`" for m in f.missing))
    links = [f"[{name}]({figure_links[name]})" for name in FINDING_FIGURES[f.claim_id] if name in figure_links]
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
    comparisons_link: str | None = None,
    pruning_records: list[dict] = (),
) -> str:
    """REPORT.md. ``figure_links`` / ``table_links``: relative paths by figure name / recovery;
    ``extensions``: this study's own questions (:func:`study.report.findings.check_extensions`);
    ``comparisons_link``: the table of every comparison with its paired interval
    (:func:`study.report.findings.comparisons_table`); ``pruning_records``: the ``pruning.json``
    files, for how each paradigm spends its budget."""
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
        *[f"| ({f.key}) {finding_text(f).claim} | **{f.verdict}** |" for f in findings],
        "",
        "A finding *holds* when every comparison that counts (its paired 95% interval excludes 0) agrees with the claim, "
        "*does not hold* when none does, *partly holds* when some do, and is *within noise* when no comparison counts."
        + (f" Every comparison with its interval: [`{Path(comparisons_link).name}`]({comparisons_link})." if comparisons_link else ""),
        "",
    ]
    spending = spending_lines(list(pruning_records))
    disagree = [f"({f.key})" for f in findings if f.verdict not in (HOLDS, NOT_MEASURED)]
    out += [line for f in findings for line in finding_section(f, figure_links)]
    if spending:
        out += [
            "### How each paradigm spends the budget on this teacher",
            "",
            (f"This study's teacher disagrees with the reference study on {', '.join(disagree)}. " if disagree else "")
            + "What each cut removes, from the runs' `pruning.json` (multimodal calibration, main seed):",
            "",
            *[f"- {line}" for line in spending],
            "",
        ]
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
            *[f"| ({f.key}) {finding_text(f).claim} | **{f.verdict}** |" for f in extensions],
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
