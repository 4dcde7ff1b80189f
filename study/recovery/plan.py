"""Which recovery runs a pruned student gets: the (recipe x fraction) grid of ``params.yaml``.

Every student is recovered with every recipe at the main fractions (the reference study: every
method at every level, on 5% of the data); the students named in ``data_efficiency`` also get
that section's recipe at each of its fractions (the data-efficiency curve). One DVC stage per
student runs its whole list, so that kernel start-up and imports are paid once per student, not
once per run; :func:`planned_runs` is the one place that list is made, for the recovery and the
evaluation stages alike.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from study.recovery.train import RECORD, TRAINABLE, RecoveryConfig, parse_loss, recover

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """A named recovery method: what is trained and with which loss (``sft+kd_hidden`` ...)."""

    name: str
    trainable: str
    loss: str

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE:
            raise ValueError(f"recipe {self.name!r}: trainable must be one of {TRAINABLE}, got {self.trainable!r}")
        parse_loss(self.loss)
        if "/" in self.name or not self.name:
            raise ValueError(f"recipe name must be a non-empty folder name, got {self.name!r}")


@dataclass(frozen=True)
class RecoveryRun:
    student: str
    recipe: Recipe
    fraction: float

    @property
    def name(self) -> str:
        """The run's name in metrics and figures: ``<student>-<recipe>-<fraction>``."""
        return f"{self.student}-{self.recipe.name}-{self.fraction}"

    @property
    def folder(self) -> str:
        """Its folder under the student's recovery directory: ``<recipe>-<fraction>``."""
        return f"{self.recipe.name}-{self.fraction}"


def planned_runs(student: str, recipes: list[dict], fractions: list[float], data_efficiency: dict | None = None) -> list[RecoveryRun]:
    """The runs of ``student``, each once, main grid first. ``data_efficiency``:
    ``{"recipe": <name of one of recipes>, "fractions": [...], "students": [...]}``."""
    parsed = [Recipe(**r) for r in recipes]
    by_name = {r.name: r for r in parsed}
    if len(by_name) != len(parsed):
        raise ValueError(f"recipe names must be unique, got {[r.name for r in parsed]}")
    for f in [*fractions, *((data_efficiency or {}).get("fractions") or [])]:
        if not 0 < f <= 1:
            raise ValueError(f"data fractions must be in (0, 1], got {f}")
    runs = [RecoveryRun(student, r, f) for r in parsed for f in fractions]
    if data_efficiency and student in (data_efficiency.get("students") or []):
        name = data_efficiency["recipe"]
        if name not in by_name:
            raise ValueError(f"data_efficiency.recipe {name!r} is not one of the recipes {sorted(by_name)}")
        runs += [RecoveryRun(student, by_name[name], f) for f in data_efficiency["fractions"]]
    return list(dict.fromkeys(runs))


def identity(run: RecoveryRun) -> dict:
    """What the run is, for its ``recovery.json`` (written by :func:`recover`) and the evaluation stage."""
    return {"run": run.name, "student": run.student, "recipe": asdict(run.recipe), "data_fraction": run.fraction}


def read_record(model_dir: str | Path) -> dict | None:
    path = Path(model_dir) / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def recover_student(
    student_dir: str | Path,
    runs: list[RecoveryRun],
    teacher_dir: str | Path,
    subsets_dir: str | Path,
    image_folder: str | Path,
    out_root: str | Path,
    curves_root: str | Path,
    config: dict,
    overwrite: bool = False,
) -> list[dict]:
    """Run each of ``runs`` on the pruned ``student_dir``: the model to
    ``<out_root>/<run.folder>`` (with ``recovery.json``; an existing folder is replaced only with
    ``overwrite``), its training curve to ``<curves_root>/<run.folder>.csv``. ``config``: further
    :class:`RecoveryConfig` fields. Returns one summary row per run (name, steps, final loss)."""
    from study.data.subsets import subset_name
    from study.models.io import read_pruning

    layer_map = (read_pruning(student_dir) or {}).get("layer_map")
    summary = []
    for i, run in enumerate(runs, 1):
        log.info("recovery %d/%d: %s", i, len(runs), run.name)
        cfg = RecoveryConfig(**{**config, "trainable": run.recipe.trainable, "loss": run.recipe.loss})
        out = Path(out_root) / run.folder
        train = Path(subsets_dir) / f"{subset_name(run.fraction)}.json"
        curve = recover(
            student_dir, teacher_dir, train, image_folder, out, cfg, layer_map=layer_map, identity=identity(run), overwrite=overwrite
        )
        curve_csv = Path(curves_root) / f"{run.folder}.csv"  # recover() wrote it beside the model
        curve_csv.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out / "training_curve.csv", curve_csv)
        summary.append({"run": run.name, "steps": curve[-1]["step"] if curve else 0, "final_loss": curve[-1]["total"] if curve else None})
    return summary
