"""``python -m study repro``: ``dvc repro`` with a line per stage a person can follow over a run of
tens of minutes.

It is DVC's own reproduction (the same plan, order, skipping, caching and lock) with DVC's step
for one stage wrapped: each stage prints ``[12/61] prune width-taylor-0.3 ...`` when it starts
and ``... done in 41 s (49 stages left, about 23 min)`` or ``... unchanged`` when it ends; DVC's
own log is left out unless ``verbose``. The time left is estimated from the stages already run:
the mean duration of the stages of the same group (``prune``, ``recover``, ...) where one has
run, else of every stage run so far, for each stage left (a stage that turns out unchanged takes
about a second, so the estimate errs high).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import TextIO


def stage_label(stage) -> str:
    """``prune width-taylor-0.3`` for a stage of a matrix or foreach (its group and its item), else
    the stage's name."""
    group, _, item = stage.addressing.partition("@")
    return f"{group} {item}" if item else group


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
    """Reproduce the pipeline in ``root`` (see the module docstring); returns the number of stages
    that ran."""
    from dvc.repo import Repo
    from dvc.repo.reproduce import _reproduce_stage  # DVC's step for one stage (dvc is pinned)

    if not verbose:
        logging.getLogger("dvc").setLevel(logging.WARNING)
    os.environ.setdefault("STUDY_VERBOSE", "1" if verbose else "0")  # the stages' notebook runs
    repo = Repo(str(root))
    left = {stage.addressing: group_of(stage) for stage in repo.index.stages}
    total = len(left)
    durations: dict[str, list[float]] = defaultdict(list)

    def step(stage, **kwargs):
        left.pop(stage.addressing, None)
        prefix = f"[{total - len(left)}/{total}] {stage_label(stage)}"
        print(f"{prefix} ...", file=out, flush=True)
        start = time.perf_counter()
        result = _reproduce_stage(stage, **kwargs)
        seconds = time.perf_counter() - start
        if not result:
            print(f"{prefix} unchanged", file=out, flush=True)
            return result
        durations[group_of(stage)].append(seconds)
        estimate = estimate_seconds_left(durations, list(left.values()))
        n = len(left)
        tail = f" ({n} stage{'s' if n != 1 else ''} left, about {format_duration(estimate)})" if n and estimate is not None else ""
        print(f"{prefix} done in {format_duration(seconds)}{tail}", file=out, flush=True)
        return result

    return len(repo.reproduce(force=force, repro_fn=step))


def group_of(stage) -> str:
    """``prune`` for ``prune@method1-0.3``: the stages of one matrix or foreach."""
    return stage.addressing.partition("@")[0]
