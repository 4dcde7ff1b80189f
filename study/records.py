"""What a run is, as data: the identity every record carries, the records' file names, and the
one place run names are made. Torch-free: pruning, recovery, evaluation and the report share it.

A pruned run is ``<method>-<level>`` (its folder's name; the extra calibration seeds'
``<method>-<level>-s<seed>``), where a method is ``<paradigm>-<metric>`` for multimodal
calibration and ``<paradigm>-<metric>-text`` for text-only calibration (``width-taylor-text``,
``hybrid-block_influence+taylor``). A recovered run is ``<student>-<recipe>-<fraction>`` (with an
extra recovery seed ``<student>-<recipe>-<fraction>-s<seed>``). A record's ``seed`` is the seed
that makes its runs differ: the calibration seed of a pruned run, the recovery seed of a recovered
one (whose student is always the run at the main calibration seed). The
records beside each model folder (``pruning.json``, ``recovery.json``) and every metrics JSON
hold the identity fields themselves, so nothing parses a name back.
"""

from __future__ import annotations

import json
from pathlib import Path

from study.config.vocabulary import NONE, Method

PRUNING_FILE = "pruning.json"  # beside a pruned (or recovered) model: what was pruned and how
RECOVERY_FILE = "recovery.json"  # beside a recovered model: its identity, inputs and config
TEACHER = "teacher"  # the run name of the unpruned model
# the metrics JSON's identity: the records' fields plus the evaluated folder (``model``)
IDENTITY_KEYS = ("run", "model", "paradigm", "metric", "calibration", "level", "achieved_level", "recovery", "data_fraction", "seed")


def teacher_identity() -> dict:
    return {
        "run": TEACHER,
        "paradigm": NONE,
        "metric": NONE,
        "calibration": NONE,
        "level": 0.0,
        "achieved_level": 0.0,
        "recovery": NONE,
        "data_fraction": 1.0,
        "seed": 0,
    }


def pruned_identity(run: str, method: Method, level: float, achieved_level: float, seed: int) -> dict:
    return {
        "run": run,
        "paradigm": method.paradigm,
        "metric": method.metric,
        "calibration": method.calibration,
        "level": float(level),
        "achieved_level": achieved_level,
        "recovery": NONE,
        "data_fraction": 1.0,
        "seed": seed,
    }


def recovered_identity(student: dict, run: str, recipe: str, data_fraction: float, seed: int | None = None) -> dict:
    """A recovered run of ``student`` (the pruned run's identity) with recovery ``seed`` (None: the
    student's seed)."""
    return {**student, "run": run, "recovery": recipe, "data_fraction": data_fraction} | ({} if seed is None else {"seed": seed})


def read_record(model_dir: str | Path, name: str) -> dict | None:
    """The record ``name`` beside a model folder, or None."""
    path = Path(model_dir) / name
    return json.loads(path.read_text()) if path.is_file() else None


def model_identity(model_dir: str | Path) -> dict:
    """Which run a model folder is: its ``recovery.json``'s identity, else its ``pruning.json``'s,
    else the unpruned model's. ``model`` is ``model_dir`` as given."""
    for name in (RECOVERY_FILE, PRUNING_FILE):
        record = read_record(model_dir, name)
        if record is not None:
            if "identity" not in record:
                raise ValueError(f"{Path(model_dir) / name} has no 'identity': written by an older version; prune or recover it again")
            return {**record["identity"], "model": str(model_dir)}
    return {**teacher_identity(), "model": str(model_dir)}
