"""``python -m study repro``: ``dvc repro`` one stage at a time, with a line per stage a person can
follow over a run of tens of minutes.

The stages run in DVC's own dependency order, each through DVC (``single_item``), so what is
skipped, rerun, cached and locked is exactly what ``dvc repro`` does; DVC's own log is left out
unless ``verbose``. Each stage prints ``[12/61] prune width-taylor-0.3 ...`` when it starts and
``... done in 41 s (49 stages left, about 23 min)`` or ``... unchanged`` when it ends. The time
left is estimated from the stages already run: the mean duration of the stages of the same group
(``prune``, ``recover``, ...) where one has run, else of every stage run so far, for each stage
left (a stage that turns out unchanged takes about a second, so the estimate errs high).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import TextIO


def stage_order(repo) -> list:
    """The pipeline's stages in an order that runs every dependency first."""
    import networkx as nx

    return list(reversed(list(nx.topological_sort(repo.index.graph))))


def stage_label(stage) -> str:
    """``prune width-taylor-0.3`` for a stage of a matrix or foreach (its group and the name of its
    first output), else the stage's name."""
    group, at, _ = stage.addressing.partition("@")
    if not at or not stage.outs:
        return stage.addressing
    return f"{group} {Path(str(stage.outs[0])).name.removesuffix('.json').removesuffix('.jsonl')}"


def estimate_seconds_left(durations: dict[str, list[float]], groups_left: list[str]) -> float | None:
    """Seconds the stages of ``groups_left`` may take, from the ``durations`` of the stages run so
    far by group; None before any stage has run."""
    every = [d for ds in durations.values() for d in ds]
    if not every:
        return None
    overall = sum(every) / len(every)
    return sum(sum(durations[g]) / len(durations[g]) if durations.get(g) else overall for g in groups_left)


def format_duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def reproduce(force: bool = False, verbose: bool = False, out: TextIO = sys.stdout, root: str | Path = ".") -> int:
    """Reproduce the pipeline in ``root`` stage by stage (see the module docstring); returns the
    number of stages that ran."""
    from dvc.repo import Repo

    if not verbose:
        logging.getLogger("dvc").setLevel(logging.WARNING)
    os.environ.setdefault("STUDY_VERBOSE", "1" if verbose else "0")  # the stages' notebook runs
    repo = Repo(str(root))
    stages = stage_order(repo)
    durations: dict[str, list[float]] = defaultdict(list)
    ran = 0
    for i, stage in enumerate(stages, 1):
        prefix = f"[{i}/{len(stages)}] {stage_label(stage)}"
        print(f"{prefix} ...", file=out, flush=True)
        start = time.perf_counter()
        changed = repo.reproduce(stage.addressing, single_item=True, force=force)
        seconds = time.perf_counter() - start
        if not changed:
            print(f"{prefix} unchanged", file=out, flush=True)
            continue
        ran += 1
        durations[stage.addressing.partition("@")[0]].append(seconds)
        left = stages[i:]
        estimate = estimate_seconds_left(durations, [s.addressing.partition("@")[0] for s in left])
        tail = f" ({len(left)} stages left, about {format_duration(estimate)})" if left and estimate is not None else ""
        print(f"{prefix} done in {format_duration(seconds)}{tail}", file=out, flush=True)
    return ran
