"""The reference study's findings, checked against this study's runs.

Each finding is decided from the runs table alone, by a rule stated here (thresholds in
:class:`FindingsConfig`, set from ``params.yaml``'s ``report`` section), on the seed means of
AVG-% (``retained_pct``):

(a) *Widthwise pruning holds up better without recovery / with little data*: at every level where
    both paradigms were pruned, the best widthwise metric retains more than the best layerwise one,
    without recovery, and after each recovery method on at most ``little_data_fraction`` of the data.
(b) *Projector-only finetuning suffices below 20% compression*: at every level below ``low_level``,
    recovering the projector alone retains at least as much as the best recovery that trains the
    LLM too, up to ``projector_margin_pct`` points (same student, same data fraction).
(c) *SFT + hidden-state distillation recovers best*: in every (student, data fraction) cell with
    several recovery methods, ``best_recipe`` retains the most.
(d) *5% of the data retains > 95% of the performance*: for every student recovered on
    ``target_fraction`` of the data, its best recovery retains more than ``target_retained_pct``.

These four are decided on the runs calibrated as the reference study calibrates, on multimodal
data (or on none, for metrics that read no data): text-only calibration is one of this study's own
questions. Those (:func:`check_extensions`), beyond the reference study, are put the same way:

(e) *Multimodal calibration prunes better than text-only calibration*: for every (paradigm,
    metric, level) pruned with both calibrations, without recovery, the multimodal one retains more.
(f) *A hybrid (depth + width) cut retains more than depth or width alone at the same budget*: at
    every level (and recovery) where a hybrid run and a layerwise or widthwise run exist, the best
    hybrid retains more than the best of the others (their achieved levels are shown beside).

The verdict is ``holds`` (every comparison agrees), ``does not hold`` (none does), ``partly holds``
or ``not measured`` (no comparison possible: the runs that would decide it are named, as the
pipeline would name them, ``<paradigm>-<metric>[-text]-<level>-<recipe>-<fraction>``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from study.pruning.naming import run_name as pruned_run_name
from study.report.figures import compact, pct
from study.report.pruning_records import MULTIMODAL, TEXT
from study.report.runs import TEACHER, calibration_of_run

HOLDS, PARTLY, DOES_NOT_HOLD, NOT_MEASURED = "holds", "partly holds", "does not hold", "not measured"
# The recovery methods the reference study compares.
PAPER_RECIPES = ("projector", "sft", "lora", "sft+kd_logit", "sft+kd_hidden", "kd_hidden")
EPS = 1e-9


@dataclass(frozen=True)
class FindingsConfig:
    low_level: float = 0.2  # (b) "below 20% compression"
    little_data_fraction: float = 0.05  # (a) recovery on at most this fraction counts as "little data"
    target_fraction: float = 0.05  # (d)
    target_retained_pct: float = 95.0  # (d)
    best_recipe: str = "sft+kd_hidden"  # (c)
    projector_margin_pct: float = 1.0  # (b) projector-only "suffices" within this many AVG-% points


def findings_config(report_params: dict) -> FindingsConfig:
    """The thresholds of ``params.yaml``'s ``report`` section (its other keys, paths and such, are
    ignored; a threshold it lacks keeps its default)."""
    return FindingsConfig(**{f.name: report_params[f.name] for f in fields(FindingsConfig) if f.name in report_params})


@dataclass
class Finding:
    key: str  # "a" .. "f"
    claim: str
    verdict: str  # holds | partly holds | does not hold | not measured
    summary: str  # one sentence with the deciding numbers
    evidence: list[str] = field(default_factory=list)  # one line per comparison
    context: list[str] = field(default_factory=list)  # numbers that inform but do not decide
    missing: list[str] = field(default_factory=list)  # runs that would decide it and are not in the grid
    figures: list[str] = field(default_factory=list)  # names of study.report.figures.FIGURES
    within_noise: int = 0  # deciding comparisons whose gap is under two standard errors
    short: str = ""  # the claim in a few words, for a one-line verdict (study.report.summary)


def verdict_of(outcomes: list[bool]) -> str:
    if not outcomes:
        return NOT_MEASURED
    if all(outcomes):
        return HOLDS
    return DOES_NOT_HOLD if not any(outcomes) else PARTLY


def run_name(
    paradigm: str, metric: str, level: float, recovery: str = "none", fraction: float | None = None, calibration: str = MULTIMODAL
) -> str:
    """The name the pipeline gives a run (``dvc.yaml``, :mod:`study.pruning.naming`):
    ``layer-block_influence-0.3[-sft-0.05]``, ``layer-block_influence-text-0.3``."""
    name = pruned_run_name(paradigm, metric, level, text_only=calibration == TEXT)
    return name if recovery == "none" else f"{name}-{recovery}-{float(fraction)}"


def cells(runs: pd.DataFrame) -> pd.DataFrame:
    """The pruned runs averaged over seeds: one row per (paradigm, metric, calibration, method,
    level, recovery, data_fraction) with ``retained`` (mean AVG-%), ``sd``, ``seeds``, ``se``, the
    means of ``achieved_level`` and ``flops_per_sample`` (NaN if absent), and ``flops_vs_teacher``
    (``flops_per_sample`` over the teacher's; NaN without a teacher)."""
    pruned = runs[runs["paradigm"] != TEACHER].assign(
        level=lambda t: t["level"].round(6), data_fraction=lambda t: t["data_fraction"].round(6)
    )
    if "calibration" not in pruned:
        pruned = pruned.assign(calibration=[calibration_of_run(str(r), p, {}) for r, p in zip(pruned["run"], pruned["paradigm"])])
    keys = ["paradigm", "metric", "calibration", "method", "level", "recovery", "data_fraction"]
    means = ("achieved_level", "flops_per_sample")
    if pruned.empty:
        return pd.DataFrame(columns=[*keys, "retained", "sd", "seeds", "se", *means, "flops_vs_teacher"])
    for column in ("retained_se", *means):
        if column not in pruned:
            pruned = pruned.assign(**{column: np.nan})
    table = pruned.groupby(keys, as_index=False).agg(
        retained=("retained_pct", "mean"),
        sd=("retained_pct", "std"),
        seeds=("seed", "nunique"),
        se=("retained_se", "mean"),
        **{m: (m, "mean") for m in means},
    )
    table["se"] /= np.sqrt(table["seeds"])  # the standard error of a mean over seeds
    table["flops_vs_teacher"] = table["flops_per_sample"] / _teacher_flops(runs)
    return table


def _teacher_flops(runs: pd.DataFrame) -> float:
    """The teacher's FLOPs per sample (mean over its rows); NaN without a teacher or the column."""
    teacher = runs[runs["paradigm"] == TEACHER]
    return float(teacher["flops_per_sample"].mean()) if "flops_per_sample" in runs and not teacher.empty else np.nan


def noise_note(gap: float, *cells_) -> tuple[bool, str]:
    """Whether ``gap`` (points) is under two standard errors of the difference of ``cells_``
    (one cell: the distance to a threshold), and a note saying so."""
    se = float(np.sqrt(sum(float(c["se"]) ** 2 for c in cells_)))
    if not np.isfinite(se) or abs(gap) >= 2 * se:
        return False, ""
    return True, f" (within noise: under 2 SE = {2 * se:.1f} points, unpaired)"


def fmt(cell) -> str:
    """``94.8%`` or ``94.8% ± 0.6 (3 seeds)``."""
    text = f"{cell['retained']:.1f}%"
    return text + (f" ± {cell['sd']:.1f} ({int(cell['seeds'])} seeds)" if cell["seeds"] > 1 else "")


def check_findings(runs: pd.DataFrame, config: FindingsConfig | None = None) -> list[Finding]:
    """The four findings, in order."""
    config = config or FindingsConfig()
    table = cells(runs)
    table = table[table["calibration"] != TEXT]  # as the reference study calibrates
    findings = [
        paradigm_finding(table, config),
        projector_finding(table, config),
        best_recipe_finding(table, config),
        data_fraction_finding(table, config),
    ]
    return _note_noise(findings)


def _note_noise(findings: list[Finding]) -> list[Finding]:
    for f in findings:
        if f.within_noise:
            f.summary = f.summary.rstrip(".") + f" ({f.within_noise} of these comparisons within the evaluation noise)."
    return findings


def _existing(table: pd.DataFrame) -> set[str]:
    return {
        run_name(r["paradigm"], r["metric"], r["level"], r["recovery"], r["data_fraction"], r["calibration"])
        for r in table.to_dict("records")
    }


def _absent(table: pd.DataFrame, names: list[str]) -> list[str]:
    """``names`` less the runs the table has, sorted and without duplicates."""
    return sorted(set(names) - _existing(table))


# ---------------------------------------------------------------------------------------------
# (a)


def paradigm_finding(table: pd.DataFrame, config: FindingsConfig) -> Finding:
    finding = Finding(
        "a",
        "Widthwise pruning holds up better than layerwise pruning without recovery and with little data.",
        NOT_MEASURED,
        "",
        short="width beats layer without recovery and with little data",
    )
    finding.figures = ["retained_vs_level", "recovery_heatmap"]
    zero = table[table["recovery"] == "none"]
    zero_outcomes = _paradigm_comparisons(zero, ["level"], "no recovery", finding)
    little = table[(table["recovery"] != "none") & (table["data_fraction"] <= config.little_data_fraction + EPS)]
    little_outcomes = _paradigm_comparisons(little, ["level", "recovery", "data_fraction"], None, finding)
    if not little_outcomes:
        finding.missing += _absent(table, _missing_counterparts(table, little, config))
    outcomes = zero_outcomes + little_outcomes
    finding.verdict = verdict_of(outcomes)
    if not outcomes:
        finding.summary = _not_measured(finding.missing) if finding.missing else "not measured: no level was pruned by both paradigms"
        return finding
    parts = [f"width retains more than layer in {sum(zero_outcomes)} of {len(zero_outcomes)} comparisons without recovery"]
    if little_outcomes:
        parts.append(f"{sum(little_outcomes)} of {len(little_outcomes)} after recovery on ≤ {pct(config.little_data_fraction)} of the data")
    else:
        parts.append(
            f"the little-data half is not measured (no level recovered for both paradigms on ≤ {pct(config.little_data_fraction)})"
        )
    finding.summary = "; ".join(parts) + "."
    return finding


def _paradigm_comparisons(frame: pd.DataFrame, keys: list[str], label: str | None, finding: Finding) -> list[bool]:
    outcomes = []
    layer, width = frame[frame["paradigm"] == "layer"], frame[frame["paradigm"] == "width"]
    shared = sorted(
        set(map(tuple, layer[keys].to_numpy())) & set(map(tuple, width[keys].to_numpy())), key=lambda k: (k[0], *map(str, k[1:]))
    )
    for key in shared:
        pick = dict(zip(keys, key))
        best_layer, best_width = (_best(part, pick) for part in (layer, width))
        outcomes.append(bool(best_width["retained"] > best_layer["retained"]))
        where = label or f"{pick['recovery']} on {pct(pick['data_fraction'])} of the data"
        gap = best_width["retained"] - best_layer["retained"]
        noisy, note = noise_note(gap, best_width, best_layer)
        finding.within_noise += noisy
        finding.evidence.append(
            f"{where}, level {pct(pick['level'])}: width ({best_width['method']}) {fmt(best_width)} "
            f"vs layer ({best_layer['method']}) {fmt(best_layer)} → {'width' if outcomes[-1] else 'layer'} ahead "
            f"by {abs(gap):.1f} points{note}"
        )
    return outcomes


def _best(frame: pd.DataFrame, pick: dict) -> pd.Series:
    mask = np.ones(len(frame), dtype=bool)
    for column, value in pick.items():
        mask &= np.isclose(frame[column], value) if isinstance(value, float) else (frame[column] == value).to_numpy()
    chosen = frame[mask]
    return chosen.loc[chosen["retained"].idxmax()]


def _missing_counterparts(table: pd.DataFrame, little: pd.DataFrame, config: FindingsConfig) -> list[str]:
    """The runs that would pair a little-data recovery of one paradigm with the other's."""
    missing = []
    for row in little.to_dict("records"):
        other = "width" if row["paradigm"] == "layer" else "layer" if row["paradigm"] == "width" else None
        if other:
            missing.append(run_name(other, _usual_metric(table, other), row["level"], row["recovery"], row["data_fraction"]))
    if not missing:  # no little-data recovery at all
        for paradigm in ("layer", "width"):
            level = _recovery_level(table, paradigm, config)
            missing.append(run_name(paradigm, _usual_metric(table, paradigm), level, config.best_recipe, config.little_data_fraction))
    return sorted(set(missing))


# ---------------------------------------------------------------------------------------------
# (b)


def projector_finding(table: pd.DataFrame, config: FindingsConfig) -> Finding:
    below = f"below {pct(config.low_level)} compression"
    finding = Finding(
        "b", f"Finetuning the projector alone suffices {below}.", NOT_MEASURED, "", short=f"projector-only recovery suffices {below}"
    )
    finding.figures = ["recovery_heatmap"]
    recovered_cells = table[table["recovery"] != "none"]
    low = table[table["level"] < config.low_level - EPS]
    outcomes = _projector_comparisons(
        recovered_cells[recovered_cells["level"] < config.low_level - EPS], config, finding.evidence, finding.missing, finding
    )
    high_lines: list[str] = []
    _projector_comparisons(recovered_cells[recovered_cells["level"] >= config.low_level - EPS], config, high_lines, [], None)
    finding.context += [f"for contrast, at or above {pct(config.low_level)}: {line}" for line in high_lines]
    for row in low[low["recovery"] == "none"].to_dict("records"):
        finding.context.append(f"without any recovery, {row['method']} at {pct(row['level'])} retains {fmt(row)}")
    finding.verdict = verdict_of(outcomes)
    if outcomes:
        finding.summary = (
            f"projector-only recovery is within {config.projector_margin_pct:g} points of the best recovery that trains the LLM "
            f"(or ahead of it) in {sum(outcomes)} of {len(outcomes)} comparisons {below}."
        )
        return finding
    if not finding.missing:
        fraction = _usual_fraction(table, config)
        students = low[low["recovery"] == "none"][["paradigm", "metric", "level"]].drop_duplicates().to_dict("records")
        if not students:
            students = [{"paradigm": p, "metric": _usual_metric(table, p), "level": 0.15} for p in ("layer", "width")]
            finding.context.append(f"no run of the grid is pruned {below} (prune_runs.levels)")
        for s in students:
            finding.missing += [run_name(s["paradigm"], s["metric"], s["level"], r, fraction) for r in ("projector", "sft")]
    finding.missing = _absent(table, finding.missing)
    finding.summary = _not_measured(finding.missing)
    return finding


def _projector_comparisons(
    frame: pd.DataFrame, config: FindingsConfig, lines: list[str], missing: list[str], finding: Finding | None
) -> list[bool]:
    outcomes = []
    for row in frame[frame["recovery"] == "projector"].to_dict("records"):
        same = frame[
            (frame["method"] == row["method"])
            & np.isclose(frame["level"], row["level"])
            & np.isclose(frame["data_fraction"], row["data_fraction"])
            & ~frame["recovery"].isin(["none", "projector"])
        ]
        if same.empty:
            missing.append(run_name(row["paradigm"], row["metric"], row["level"], "sft", row["data_fraction"]))
            continue
        best = same.loc[same["retained"].idxmax()]
        outcomes.append(bool(row["retained"] >= best["retained"] - config.projector_margin_pct))
        gap = row["retained"] - best["retained"]
        noisy, note = noise_note(gap + config.projector_margin_pct, row, best)
        if finding is not None:
            finding.within_noise += noisy
        lines.append(
            f"{row['method']} at {pct(row['level'])}, {pct(row['data_fraction'])} of the data: projector {fmt(row)} vs "
            f"{best['recovery']} {fmt(best)} ({gap:+.1f} points) → {'suffices' if outcomes[-1] else 'falls short'}{note}"
        )
    return outcomes


# ---------------------------------------------------------------------------------------------
# (c)


def best_recipe_finding(table: pd.DataFrame, config: FindingsConfig) -> Finding:
    recipe = config.best_recipe
    finding = Finding(
        "c", f"SFT with hidden-state distillation (`{recipe}`) recovers best.", NOT_MEASURED, "", short=f"{recipe} recovers best"
    )
    finding.figures = ["recovery_heatmap"]
    recovered_cells = table[table["recovery"] != "none"]
    outcomes = []
    for _, group in recovered_cells.groupby(["method", "level", "data_fraction"], sort=True):
        if recipe not in set(group["recovery"]) or group["recovery"].nunique() < 2:
            continue
        ranked = group.sort_values("retained", ascending=False)
        best, ours = ranked.iloc[0], ranked[ranked["recovery"] == recipe].iloc[0]
        outcomes.append(bool(best["recovery"] == recipe))
        ranking = " > ".join(f"{r['recovery']} {r['retained']:.1f}" for r in ranked.to_dict("records"))
        runner_up = ranked.iloc[1] if outcomes[-1] else best
        gap = ours["retained"] - runner_up["retained"]
        noisy, note = noise_note(gap, ours, runner_up)
        finding.within_noise += noisy
        verdict = (
            f"best, {gap:.1f} points ahead of {runner_up['recovery']}" if outcomes[-1] else f"{-gap:.1f} points behind {best['recovery']}"
        )
        finding.evidence.append(
            f"{best['method']} at {pct(best['level'])}, {pct(best['data_fraction'])} of the data: {ranking} → {recipe} {verdict}{note}"
        )
        finding.context += _without_recovery(table, best)
    measured = set(recovered_cells["recovery"])
    absent = [r for r in PAPER_RECIPES if r not in measured]
    if absent and outcomes:
        finding.context.append(f"recovery methods of the reference study not in the grid, so not compared: {', '.join(absent)}")
    finding.verdict = verdict_of(outcomes)
    if outcomes:
        finding.summary = f"`{recipe}` is the best recovery in {sum(outcomes)} of {len(outcomes)} (student, data fraction) cells."
        return finding
    cells_ = recovered_cells[["paradigm", "metric", "level", "data_fraction"]].drop_duplicates().to_dict("records")
    if not cells_:
        fraction = _usual_fraction(table, config)
        cells_ = [
            {"paradigm": p, "metric": _usual_metric(table, p), "level": _recovery_level(table, p, config), "data_fraction": fraction}
            for p in ("layer", "width")
        ]
    for c in cells_:
        finding.missing += [run_name(c["paradigm"], c["metric"], c["level"], r, c["data_fraction"]) for r in (recipe, "sft")]
    finding.missing = _absent(table, finding.missing)
    finding.summary = _not_measured(finding.missing)
    return finding


# ---------------------------------------------------------------------------------------------
# (d)


def data_fraction_finding(table: pd.DataFrame, config: FindingsConfig) -> Finding:
    share, target = pct(config.target_fraction), config.target_retained_pct
    finding = Finding(
        "d",
        f"Recovery on {share} of the data retains more than {target:g}% of the performance.",
        NOT_MEASURED,
        "",
        short=f"{share} of the data retains > {target:g}%",
    )
    finding.figures = ["data_fraction", "recovery_heatmap"]
    recovered_cells = table[table["recovery"] != "none"]
    at = recovered_cells[np.isclose(recovered_cells["data_fraction"], config.target_fraction)]
    outcomes = []
    for _, group in at.groupby(["method", "level"], sort=True):
        best = group.loc[group["retained"].idxmax()]
        outcomes.append(bool(best["retained"] > target))
        line = f"{best['method']} at {pct(best['level'])}: best recovery on {share} of the data is {best['recovery']}, {fmt(best)}"
        full = recovered_cells[
            (recovered_cells["method"] == best["method"])
            & np.isclose(recovered_cells["level"], best["level"])
            & (recovered_cells["recovery"] == best["recovery"])
            & np.isclose(recovered_cells["data_fraction"], 1.0)
        ]
        if not full.empty:
            line += (
                f" (on all the data: {fmt(full.iloc[0])}, so {share} keeps {100 * best['retained'] / full.iloc[0]['retained']:.1f}% of it)"
            )
        noisy, note = noise_note(best["retained"] - target, best)
        finding.within_noise += noisy
        finding.evidence.append(line + f" → {'above' if outcomes[-1] else 'below'} {target:g}%{note}")
        finding.context += _without_recovery(table, best)
    finding.verdict = verdict_of(outcomes)
    if outcomes:
        finding.summary = (
            f"the best recovery on {share} of the data retains more than {target:g}% in {sum(outcomes)} of {len(outcomes)} students."
        )
        return finding
    students = recovered_cells[["paradigm", "metric", "level"]].drop_duplicates().to_dict("records")
    if not students:
        students = [
            {"paradigm": p, "metric": _usual_metric(table, p), "level": _recovery_level(table, p, config)} for p in ("layer", "width")
        ]
    finding.missing = _absent(
        table, [run_name(s["paradigm"], s["metric"], s["level"], config.best_recipe, config.target_fraction) for s in students]
    )
    finding.summary = _not_measured(finding.missing)
    return finding


# ---------------------------------------------------------------------------------------------
# beyond the reference study: (e) calibration data, (f) hybrid cuts


def check_extensions(runs: pd.DataFrame, config: FindingsConfig | None = None) -> list[Finding]:
    """This study's own questions, put as findings: (e) calibration data, (f) hybrid cuts."""
    table = cells(runs)
    return _note_noise([calibration_finding(table), hybrid_finding(table)])


def calibration_finding(table: pd.DataFrame) -> Finding:
    finding = Finding(
        "e",
        "Calibrating importance on multimodal data prunes better than calibrating on text alone (no recovery).",
        NOT_MEASURED,
        "",
        short="multimodal calibration beats text-only",
    )
    finding.figures = ["retained_vs_level", "layer_importance", "kept_widths"]
    zero = table[table["recovery"] == "none"]
    keys = ["paradigm", "metric", "level"]
    multimodal, text = zero[zero["calibration"] == MULTIMODAL], zero[zero["calibration"] == TEXT]
    outcomes, ties = [], 0
    for key in sorted(set(map(tuple, multimodal[keys].to_numpy())) & set(map(tuple, text[keys].to_numpy())), key=str):
        pick = dict(zip(keys, key))
        mm, tx = _best(multimodal, pick), _best(text, pick)
        gap = mm["retained"] - tx["retained"]
        outcomes.append(bool(gap > EPS))
        ties += abs(gap) <= EPS
        noisy, note = noise_note(gap, mm, tx)
        finding.within_noise += noisy
        verdict = "a tie" if abs(gap) <= EPS else f"{'multimodal' if gap > 0 else 'text-only'} ahead by {abs(gap):.1f} points"
        finding.evidence.append(f"{mm['method']} at {pct(pick['level'])}: multimodal {fmt(mm)} vs text-only {fmt(tx)} → {verdict}{note}")
    finding.verdict = verdict_of(outcomes)
    if outcomes:
        behind = len(outcomes) - sum(outcomes) - ties
        finding.summary = (
            f"multimodal calibration retains more in {sum(outcomes)} of {len(outcomes)} comparisons without recovery"
            f" (text-only more in {behind}, the same in {ties})."
        )
        return finding
    # the runs that would pair each calibrated run with the other calibration
    wanted = [
        run_name(r["paradigm"], r["metric"], r["level"], calibration=TEXT if r["calibration"] == MULTIMODAL else MULTIMODAL)
        for r in zero[zero["calibration"].isin([MULTIMODAL, TEXT])].to_dict("records")
    ]
    if not wanted:
        usual = {"layer": "block_influence", "width": "taylor"}  # the study's default methods, for the example names
        wanted = [run_name(p, _usual_metric(table, p, m), 0.3, calibration=c) for p, m in usual.items() for c in (MULTIMODAL, TEXT)]
    finding.missing = _absent(table, wanted)
    finding.summary = _not_measured(finding.missing)
    return finding


def hybrid_finding(table: pd.DataFrame) -> Finding:
    finding = Finding(
        "f",
        "At the same parameter budget, a hybrid (depth + width) cut retains more than layerwise or widthwise pruning alone.",
        NOT_MEASURED,
        "",
        short="hybrid beats depth or width alone at the same budget",
    )
    finding.figures = ["retained_vs_level", "pareto"]
    frame = table[table["calibration"] != TEXT]
    keys = ["level", "recovery", "data_fraction"]
    hybrid, others = frame[frame["paradigm"] == "hybrid"], frame[frame["paradigm"].isin(["layer", "width"])]
    outcomes = []
    for key in sorted(set(map(tuple, hybrid[keys].to_numpy())), key=lambda k: (k[0], str(k[1]), k[2])):
        pick = dict(zip(keys, key))
        best_hybrid = _best(hybrid, pick)
        rivals = {p: _best_or_none(others[others["paradigm"] == p], pick) for p in ("layer", "width")}
        halves = dict(zip(("layer", "width"), str(best_hybrid["metric"]).split("+")))  # block_influence+taylor
        for paradigm, rival in rivals.items():
            if rival is None:
                metric = _usual_metric(table, paradigm, halves.get(paradigm, "<metric>"))
                finding.missing.append(run_name(paradigm, metric, pick["level"], pick["recovery"], pick["data_fraction"]))
        present = [r for r in rivals.values() if r is not None]
        if not present:
            continue
        best_rival = max(present, key=lambda r: r["retained"])
        gap = best_hybrid["retained"] - best_rival["retained"]
        outcomes.append(bool(gap > 0))
        noisy, note = noise_note(gap, best_hybrid, best_rival)
        finding.within_noise += noisy
        where = "no recovery" if pick["recovery"] == "none" else f"{pick['recovery']} on {pct(pick['data_fraction'])} of the data"
        versus = " vs ".join(f"{r['method']} {_with_cost(r)}" for r in present)
        finding.evidence.append(
            f"{where}, level {pct(pick['level'])}: {best_hybrid['method']} {_with_cost(best_hybrid)} vs {versus} → "
            f"{'hybrid' if outcomes[-1] else best_rival['paradigm']} ahead by {abs(gap):.1f} points{note}"
        )
    finding.verdict = verdict_of(outcomes)
    if outcomes:
        finding.summary = (
            f"the hybrid cut retains more than the better of layerwise and widthwise in {sum(outcomes)} of {len(outcomes)} comparisons."
        )
        finding.missing = _absent(table, finding.missing)
        return finding
    if hybrid.empty:
        levels = sorted(set(frame[frame["recovery"] == "none"]["level"])) or [0.3]
        finding.missing = [run_name("hybrid", _usual_metric(table, "hybrid", "block_influence+taylor"), level) for level in levels]
    finding.missing = _absent(table, finding.missing)
    finding.summary = _not_measured(finding.missing)
    return finding


def _best_or_none(frame: pd.DataFrame, pick: dict):
    chosen = frame[np.isclose(frame["level"], pick["level"]) & (frame["recovery"] == pick["recovery"])]
    chosen = chosen[np.isclose(chosen["data_fraction"], pick["data_fraction"])]
    return None if chosen.empty else chosen.loc[chosen["retained"].idxmax()]


def _with_cost(cell) -> str:
    """``80.1% (achieved 29.8%, 0.71x the teacher's FLOPs)``: the retained % at its real budget and
    compute (``3.1 MFLOPs`` per sample without a teacher to compare with)."""
    parts = [f"achieved {pct(cell['achieved_level'])}"] if np.isfinite(cell.get("achieved_level", np.nan)) else []
    if np.isfinite(cell.get("flops_vs_teacher", np.nan)):
        parts.append(f"{cell['flops_vs_teacher']:.2f}x the teacher's FLOPs")
    elif np.isfinite(cell.get("flops_per_sample", np.nan)):
        parts.append(compact(cell["flops_per_sample"], "FLOPs"))
    return fmt(cell) + (f" ({', '.join(parts)})" if parts else "")


# ---------------------------------------------------------------------------------------------


def _without_recovery(table: pd.DataFrame, cell) -> list[str]:
    """The same student before recovery, to show what recovery added (or cost)."""
    zero = table[(table["recovery"] == "none") & (table["method"] == cell["method"]) & np.isclose(table["level"], cell["level"])]
    return [f"{cell['method']} at {pct(cell['level'])} retains {fmt(row)} without recovery" for row in zero.to_dict("records")]


def _not_measured(missing: list[str]) -> str:
    if not missing:
        return "not measured: the runs needed are not in the grid"
    names = ", ".join(f"`{m}`" for m in missing)
    return f"not measured: run {names} is not in the grid" if len(missing) == 1 else f"not measured: runs {names} are not in the grid"


def _usual_metric(table: pd.DataFrame, paradigm: str, default: str = "<metric>") -> str:
    metrics = table[table["paradigm"] == paradigm]["metric"]
    return str(metrics.mode().iloc[0]) if not metrics.empty else default


def _usual_fraction(table: pd.DataFrame, config: FindingsConfig) -> float:
    fractions = table[table["recovery"] != "none"]["data_fraction"]
    return float(fractions.mode().iloc[0]) if not fractions.empty else config.target_fraction


def _recovery_level(table: pd.DataFrame, paradigm: str, config: FindingsConfig) -> float:
    """A level worth recovering for an example run name: the lowest at or above ``low_level``."""
    levels = sorted(table[(table["paradigm"] == paradigm) & (table["level"] >= config.low_level - EPS)]["level"])
    return levels[0] if levels else 0.3


def verdict_counts(findings: list[Finding]) -> dict[str, int]:
    counts = dict.fromkeys((HOLDS, PARTLY, DOES_NOT_HOLD, NOT_MEASURED), 0)
    for f in findings:
        counts[f.verdict] += 1
    return counts
