"""Which recovery runs a pruned student gets: the (recipe x fraction) grid of ``params.yaml``.

Every student is recovered with every recipe at the main fractions (the reference study: every
method at every level, on 5% of the data); the students named in ``data_efficiency`` also get
that section's recipe at each of its fractions (the data-efficiency curve), and those named in
``extra_seeds`` the main grid again with each of its recovery seeds. One DVC stage per
student runs its whole list, so that kernel start-up and imports are paid once per student, not
once per run; :func:`planned_runs` is the one place that list is made, for the recovery and the
evaluation stages alike.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from study.config.sections import DataEfficiency, ExtraSeeds, Recipe, RecoverConfig, RecoveryConfig
from study.data.subsets import subset_name
from study.records import PRUNING_FILE, read_record, recovered_identity
from study.recovery.train import recover

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoveryRun:
    student: str
    recipe: Recipe
    fraction: float
    seed: int | None = None  # an extra recovery seed (None: the config's seed)

    @property
    def name(self) -> str:
        """The run's name in metrics and figures: ``<student>-<folder>``."""
        return f"{self.student}-{self.folder}"

    @property
    def folder(self) -> str:
        """Its folder under the student's recovery directory: ``<recipe>-<fraction>[-s<seed>]``."""
        return f"{self.recipe.name}-{self.fraction}" + ("" if self.seed is None else f"-s{self.seed}")


def planned_runs(
    student: str,
    recipes: list[Recipe],
    fractions: list[float],
    data_efficiency: DataEfficiency | None = None,
    extra_seeds: ExtraSeeds | None = None,
) -> list[RecoveryRun]:
    """The runs of ``student``, each once, main grid first; the students of ``data_efficiency``
    also get its recipe at each of its fractions, those of ``extra_seeds`` the main grid at each
    of its seeds (last)."""
    by_name = {r.name: r for r in recipes}
    if len(by_name) != len(recipes):
        raise ValueError(f"recipe names must be unique, got {[r.name for r in recipes]}")
    runs = [RecoveryRun(student, r, f) for r in recipes for f in fractions]
    if data_efficiency and student in data_efficiency.students:
        if data_efficiency.recipe not in by_name:
            raise ValueError(f"data_efficiency.recipe {data_efficiency.recipe!r} is not one of the recipes {sorted(by_name)}")
        runs += [RecoveryRun(student, by_name[data_efficiency.recipe], f) for f in data_efficiency.fractions]
    if extra_seeds and student in extra_seeds.students:
        runs += [RecoveryRun(student, r, f, s) for s in extra_seeds.seeds for r in recipes for f in fractions]
    return list(dict.fromkeys(runs))


def record_fields(run: RecoveryRun, student: dict, seed: int) -> dict:
    """What ``recovery.json`` says the run is, besides its inputs and config: the identity (the
    student's, with the recovery and its ``seed``), the recipe and the data fraction."""
    return {
        "identity": recovered_identity(student, run.name, run.recipe.name, run.fraction, seed),
        "recipe": asdict(run.recipe),
        "data_fraction": run.fraction,
    }


def recover_student(cfg: RecoverConfig, runs: list[RecoveryRun]) -> list[dict]:
    """Run each of ``runs`` on the pruned student ``<cfg.pruned_dir>/<cfg.student>``: the model to
    ``<cfg.out_root>/<student>/<run.folder>`` (with ``recovery.json``; an existing folder is
    replaced only with ``cfg.overwrite``), its training curve to
    ``<cfg.curves_root>/<student>/<run.folder>.csv``. Returns one summary row per run (name,
    steps, final loss)."""
    if cfg.student is None:
        raise ValueError("recover_student needs the student (a run of prune_runs)")
    student_dir = Path(cfg.pruned_dir) / cfg.student
    pruning = read_record(student_dir, PRUNING_FILE)
    if pruning is None or "identity" not in pruning:
        raise ValueError(f"{student_dir} has no {PRUNING_FILE} with an identity: not a pruned folder of this version")
    summary = []
    for i, run in enumerate(runs, 1):
        log.info("recovery %d/%d: %s", i, len(runs), run.name)
        seed = cfg.config.seed if run.seed is None else run.seed
        settings = RecoveryConfig(**{**asdict(cfg.config), "trainable": run.recipe.trainable, "loss": run.recipe.loss, "seed": seed})
        out = Path(cfg.out_root) / cfg.student / run.folder
        train = Path(cfg.subsets_dir) / f"{subset_name(run.fraction)}.json"
        curve = recover(
            student_dir,
            cfg.teacher_dir,
            train,
            cfg.image_folder,
            out,
            settings,
            layer_map=pruning.get("layer_map"),
            identity=record_fields(run, pruning["identity"], seed),
            overwrite=cfg.overwrite,
        )
        curve_csv = Path(cfg.curves_root) / cfg.student / f"{run.folder}.csv"  # recover() wrote it beside the model
        curve_csv.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out / "training_curve.csv", curve_csv)
        summary.append({"run": run.name, "steps": curve[-1]["step"] if curve else 0, "final_loss": curve[-1]["total"] if curve else None})
    return summary
