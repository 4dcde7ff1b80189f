"""The study's figures (seaborn on matplotlib ``Figure`` objects): one function per figure, taking
the runs table (or the pruning records) and returning the figure; :func:`save_figures` writes PNGs.

Figures are built without ``pyplot``, so nothing is shown or kept open behind the caller's back: a
notebook shows one with ``display(fig)``. When a figure's runs are absent, the function returns a
placeholder that says so ("no runs: ...") instead of failing or skipping, so every clone writes
the same files (see :mod:`study.report`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from study.report.pruning_records import block_importance, kept_widths
from study.report.runs import UNPRUNED

# The reference study's recovery methods, in the order its tables list them; others follow sorted.
RECOVERY_ORDER = ("none", "projector", "lora", "sft", "sft+kd_logit", "kd_logit", "sft+kd_hidden", "kd_hidden")
FIGURES = ("retained_vs_level", "recovery_heatmap", "data_fraction", "pareto", "layer_importance", "kept_widths")
RETAINED = "retained % (AVG-%)"


# ---------------------------------------------------------------------------------------------
# selections shared by the figures, tables and findings


def zero_shot(runs: pd.DataFrame) -> pd.DataFrame:
    """Pruned runs without recovery."""
    return runs[(runs["paradigm"] != UNPRUNED) & (runs["recovery"] == "none")]


def recovered(runs: pd.DataFrame) -> pd.DataFrame:
    """Pruned runs after a recovery."""
    return runs[(runs["paradigm"] != UNPRUNED) & (runs["recovery"] != "none")]


def recovery_order(names: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(names))
    return [r for r in RECOVERY_ORDER if r in names] + sorted(n for n in names if n not in RECOVERY_ORDER)


def main_fraction(runs: pd.DataFrame) -> float | None:
    """The data fraction most recovered runs use (the smallest on a tie); None without any."""
    fractions = recovered(runs)["data_fraction"].round(6)
    if fractions.empty:
        return None
    counts = fractions.value_counts()
    return float(min(counts[counts == counts.max()].index))


def pct(x: float) -> str:
    """0.15 -> '15%'."""
    return f"{100 * float(x):.4g}%"


def compact(value: float, unit: str = "") -> str:
    """``3.1e6, "FLOPs"`` -> ``3.1 MFLOPs``, ``1.26e6`` -> ``1.26 M``: three significant digits and an SI prefix."""
    prefixes = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
    rounded = float(f"{value:.3g}")  # 999.96e3 is 1 M, not 1e+03 k
    scale, prefix = next(((s, p) for s, p in prefixes if abs(rounded) >= s), (1.0, ""))
    return f"{rounded / scale:.3g} {prefix}{unit}".rstrip()


def seeds_per_point(runs: pd.DataFrame, keys: list[str]) -> int:
    """The largest number of seeds behind one point (1 when a figure shows single runs)."""
    return int(runs.groupby(keys)["seed"].nunique().max()) if not runs.empty else 0


def pareto_front(points: pd.DataFrame, x: str, y: str, minimize_x: bool = True) -> pd.DataFrame:
    """The rows no other row beats on both ``x`` (lower is better when ``minimize_x``) and ``y``
    (higher is better), sorted from the best ``x`` to the worst."""
    ordered = points.dropna(subset=[x, y]).sort_values([x, y], ascending=[minimize_x, False], kind="stable")
    keep, best = [], -np.inf
    for index, value in ordered[y].items():
        if value > best:
            keep.append(index)
            best = value
    return ordered.loc[keep]


# ---------------------------------------------------------------------------------------------
# figures


def placeholder(title: str, message: str) -> Figure:
    """A figure that says what is missing."""
    fig = Figure(figsize=(6.4, 2.4), layout="constrained")
    ax = fig.subplots()
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11, color="0.35")
    fig.suptitle(title)
    return fig


def retained_vs_level(runs: pd.DataFrame) -> Figure:
    """Retained % against the achieved compression level, one line per paradigm/metric, for the
    runs without recovery; a band of one standard deviation when there are several seeds."""
    title = "Retained performance without recovery"
    data = zero_shot(runs).copy()
    if data.empty:
        return placeholder(title, "no runs: no pruned run without recovery in the table")
    # one x per (method, requested level): the seeds of a level may round to slightly different budgets
    data["removed"] = data.groupby(["method", "level"])["achieved_level"].transform("mean")
    seeds = seeds_per_point(data, ["method", "level"])
    fig, ax = _figure()
    sns.lineplot(
        data=data,
        x="removed",
        y="retained_pct",
        hue="method",
        style="method",
        markers=True,
        dashes=False,
        errorbar="sd" if seeds > 1 else None,
        ax=ax,
    )
    ax.axhline(100, color="0.4", linestyle=":", linewidth=1, label="teacher")
    # a tick per requested level, at and labelled with what its runs achieved
    ticks = data.groupby("level")["removed"].agg(["mean", "min", "max"])
    ax.set_xticks(ticks["mean"].to_numpy(), [f"{pct(level)}\n({_span(t['min'], t['max'])})" for level, t in ticks.iterrows()])
    ax.set(xlabel="level requested (decoder-layer parameters removed, achieved)", ylabel=RETAINED)
    ax.legend(title=None)
    fig.suptitle(f"{title} ({_seed_note(seeds)})")
    return fig


def recovery_heatmap(runs: pd.DataFrame, fraction: float | None = None) -> Figure:
    """Retained % of every recovery method (rows, ``none`` = no recovery) at every level (columns),
    one panel per paradigm/metric, for the recovered runs on ``fraction`` of the data (default:
    the fraction most of them use); mean over seeds."""
    title = "Recovery method x compression level"
    if recovered(runs).empty:
        return placeholder(title, "no runs: no recovered run in the table")
    fraction = main_fraction(runs) if fraction is None else fraction
    chosen = recovered(runs)
    chosen = chosen[np.isclose(chosen["data_fraction"], fraction)]
    if chosen.empty:
        return placeholder(title, f"no runs: no recovered run on {pct(fraction)} of the data")
    methods = sorted(chosen["method"].unique())
    cells = pd.concat([zero_shot(runs)[lambda t: t["method"].isin(methods)], chosen])
    vmin, vmax = cells["retained_pct"].min(), cells["retained_pct"].max()
    fig, axes = _panels(ncols=len(methods), width=4.2 * len(methods) + 1, height=3.6)
    for i, (ax, method) in enumerate(zip(axes, methods)):
        table = cells[cells["method"] == method].pivot_table(index="recovery", columns="level", values="retained_pct", aggfunc="mean")
        table = table.reindex(recovery_order(table.index))
        achieved = cells[cells["method"] == method].groupby("level")["achieved_level"].mean()
        table.columns = [f"{pct(level)}\n({100 * achieved[level]:.1f}%)" for level in table.columns]
        sns.heatmap(table, annot=True, fmt=".1f", cmap="viridis", vmin=vmin, vmax=vmax, cbar=i == len(methods) - 1, ax=ax)
        ax.set(title=method, xlabel="level requested (achieved)", ylabel="recovery" if i == 0 else "")
    fig.suptitle(f"{title}: {RETAINED}, recovery on {pct(fraction)} of the data")
    return fig


def data_fraction_curves(runs: pd.DataFrame) -> Figure:
    """Retained % against the fraction of the training data used for recovery, one panel per
    paradigm/metric, one line per recovery method (and level)."""
    title = "Retained performance against recovery data"
    data = recovered(runs).copy()
    fractions = sorted(data["data_fraction"].round(6).unique())
    if len(fractions) < 2:
        used = ", ".join(pct(f) for f in fractions) or "none"
        return placeholder(title, f"no runs: no data-fraction sweep (recovered runs use {used} of the data)")
    data["level "] = data["level"].map(pct)
    methods = sorted(data["method"].unique())
    seeds = seeds_per_point(data, ["method", "level", "recovery", "data_fraction"])
    fig, axes = _panels(ncols=len(methods), width=5.2 * len(methods), height=4.0, sharey=True)
    for ax, method in zip(axes, methods):
        sns.lineplot(
            data=data[data["method"] == method],
            x="data_fraction",
            y="retained_pct",
            hue="recovery",
            hue_order=recovery_order(data["recovery"]),
            style="level ",
            markers=True,
            errorbar="sd" if seeds > 1 else None,
            ax=ax,
        )
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.axhline(100, color="0.4", linestyle=":", linewidth=1)
        ax.axhline(95, color="tab:red", linestyle=":", linewidth=1)
        ax.set(title=method, xlabel="fraction of the training data", ylabel=RETAINED)
    fig.suptitle(f"{title} ({_seed_note(seeds)}; dotted: 100% and 95%)")
    return fig


def pareto(runs: pd.DataFrame) -> Figure:
    """Retained % against deterministic cost (FLOPs per sample, LLM parameters) for every run, with
    the Pareto front of each; measured speed is machine-specific and not in the runs table."""
    title = "Accuracy against compute and size"
    axes_spec = [
        ("flops_per_sample", "FLOPs per sample (lower is better)"),
        ("llm_params", "LLM parameters (lower is better)"),
    ]
    data = runs.dropna(subset=["retained_pct"])
    axes_spec = [spec for spec in axes_spec if spec[0] in data and data[spec[0]].notna().any()]
    if not axes_spec:
        return placeholder(title, "no runs: no run with efficiency counts (efficiency.flops_per_sample / llm_params)")
    fig, axes = _panels(ncols=len(axes_spec), width=6.0 * len(axes_spec), height=4.4, sharey=True)
    for i, (ax, (column, label)) in enumerate(zip(axes, axes_spec)):
        points = data.dropna(subset=[column])
        sns.scatterplot(
            data=points, x=column, y="retained_pct", hue="method", style="recovery", s=70, ax=ax, legend=i == len(axes_spec) - 1
        )
        front = pareto_front(points, column, "retained_pct")
        ax.plot(front[column], front["retained_pct"], color="0.3", linestyle="--", linewidth=1, zorder=0, label="Pareto front")
        ax.set_xscale("log")
        ax.set(xlabel=f"{label}, log scale", ylabel=RETAINED)
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    fig.suptitle(f"{title} (one point per run; dashed: Pareto front)")
    return fig


def layer_importance(records: list[dict]) -> Figure:
    """Per decoder block of the teacher: the importance score of each layerwise metric (and
    calibration), and which blocks every layerwise or hybrid run removed (any of its seeds)."""
    title = "Layerwise pruning: block importance and removed blocks"
    table = block_importance(records)
    if table.empty:
        return placeholder(title, "no runs: no layerwise pruning.json here (the pruned folders are DVC-cached: run the prune stages)")
    fig, (ax_scores, ax_kept) = _panels(ncols=2, width=12, height=1.6 + 0.45 * max(5, table["label"].nunique()))
    scores = table.dropna(subset=["score"])
    if scores.empty:
        ax_scores.text(0.5, 0.5, "no scores recorded (metric without scores)", ha="center", transform=ax_scores.transAxes)
    else:
        scored_by = scores["layer_metric"] + np.where(scores["calibration"] == "text", " (text)", "")
        sns.barplot(data=scores.assign(scored_by=scored_by), x="block", y="score", hue="scored_by", errorbar=None, ax=ax_scores)
        ax_scores.legend(title=None)
    ax_scores.set(title="importance (higher: kept first; mean over seeds)", xlabel="decoder block of the teacher")
    kept = table.pivot_table(index="label", columns="block", values="removed", aggfunc="max").astype(float)
    order = table.drop_duplicates("label").sort_values(["metric", "calibration", "level"])["label"]
    sns.heatmap(1 - kept.loc[order], cmap=["tab:red", "tab:blue"], vmin=0, vmax=1, cbar=False, linewidths=0.5, ax=ax_kept)
    ax_kept.set(title="kept (blue) and removed (red, by any seed) blocks", xlabel="decoder block of the teacher", ylabel="")
    fig.suptitle(title)
    return fig


def kept_width_figure(records: list[dict]) -> Figure:
    """Per decoder block of the teacher: the query heads, KV heads and MLP channels each widthwise
    or hybrid run kept (mean over seeds; blank: a block the hybrid cut removed)."""
    title = "Widthwise pruning: kept widths per layer"
    table = kept_widths(records)
    if table.empty:
        return placeholder(title, "no runs: no widthwise pruning.json here (the pruned folders are DVC-cached: run the prune stages)")
    order = table.drop_duplicates("label").sort_values(["metric", "calibration", "level"])["label"]
    components = list(dict.fromkeys(table["component"]))
    fig, axes = _panels(ncols=len(components), width=4.4 * len(components) + 1.5, height=1.2 + 0.5 * len(order))
    for i, (ax, component) in enumerate(zip(axes, components)):
        kept = table[table["component"] == component].pivot_table(index="label", columns="layer", values="kept", aggfunc="mean")
        sns.heatmap(kept.loc[order], annot=True, fmt=".0f", cmap="Blues", vmin=0, cbar=False, linewidths=0.5, ax=ax)
        ax.set(title=f"{component} kept", xlabel="decoder block of the teacher", ylabel="")
        if i:
            ax.set_yticklabels([])
    fig.suptitle(title)
    return fig


def comparison(table: pd.DataFrame) -> Figure:
    """Bars of two runs' per-family scores and mean, from :func:`study.report.runs.compare_runs`."""
    scores = table.drop(index=["relative_score"], errors="ignore").drop(columns="difference")
    long = scores.rename_axis("family").reset_index().melt(id_vars="family", var_name="run", value_name="score")
    fig, ax = _figure(width=max(6.4, 0.9 * len(scores) + 2), height=3.8)
    sns.barplot(data=long, x="family", y="score", hue="run", ax=ax)
    ax.set(xlabel="", ylabel="score", ylim=(0, 1))
    ax.tick_params(axis="x", rotation=30)
    fig.suptitle("Per-family scores of two runs")
    return fig


def draw_figure(name: str, runs: pd.DataFrame, pruning_records: list[dict] = (), heatmap_fraction: float | None = None) -> Figure:
    """One figure of :data:`FIGURES` by name."""
    drawers = {
        "retained_vs_level": lambda: retained_vs_level(runs),
        "recovery_heatmap": lambda: recovery_heatmap(runs, heatmap_fraction),
        "data_fraction": lambda: data_fraction_curves(runs),
        "pareto": lambda: pareto(runs),
        "layer_importance": lambda: layer_importance(list(pruning_records)),
        "kept_widths": lambda: kept_width_figure(list(pruning_records)),
    }
    if name not in drawers:
        raise KeyError(f"unknown figure {name!r}; the figures are {list(FIGURES)}")
    return drawers[name]()


def draw_figures(
    runs: pd.DataFrame, pruning_records: list[dict], heatmap_fraction: float | None = None, names: Iterable[str] = FIGURES
) -> dict[str, Figure]:
    """The figures of the report by name (all of :data:`FIGURES` by default)."""
    return {name: draw_figure(name, runs, pruning_records, heatmap_fraction) for name in names}


def figure_paths(out_dir: str | Path, names: Iterable[str] = FIGURES) -> dict[str, Path]:
    """Where :func:`save_figures` writes each figure: ``<out_dir>/<name>.png``, by name."""
    return {name: Path(out_dir) / f"{name}.png" for name in names}


def save_figures(figures: dict[str, Figure], out_dir: str | Path, dpi: int = 120) -> dict[str, Path]:
    """``<out_dir>/<name>.png`` for every figure; returns the paths by name."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    paths = figure_paths(out_dir, figures)
    for name, fig in figures.items():
        fig.savefig(paths[name], dpi=dpi, bbox_inches="tight")
    return paths


# ---------------------------------------------------------------------------------------------


def _figure(width: float = 6.4, height: float = 4.2):
    fig, axes = _panels(1, width, height)
    return fig, axes[0]


def _panels(ncols: int, width: float, height: float, **kwargs) -> tuple[Figure, list]:
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(1, ncols, squeeze=False, **kwargs)[0]
    return fig, list(axes)


def _span(low: float, high: float) -> str:
    """``25.0%``, or ``24.9-25.1%`` when the runs of a level achieved different budgets."""
    low, high = round(100 * low, 1), round(100 * high, 1)
    return f"{low:.1f}%" if low == high else f"{low:.1f}-{high:.1f}%"


def _seed_note(seeds: int) -> str:
    return f"mean ± sd over {seeds} seeds" if seeds > 1 else "one seed per point"
