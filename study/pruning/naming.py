"""The names of the pruning runs, as ``dvc.yaml`` builds them (no torch here: the report and
check-config use it).

A run is ``<method>-<level>`` for the main calibration seed (``prune.seed``) and
``<method>-<level>-s<seed>`` for each of ``prune.extra_seeds``; the method is
``<paradigm>-<metric>`` for multimodal calibration and ``<paradigm>-<metric>-text`` for text-only
calibration, e.g. ``layer-block_influence-0.3``, ``width-taylor-text-0.45-s2``,
``hybrid-block_influence+taylor-0.3``. DVC's interpolation cannot build a name, so every method of
``prune_runs`` spells its name (``check-config`` checks it against :func:`method_name`); the extra
seeds run in the main seed's stage (``study.pruning.run.prune_seeds``). A recovered run appends
``-<recipe>-<fraction>``.
"""

from __future__ import annotations

MULTIMODAL, TEXT = "multimodal", "text"  # the calibration of a run (``none``: no calibration data)


def method_name(paradigm: str, metric: str, text_only: bool = False) -> str:
    """``layer-block_influence``, or ``layer-block_influence-text`` for text-only calibration."""
    return f"{paradigm}-{metric}" + (f"-{TEXT}" if text_only else "")


def run_name(paradigm: str, metric: str, level: float, text_only: bool = False, seed: int | None = None) -> str:
    """The pruned run's name; ``seed`` None: the main seed (no suffix)."""
    name = f"{method_name(paradigm, metric, text_only)}-{float(level)}"
    return name if seed is None else f"{name}-s{seed}"


def is_text_calibrated(run: str) -> bool:
    """Whether a run name says text-only calibration (the ``-text`` part after the metric)."""
    parts = str(run).split("-")
    return len(parts) >= 4 and parts[2] == TEXT
