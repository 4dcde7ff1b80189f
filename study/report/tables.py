"""Markdown tables in the reference paper's layout: one table per recovery method, rows paradigm x
level (the teacher first), columns the per-benchmark scores (x 100) and AVG-%.

Seeds are averaged; with several seeds a ``Seeds`` column appears and AVG-% reads ``mean ± sd``.
A recovery run on several data fractions gets one row per fraction (the ``Data`` column).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from study.report.figures import pct, recovered, recovery_order, zero_shot
from study.report.runs import SCORE_PREFIX, UNPRUNED, families

PARADIGM_ORDER = ("layer", "width", "hybrid")


def markdown_table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    """A GitHub Markdown table; ``align`` per column: ``l`` or ``r`` (default: left)."""
    align = align or ["l"] * len(header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(str(cell).replace("|", "\\|") for cell in line) + " |" for line in lines) + "\n"


def seed_means(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, level, recovery, data fraction): the mean of every number over seeds,
    ``seeds`` (how many) and ``retained_sd``."""
    keys = ["paradigm", "metric", "method", "level", "recovery", "data_fraction"]
    rounded = runs.assign(level=runs["level"].round(6), data_fraction=runs["data_fraction"].round(6))
    numbers = [c for c in rounded.columns if c not in keys and pd.api.types.is_numeric_dtype(rounded[c]) and c != "seed"]
    grouped = rounded.groupby(keys, as_index=False, sort=False)
    table = grouped[numbers].mean()
    table["seeds"] = grouped["seed"].nunique()["seed"]
    table["retained_sd"] = grouped["retained_pct"].std()["retained_pct"]
    return table


def recovery_table(runs: pd.DataFrame, recovery: str) -> str:
    """The table of one recovery method (``none``: the pruned models as they are)."""
    chosen = zero_shot(runs) if recovery == "none" else recovered(runs)[lambda t: t["recovery"] == recovery]
    teacher = runs[runs["paradigm"] == UNPRUNED]
    names = families(runs)
    several_seeds = _max_seeds(runs) > 1
    show_data = recovery != "none"
    header = (
        ["Method", "Level", "Achieved"] + (["Data"] if show_data else []) + (["Seeds"] if several_seeds else []) + names + ["Mean", "AVG-%"]
    )
    align = ["l", "r", "r"] + (["r"] if show_data else []) + (["r"] if several_seeds else []) + ["r"] * (len(names) + 2)
    rows = []
    for frame, is_teacher in ((seed_means(teacher), True), (_ordered(seed_means(chosen)), False)):
        for row in frame.to_dict("records"):
            cells = ["Teacher (unpruned)" if is_teacher else row["method"], pct(row["level"]), f"{100 * row['achieved_level']:.1f}%"]
            if show_data:
                cells.append("–" if is_teacher else pct(row["data_fraction"]))
            if several_seeds:
                cells.append(str(row["seeds"]))
            cells += [_score(row.get(SCORE_PREFIX + f)) for f in names]
            cells.append(_score(row["mean_score"]))
            avg = f"{row['retained_pct']:.1f}"
            if several_seeds and row["seeds"] > 1:
                avg += f" ± {row['retained_sd']:.1f}"
            cells.append(avg)
            rows.append(cells)
    title = "No recovery (the pruned models as they are)" if recovery == "none" else f"Recovery: {recovery}"
    caption = (
        "Scores x 100 per benchmark family; AVG-% = mean over families of score / teacher's score, in %. "
        "Level: fraction of decoder-layer parameters removed (requested, then achieved)"
        + ("; Data: fraction of the training data used for recovery." if show_data else ".")
    )
    if chosen.empty:
        return f"### {title}\n\nno runs: no run with recovery `{recovery}` in the table.\n"
    return f"### {title}\n\n{caption}\n\n" + markdown_table(header, rows, align)


def recovery_tables(runs: pd.DataFrame) -> dict[str, str]:
    """``{recovery: table}`` for ``none`` and every recovery method in the table."""
    pruned = runs[runs["paradigm"] != UNPRUNED]
    return {recovery: recovery_table(runs, recovery) for recovery in recovery_order(["none", *pruned["recovery"]])}


def table_file(recovery: str) -> str:
    return f"recovery-{recovery}.md"


def write_tables(tables: dict[str, str], out_dir: str | Path) -> dict[str, Path]:
    """``<out_dir>/recovery-<name>.md`` for every table; returns the paths by recovery."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for recovery, text in tables.items():
        paths[recovery] = out_dir / table_file(recovery)
        paths[recovery].write_text(text)
    return paths


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    rank = {p: i for i, p in enumerate(PARADIGM_ORDER)}
    return table.assign(_rank=table["paradigm"].map(lambda p: rank.get(p, len(rank)))).sort_values(
        ["_rank", "paradigm", "metric", "method", "level", "data_fraction"], kind="stable"
    )


def _max_seeds(runs: pd.DataFrame) -> int:
    keys = ["method", "level", "recovery", "data_fraction"]
    return int(runs.assign(level=runs["level"].round(6)).groupby(keys)["seed"].nunique().max()) if len(runs) else 0


def _score(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{100 * value:.1f}"
