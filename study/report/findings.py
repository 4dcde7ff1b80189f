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

Every comparison between two runs carries a paired 95% bootstrap interval of the gap that decides
it (:mod:`study.report.paired`: questions resampled within each family, jointly for both sides,
seeds averaged question by question); a comparison against a threshold, (d), pairs the run with
the teacher, whose AVG-% is 100. A comparison *counts* when its interval excludes zero (or when
there are no per-question scores to pair, on the point estimate alone; the report says so).
The verdict is ``holds`` (every counting comparison agrees with the claim), ``does not hold`` (none
does), ``partly holds`` (some do), ``within noise`` (no comparison counts) or ``not measured`` (no
comparison possible: the runs that would decide it are named, as the pipeline would name them,
``<paradigm>-<metric>[-text]-<level>-<recipe>-<fraction>``).

Each check returns a :class:`Finding`: data only (the compared :class:`Cell` pairs and their gaps, the
missing run names). The English of a finding is written by :mod:`study.report.document`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from study.config.sections import FindingsConfig
from study.config.vocabulary import MULTIMODAL, TEXT, Method
from study.records import TEACHER
from study.report.paired import PairedScores
from study.report.runs import UNPRUNED

HOLDS, PARTLY, DOES_NOT_HOLD, WITHIN_NOISE, NOT_MEASURED = "holds", "partly holds", "does not hold", "within noise", "not measured"
# The recovery methods the reference study compares.
PAPER_RECIPES = ("projector", "sft", "lora", "sft+kd_logit", "sft+kd_hidden", "kd_hidden")
EPS = 1e-9


@dataclass(frozen=True)
class Cell:
    """One row of :func:`cells`: a student after one recovery (or none), averaged over seeds."""

    paradigm: str
    metric: str
    calibration: str
    method: str
    level: float
    recovery: str
    data_fraction: float
    retained: float  # mean AVG-%
    sd: float  # standard deviation over seeds (NaN for one seed)
    seeds: int
    se: float  # standard error of the mean (NaN when unknown)
    achieved_level: float = math.nan
    flops_per_sample: float = math.nan
    flops_vs_teacher: float = math.nan
    runs: tuple[str, ...] = ()  # the names of its seeds' runs

    @classmethod
    def of(cls, row) -> Cell:
        """The cell of a row of :func:`cells` (a ``Series`` or a record dict)."""
        values = {f.name: row[f.name] for f in fields(cls)}
        texts = ("paradigm", "metric", "calibration", "method", "recovery")

        def typed(k, v):
            return str(v) if k in texts else int(v) if k == "seeds" else tuple(v) if k == "runs" else float(v)

        return cls(**{k: typed(k, v) for k, v in values.items()})


@dataclass(frozen=True)
class Comparison:
    """One deciding comparison: ``subject``, the cell the claim favours, against ``rival`` (``None``:
    against the finding's threshold). ``gap`` is the subject's lead in AVG-% points."""

    subject: Cell
    rival: Cell | None
    gap: float
    holds: bool  # the comparison agrees with the claim
    margin: float = 0.0  # the gap that decides is ``gap + margin`` ((b): the projector's allowance)
    low: float = math.nan  # the paired 95% interval of the gap that decides (NaN: no per-question scores)
    high: float = math.nan
    families: tuple[str, ...] = ()  # the families the interval covers
    questions: int = 0  # the questions both sides answered in them
    ranking: tuple[Cell, ...] = ()  # (c) every recovery of the student, best first; (f) the rivals present
    full_data: Cell | None = None  # (d) the same recovery on all the data, if run

    @property
    def paired(self) -> bool:
        """It has a paired interval."""
        return bool(np.isfinite(self.low) and np.isfinite(self.high))

    @property
    def counts(self) -> bool:
        """Its interval excludes zero (without one: decided on the point estimate)."""
        return not self.paired or self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Finding:
    """One finding decided on the runs: its comparisons and the runs that would decide or complete it.
    ``claim``, ``summary`` and ``short`` are its English, written by :mod:`study.report.document`."""

    key: str  # "a" .. "f", its label in the report
    claim_id: str  # the rule that decided it: one of CLAIM_IDS
    comparisons: tuple[Comparison, ...] = ()  # the deciding comparisons, in report order
    missing: tuple[str, ...] = ()  # names of runs that would decide (or complete) it, not in the grid
    contrast: tuple[Comparison, ...] = ()  # (b) the same comparison at or above low_level: informs, does not decide
    unrecovered: tuple[Cell, ...] = ()  # (b, c, d) the compared students without recovery
    absent_recipes: tuple[str, ...] = ()  # (c) recovery methods of the reference study with no run
    no_low_level: bool = False  # (b) no student is pruned below low_level (the missing names are examples)
    config: FindingsConfig = FindingsConfig()

    @property
    def verdict(self) -> str:
        return verdict_of([c.holds for c in self.comparisons], [c.counts for c in self.comparisons])

    @property
    def within_noise(self) -> int:
        """How many deciding comparisons have an interval that includes zero."""
        return sum(not c.counts for c in self.comparisons)

    @property
    def claim(self) -> str:
        return self._text().claim

    @property
    def summary(self) -> str:
        return self._text().summary

    @property
    def short(self) -> str:
        return self._text().short

    def _text(self):
        from study.report.document import finding_text  # the English lives there; document imports this module

        return finding_text(self)


CLAIM_IDS = {
    "a": "width_over_layer",
    "b": "projector_suffices",
    "c": "best_recipe",
    "d": "little_data",
    "e": "multimodal_calibration",
    "f": "hybrid_cut",
}


def verdict_of(outcomes: list[bool], counts: list[bool] | None = None) -> str:
    """The verdict of comparisons that agree with the claim or not (``outcomes``), of which those
    whose ``counts`` is True decide (default: all)."""
    if not outcomes:
        return NOT_MEASURED
    decided = [o for o, c in zip(outcomes, counts or [True] * len(outcomes)) if c]
    if not decided:
        return WITHIN_NOISE
    if all(decided):
        return HOLDS
    return DOES_NOT_HOLD if not any(decided) else PARTLY


def run_name(
    paradigm: str, metric: str, level: float, recovery: str = "none", fraction: float | None = None, calibration: str = MULTIMODAL
) -> str:
    """The name the pipeline gives a run (:mod:`study.records`):
    ``layer-block_influence-0.3[-sft-0.05]``, ``layer-block_influence-text-0.3``."""
    name = Method(paradigm, metric, calibration == TEXT).run(level)
    return name if recovery == "none" else f"{name}-{recovery}-{float(fraction)}"


def cells(runs: pd.DataFrame) -> pd.DataFrame:
    """The pruned runs averaged over seeds: one row per (paradigm, metric, calibration, method,
    level, recovery, data_fraction) with ``retained`` (mean AVG-%), ``sd``, ``seeds``, ``se``, the
    means of ``achieved_level`` and ``flops_per_sample`` (NaN if absent), ``flops_vs_teacher``
    (``flops_per_sample`` over the teacher's; NaN without a teacher) and ``runs`` (the seeds' run
    names)."""
    pruned = runs[runs["paradigm"] != UNPRUNED].assign(
        level=lambda t: t["level"].round(6), data_fraction=lambda t: t["data_fraction"].round(6)
    )
    keys = ["paradigm", "metric", "calibration", "method", "level", "recovery", "data_fraction"]
    means = ("achieved_level", "flops_per_sample")
    if pruned.empty:
        return pd.DataFrame(columns=[*keys, "retained", "sd", "seeds", "se", *means, "flops_vs_teacher", "runs"])
    for column in ("retained_se", *means):
        if column not in pruned:
            pruned = pruned.assign(**{column: np.nan})
    table = pruned.groupby(keys, as_index=False).agg(
        retained=("retained_pct", "mean"),
        sd=("retained_pct", "std"),
        seeds=("seed", "nunique"),
        se=("retained_se", "mean"),
        **{m: (m, "mean") for m in means},
        runs=("run", lambda names: tuple(sorted(names))),
    )
    table["se"] /= np.sqrt(table["seeds"])  # the standard error of a mean over seeds
    table["flops_vs_teacher"] = table["flops_per_sample"] / _teacher_flops(runs)
    return table


def _teacher_flops(runs: pd.DataFrame) -> float:
    """The teacher's FLOPs per sample (mean over its rows); NaN without a teacher or the column."""
    teacher = runs[runs["paradigm"] == UNPRUNED]
    return float(teacher["flops_per_sample"].mean()) if "flops_per_sample" in runs and not teacher.empty else np.nan


def _compared(subject, rival, gap: float, holds: bool, paired: PairedScores | None, offset: float = 0.0, **extra) -> Comparison:
    """A :class:`Comparison` of two rows of :func:`cells` (``rival`` None: against a threshold, the
    subject paired with the teacher), with the paired interval of the gap that decides it: the
    paired gap ``subject - rival`` (``subject - teacher`` without a rival) plus ``offset``."""
    subject = Cell.of(subject)
    rival = None if rival is None else Cell.of(rival)
    found = paired.gap(subject.runs, rival.runs if rival else (TEACHER,)) if paired else None
    if found is None:
        return Comparison(subject, rival, float(gap), bool(holds), **extra)
    interval = dict(low=found.low + offset, high=found.high + offset, families=found.families, questions=found.questions)
    return Comparison(subject, rival, float(gap), bool(holds), **interval, **extra)


def check_findings(runs: pd.DataFrame, config: FindingsConfig | None = None, paired: PairedScores | None = None) -> list[Finding]:
    """The four findings, in order; ``paired``: the runs' per-question scores
    (:func:`study.report.paired.read_paired_scores`), without which no comparison has an interval."""
    config = config or FindingsConfig()
    table = cells(runs)
    table = table[table["calibration"] != TEXT]  # as the reference study calibrates
    return [
        paradigm_finding(table, config, paired),
        projector_finding(table, config, paired),
        best_recipe_finding(table, config, paired),
        data_fraction_finding(table, config, paired),
    ]


def _existing(table: pd.DataFrame) -> set[str]:
    return {
        run_name(r["paradigm"], r["metric"], r["level"], r["recovery"], r["data_fraction"], r["calibration"])
        for r in table.to_dict("records")
    }


def _absent(table: pd.DataFrame, names: list[str]) -> tuple[str, ...]:
    """``names`` less the runs the table has, sorted and without duplicates."""
    return tuple(sorted(set(names) - _existing(table)))


def _best(frame: pd.DataFrame, pick: dict) -> pd.Series:
    """The row of ``frame`` matching ``pick`` that retains the most."""
    mask = np.ones(len(frame), dtype=bool)
    for column, value in pick.items():
        mask &= np.isclose(frame[column], value) if isinstance(value, float) else (frame[column] == value).to_numpy()
    chosen = frame[mask]
    return chosen.loc[chosen["retained"].idxmax()]


def _without_recovery(table: pd.DataFrame, rows: list) -> tuple[Cell, ...]:
    """The same students as ``rows`` before recovery (once each), to show what recovery added."""
    found: dict[tuple, Cell] = {}
    zero = table[table["recovery"] == "none"]
    for row in rows:
        same = zero[(zero["method"] == row["method"]) & np.isclose(zero["level"], row["level"])]
        for cell in map(Cell.of, same.to_dict("records")):
            found.setdefault((cell.paradigm, cell.metric, cell.calibration, cell.method, cell.level), cell)
    return tuple(found.values())


# ---------------------------------------------------------------------------------------------
# (a)


def paradigm_finding(table: pd.DataFrame, config: FindingsConfig, paired: PairedScores | None = None) -> Finding:
    """(a): the best widthwise against the best layerwise cell, without recovery then after each
    recovery on little data."""
    zero = table[table["recovery"] == "none"]
    little = table[(table["recovery"] != "none") & (table["data_fraction"] <= config.little_data_fraction + EPS)]
    after = _paradigm_comparisons(little, ["level", "recovery", "data_fraction"], paired)
    missing = () if after else _absent(table, _missing_counterparts(table, little, config))
    return Finding("a", CLAIM_IDS["a"], tuple(_paradigm_comparisons(zero, ["level"], paired) + after), missing, config=config)


def _paradigm_comparisons(frame: pd.DataFrame, keys: list[str], paired: PairedScores | None) -> list[Comparison]:
    layer, width = frame[frame["paradigm"] == "layer"], frame[frame["paradigm"] == "width"]
    shared = sorted(
        set(map(tuple, layer[keys].to_numpy())) & set(map(tuple, width[keys].to_numpy())), key=lambda k: (k[0], *map(str, k[1:]))
    )
    out = []
    for key in shared:
        pick = dict(zip(keys, key))
        best_layer, best_width = (_best(part, pick) for part in (layer, width))
        gap = best_width["retained"] - best_layer["retained"]
        out.append(_compared(best_width, best_layer, gap, best_width["retained"] > best_layer["retained"], paired))
    return out


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


def projector_finding(table: pd.DataFrame, config: FindingsConfig, paired: PairedScores | None = None) -> Finding:
    """(b): projector-only recovery against the best recovery that trains the LLM, below ``low_level``
    (and, for contrast, at or above it)."""
    recovered_cells = table[table["recovery"] != "none"]
    low = table[table["level"] < config.low_level - EPS]
    comparisons, missing = _projector_comparisons(recovered_cells[recovered_cells["level"] < config.low_level - EPS], config, paired)
    contrast, _ = _projector_comparisons(recovered_cells[recovered_cells["level"] >= config.low_level - EPS], config, paired)
    unrecovered = tuple(Cell.of(row) for row in low[low["recovery"] == "none"].to_dict("records"))
    no_low_level = False
    if not comparisons:
        if not missing:
            missing, no_low_level = _projector_counterparts(table, low, config)
        missing = _absent(table, missing)
    return Finding("b", CLAIM_IDS["b"], comparisons, tuple(missing), contrast, unrecovered, no_low_level=no_low_level, config=config)


def _projector_comparisons(
    frame: pd.DataFrame, config: FindingsConfig, paired: PairedScores | None
) -> tuple[tuple[Comparison, ...], list[str]]:
    """Each projector-only cell of ``frame`` against the best LLM-training recovery of the same student
    and data; the runs that would give a projector-only cell a rival."""
    comparisons, missing = [], []
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
        gap = row["retained"] - best["retained"]
        holds = row["retained"] >= best["retained"] - config.projector_margin_pct
        margin = config.projector_margin_pct
        comparisons.append(_compared(row, best, gap, holds, paired, offset=margin, margin=margin))
    return tuple(comparisons), missing


def _projector_counterparts(table: pd.DataFrame, low: pd.DataFrame, config: FindingsConfig) -> tuple[list[str], bool]:
    """The projector-only and SFT runs of each student below ``low_level`` (of an example student per
    paradigm at 15% when there is none, which the flag says)."""
    fraction = _usual_fraction(table, config)
    students = low[low["recovery"] == "none"][["paradigm", "metric", "level"]].drop_duplicates().to_dict("records")
    no_low_level = not students
    if no_low_level:
        students = [{"paradigm": p, "metric": _usual_metric(table, p), "level": 0.15} for p in ("layer", "width")]
    names = [run_name(s["paradigm"], s["metric"], s["level"], r, fraction) for s in students for r in ("projector", "sft")]
    return names, no_low_level


# ---------------------------------------------------------------------------------------------
# (c)


def best_recipe_finding(table: pd.DataFrame, config: FindingsConfig, paired: PairedScores | None = None) -> Finding:
    """(c): in each (student, data fraction) cell with several recoveries, ``best_recipe`` against the
    best other one (the runner-up when it leads)."""
    recipe = config.best_recipe
    recovered_cells = table[table["recovery"] != "none"]
    comparisons, bests = [], []
    for _, group in recovered_cells.groupby(["method", "level", "data_fraction"], sort=True):
        if recipe not in set(group["recovery"]) or group["recovery"].nunique() < 2:
            continue
        ranked = group.sort_values("retained", ascending=False)
        best, ours = ranked.iloc[0], ranked[ranked["recovery"] == recipe].iloc[0]
        holds = best["recovery"] == recipe
        runner_up = ranked.iloc[1] if holds else best
        ranking = tuple(Cell.of(r) for r in ranked.to_dict("records"))
        comparisons.append(_compared(ours, runner_up, ours["retained"] - runner_up["retained"], holds, paired, ranking=ranking))
        bests.append(best)
    measured = set(recovered_cells["recovery"])
    absent_recipes = tuple(r for r in PAPER_RECIPES if r not in measured)
    missing = () if comparisons else _absent(table, _best_recipe_counterparts(table, recovered_cells, config))
    return Finding(
        "c",
        CLAIM_IDS["c"],
        tuple(comparisons),
        missing,
        unrecovered=_without_recovery(table, bests),
        absent_recipes=absent_recipes,
        config=config,
    )


def _best_recipe_counterparts(table: pd.DataFrame, recovered_cells: pd.DataFrame, config: FindingsConfig) -> list[str]:
    """``best_recipe`` and SFT in every recovered (student, data fraction) cell (in an example cell per
    paradigm when nothing was recovered)."""
    cells_ = recovered_cells[["paradigm", "metric", "level", "data_fraction"]].drop_duplicates().to_dict("records")
    if not cells_:
        fraction = _usual_fraction(table, config)
        cells_ = [
            {"paradigm": p, "metric": _usual_metric(table, p), "level": _recovery_level(table, p, config), "data_fraction": fraction}
            for p in ("layer", "width")
        ]
    return [run_name(c["paradigm"], c["metric"], c["level"], r, c["data_fraction"]) for c in cells_ for r in (config.best_recipe, "sft")]


# ---------------------------------------------------------------------------------------------
# (d)


def data_fraction_finding(table: pd.DataFrame, config: FindingsConfig, paired: PairedScores | None = None) -> Finding:
    """(d): each student's best recovery on ``target_fraction`` of the data against ``target_retained_pct``."""
    target = config.target_retained_pct
    recovered_cells = table[table["recovery"] != "none"]
    at = recovered_cells[np.isclose(recovered_cells["data_fraction"], config.target_fraction)]
    comparisons, bests = [], []
    for _, group in at.groupby(["method", "level"], sort=True):
        best = group.loc[group["retained"].idxmax()]
        full = recovered_cells[
            (recovered_cells["method"] == best["method"])
            & np.isclose(recovered_cells["level"], best["level"])
            & (recovered_cells["recovery"] == best["recovery"])
            & np.isclose(recovered_cells["data_fraction"], 1.0)
        ]
        full_data = None if full.empty else Cell.of(full.iloc[0])
        # AVG-% is 100 plus the paired gap to the teacher: the interval of (retained - target)
        comparisons.append(
            _compared(best, None, best["retained"] - target, best["retained"] > target, paired, offset=100 - target, full_data=full_data)
        )
        bests.append(best)
    missing = ()
    if not comparisons:
        students = recovered_cells[["paradigm", "metric", "level"]].drop_duplicates().to_dict("records")
        if not students:
            students = [
                {"paradigm": p, "metric": _usual_metric(table, p), "level": _recovery_level(table, p, config)} for p in ("layer", "width")
            ]
        names = [run_name(s["paradigm"], s["metric"], s["level"], config.best_recipe, config.target_fraction) for s in students]
        missing = _absent(table, names)
    return Finding("d", CLAIM_IDS["d"], tuple(comparisons), missing, unrecovered=_without_recovery(table, bests), config=config)


# ---------------------------------------------------------------------------------------------
# beyond the reference study: (e) calibration data, (f) hybrid cuts


def check_extensions(runs: pd.DataFrame, config: FindingsConfig | None = None, paired: PairedScores | None = None) -> list[Finding]:
    """This study's own questions, put as findings: (e) calibration data, (f) hybrid cuts."""
    table = cells(runs)
    config = config or FindingsConfig()
    return [calibration_finding(table, config, paired), hybrid_finding(table, config, paired)]


def calibration_finding(table: pd.DataFrame, config: FindingsConfig | None = None, paired: PairedScores | None = None) -> Finding:
    """(e): per (paradigm, metric, level) pruned with both calibrations, multimodal against text-only,
    without recovery."""
    zero = table[table["recovery"] == "none"]
    keys = ["paradigm", "metric", "level"]
    multimodal, text = zero[zero["calibration"] == MULTIMODAL], zero[zero["calibration"] == TEXT]
    comparisons = []
    for key in sorted(set(map(tuple, multimodal[keys].to_numpy())) & set(map(tuple, text[keys].to_numpy())), key=str):
        pick = dict(zip(keys, key))
        mm, tx = _best(multimodal, pick), _best(text, pick)
        gap = mm["retained"] - tx["retained"]
        comparisons.append(_compared(mm, tx, gap, gap > EPS, paired))
    missing = ()
    if not comparisons:
        # the runs that would pair each calibrated run with the other calibration
        wanted = [
            run_name(r["paradigm"], r["metric"], r["level"], calibration=TEXT if r["calibration"] == MULTIMODAL else MULTIMODAL)
            for r in zero[zero["calibration"].isin([MULTIMODAL, TEXT])].to_dict("records")
        ]
        if not wanted:
            usual = {"layer": "block_influence", "width": "taylor"}  # the study's default methods, for the example names
            wanted = [run_name(p, _usual_metric(table, p, m), 0.3, calibration=c) for p, m in usual.items() for c in (MULTIMODAL, TEXT)]
        missing = _absent(table, wanted)
    return Finding("e", CLAIM_IDS["e"], tuple(comparisons), missing, config=config or FindingsConfig())


def hybrid_finding(table: pd.DataFrame, config: FindingsConfig | None = None, paired: PairedScores | None = None) -> Finding:
    """(f): at each (level, recovery, data fraction) with a hybrid cut, the best hybrid against the
    better of the best layerwise and best widthwise cells."""
    frame = table[table["calibration"] != TEXT]
    keys = ["level", "recovery", "data_fraction"]
    hybrid, others = frame[frame["paradigm"] == "hybrid"], frame[frame["paradigm"].isin(["layer", "width"])]
    comparisons, missing = [], []
    for key in sorted(set(map(tuple, hybrid[keys].to_numpy())), key=lambda k: (k[0], str(k[1]), k[2])):
        pick = dict(zip(keys, key))
        best_hybrid = _best(hybrid, pick)
        rivals = {p: _best_or_none(others[others["paradigm"] == p], pick) for p in ("layer", "width")}
        halves = dict(zip(("layer", "width"), str(best_hybrid["metric"]).split("+")))  # block_influence+taylor
        for paradigm, rival in rivals.items():
            if rival is None:
                metric = _usual_metric(table, paradigm, halves.get(paradigm))
                missing.append(run_name(paradigm, metric, pick["level"], pick["recovery"], pick["data_fraction"]))
        present = [r for r in rivals.values() if r is not None]
        if not present:
            continue
        best_rival = max(present, key=lambda r: r["retained"])
        gap = best_hybrid["retained"] - best_rival["retained"]
        comparisons.append(_compared(best_hybrid, best_rival, gap, gap > 0, paired, ranking=tuple(map(Cell.of, present))))
    if not comparisons and hybrid.empty:
        levels = sorted(set(frame[frame["recovery"] == "none"]["level"])) or [0.3]
        missing = [run_name("hybrid", _usual_metric(table, "hybrid", "block_influence+taylor"), level) for level in levels]
    return Finding("f", CLAIM_IDS["f"], tuple(comparisons), _absent(table, missing), config=config or FindingsConfig())


def _best_or_none(frame: pd.DataFrame, pick: dict):
    chosen = frame[np.isclose(frame["level"], pick["level"]) & (frame["recovery"] == pick["recovery"])]
    chosen = chosen[np.isclose(chosen["data_fraction"], pick["data_fraction"])]
    return None if chosen.empty else chosen.loc[chosen["retained"].idxmax()]


# ---------------------------------------------------------------------------------------------
# example names for runs that are not in the grid


# the reference study's metric of each paradigm: the name of a missing run when none was pruned
REFERENCE_METRICS = {"layer": "block_influence", "width": "taylor", "hybrid": "block_influence+taylor"}


def _usual_metric(table: pd.DataFrame, paradigm: str, default: str | None = None) -> str:
    metrics = table[table["paradigm"] == paradigm]["metric"]
    return str(metrics.mode().iloc[0]) if not metrics.empty else default or REFERENCE_METRICS[paradigm]


def _usual_fraction(table: pd.DataFrame, config: FindingsConfig) -> float:
    fractions = table[table["recovery"] != "none"]["data_fraction"]
    return float(fractions.mode().iloc[0]) if not fractions.empty else config.target_fraction


def _recovery_level(table: pd.DataFrame, paradigm: str, config: FindingsConfig) -> float:
    """A level worth recovering for an example run name: the lowest at or above ``low_level``."""
    levels = sorted(table[(table["paradigm"] == paradigm) & (table["level"] >= config.low_level - EPS)]["level"])
    return levels[0] if levels else 0.3


def verdict_counts(findings: list[Finding]) -> dict[str, int]:
    counts = dict.fromkeys((HOLDS, PARTLY, DOES_NOT_HOLD, WITHIN_NOISE, NOT_MEASURED), 0)
    for f in findings:
        counts[f.verdict] += 1
    return counts


COMPARISON_COLUMNS = (
    "finding",
    "decides",
    "subject",
    "rival",
    "level",
    "subject_achieved",
    "rival_achieved",
    "recovery",
    "data_fraction",
    "subject_pct",
    "rival_pct",
    "gap_pct",
    "low_pct",
    "high_pct",
    "counts",
    "holds",
    "families",
    "questions",
    "subject_runs",
    "rival_runs",
)


def comparisons_table(findings: list[Finding]) -> pd.DataFrame:
    """Every comparison of ``findings`` (``results/tables/comparisons.csv``): ``decides`` (False for
    (b)'s contrast above ``low_level``), subject and rival (their method and recovery; the rival of a
    threshold is ``teacher``), the requested level and both achieved levels, both AVG-%, the gap that
    decides (``gap_pct``: subject minus rival; (b) plus the margin, (d) minus the target) with its
    paired 95% interval, whether it counts and agrees with the claim, and the families, questions
    and seed runs the interval rests on."""
    rows = []
    for f in findings:
        for decides, group in ((True, f.comparisons), (False, f.contrast)):
            for c in group:
                s, r = c.subject, c.rival
                rows.append(
                    {
                        "finding": f.key,
                        "decides": decides,
                        "subject": f"{s.method} {s.recovery}",
                        "rival": TEACHER if r is None else f"{r.method} {r.recovery}",
                        "level": s.level,
                        "subject_achieved": s.achieved_level,
                        "rival_achieved": 0.0 if r is None else r.achieved_level,
                        "recovery": s.recovery,
                        "data_fraction": s.data_fraction,
                        "subject_pct": s.retained,
                        "rival_pct": 100.0 if r is None else r.retained,
                        "gap_pct": c.gap + c.margin,
                        "low_pct": c.low,
                        "high_pct": c.high,
                        "counts": c.counts,
                        "holds": c.holds,
                        "families": "+".join(c.families),
                        "questions": c.questions,
                        "subject_runs": " ".join(s.runs),
                        "rival_runs": TEACHER if r is None else " ".join(r.runs),
                    }
                )
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS)).round(4)
