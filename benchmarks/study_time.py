"""Wall time of the default study from a clean cache, stage by stage (issue 5's 45-minute target).

Clones the repository (its committed HEAD) into a scratch folder with an empty DVC cache and runs
one `dvc repro` there, as the README's run command does, timing each stage from the moment DVC
announces it to the next announcement (or the end); stages DVC finds up to date (the committed
teacher) do not run. Then a no-op `dvc repro`, and the fixed cost of one notebook run
(`python -m study notebook` on a notebook that only imports torch and transformers' LLaVA
classes), the overhead every stage pays.

Usage: python benchmarks/study_time.py [--params FILE] [--workdir DIR] [--keep]
  --params FILE  apply the profile FILE to the clone (e.g. configs/smoke.yaml for a quick check)
  --keep         keep the scratch clone (its results/ and dvc.lock are those of the timed run)
Prints one line per stage as it ends, then totals per stage group (the name before '@').
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tool_env() -> dict[str, str]:
    """The environment with this interpreter's folder first on PATH (its dvc and python)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def run(args: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed after {seconds:.0f} s:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout + proc.stderr


def timed_repro(work: Path) -> dict[str, float]:
    """One ``dvc repro`` in ``work``; seconds per stage that ran, printed as each one ends."""
    proc = subprocess.Popen(["dvc", "repro"], cwd=work, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    times: dict[str, float] = {}
    current, started, tail = None, time.perf_counter(), []

    def close(now: float) -> None:
        if current is not None:
            times[current] = now - started
            print(f"{current:<48} {times[current]:7.1f} s", flush=True)

    for line in proc.stdout:
        tail = (tail + [line])[-40:]
        match = re.match(r"Running stage '([^']+)'", line)
        if match:
            now = time.perf_counter()
            close(now)
            current, started = match.group(1), now
    if proc.wait() != 0:
        raise RuntimeError(f"dvc repro failed in stage {current}:\n{''.join(tail)}")
    close(time.perf_counter())
    return times


def notebook_overhead(work: Path) -> float:
    """Seconds of one notebook run that does nothing but the imports every stage makes."""
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "id": "p",
                "metadata": {"tags": ["parameters"]},
                "source": ["threads = 2"],
                "outputs": [],
                "execution_count": None,
            },
            {
                "cell_type": "code",
                "id": "i",
                "metadata": {},
                "source": ["import torch\n", "from transformers import LlavaForConditionalGeneration"],
                "outputs": [],
                "execution_count": None,
            },
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = work / "overhead.ipynb"
    path.write_text(json.dumps(nb))
    seconds, _ = run([sys.executable, "-m", "study", "notebook", str(path), "--out", str(work / "overhead-out.ipynb")], work)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", help="a profile to apply to the clone (python -m study profile FILE)")
    parser.add_argument("--workdir", help="scratch folder (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch clone")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="study-time-")) / "study"
    run(["git", "clone", "--quiet", "--local", str(REPO), str(work)], REPO)
    if args.params:
        run([sys.executable, "-m", "study", "profile", str(Path(args.params).resolve())], work)
    overhead = notebook_overhead(work)
    print(f"one notebook run that only imports torch + LLaVA: {overhead:.1f} s", flush=True)
    try:
        times = timed_repro(work)
        noop, _ = run(["dvc", "repro"], work)
    finally:
        if not args.keep:
            shutil.rmtree(work.parent, ignore_errors=True)
    groups: dict[str, list[float]] = defaultdict(list)
    for stage, seconds in times.items():
        groups[stage.split("@")[0]].append(seconds)
    print("\nstage group            runs   total (min)")
    for group, values in groups.items():
        print(f"{group:<22} {len(values):4d}   {sum(values) / 60:8.1f}")
    total = sum(times.values())
    print(f"{'all':<22} {len(times):4d}   {total / 60:8.1f}   (notebook start-up + imports ~{overhead * len(times) / 60:.1f} of it)")
    print(f"no-op dvc repro afterwards: {noop:.1f} s")
    if args.keep:
        print(f"the timed run's clone: {work}")


if __name__ == "__main__":
    main()
