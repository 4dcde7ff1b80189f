"""The study's settings: one dataclass per section of ``params.yaml``, each with its defaults (the
embedded offline study's values) and its checks. Nothing else declares a default: the notebooks,
the command line and ``params.yaml`` itself (``python -m study profile``) are built from these.

A field marked *per run* is set by each DVC stage (``-p NAME VALUE``) or on the command line, never
in ``params.yaml``: which model, which output, which method at which level.
"""

from __future__ import annotations

import importlib.util
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from study.config.vocabulary import (
    BACKENDS,
    DTYPES,
    GENERATED,
    HIDDEN_KINDS,
    KL_DIRECTIONS,
    LMMS_EVAL,
    MANIFEST,
    MATCH_BUDGETS,
    MIXED_PRECISION,
    MODES,
    STUDY,
    TRAIN_FAMILIES,
    TRAINABLE,
    Method,
    check_device,
    check_fractions,
    check_ratio,
    lmms_task_score,
    parse_loss,
)


def setting(default, help: str = ""):
    """A field of ``params.yaml`` (``help``: the comment written beside it)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: _copy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def per_run(default=None, help: str = ""):
    """A field each run sets (a stage's ``-p NAME VALUE``); never in ``params.yaml``."""
    return field(default=default, metadata={"per_run": True, "help": help})


def _copy(value):
    return (
        [_copy(v) for v in value]
        if isinstance(value, list)
        else {k: _copy(v) for k, v in value.items()}
        if isinstance(value, dict)
        else value
    )


def _check_choices(owner) -> None:
    """Every ``Literal`` field of ``owner`` holds one of its choices (also when built directly)."""
    for name, hint in typing.get_type_hints(type(owner)).items():
        if typing.get_origin(hint) is Literal and getattr(owner, name) not in typing.get_args(hint):
            raise ValueError(f"{name} must be one of {typing.get_args(hint)}, got {getattr(owner, name)!r}")


def _at_least(owner, names: tuple[str, ...], low: int = 1) -> None:
    for name in names:
        if getattr(owner, name) < low:
            raise ValueError(f"{name} must be >= {low}, got {getattr(owner, name)}")


# ---------------------------------------------------------------------------------------------- data


@dataclass
class DataConfig:
    """The synthetic dataset of the embedded study (notebooks/00_data.ipynb, study.data.synthetic)."""

    generate: list[str] = setting(
        list(GENERATED), "what the data stage generates: [synthetic], or [] on real data (the pipeline then has no data stage)"
    )
    manifest: str = setting(
        "results/data/manifest.json",
        "the file the stages depend on for the study's data, instead of hashing image folders: the generated"
        " data's manifest, or a real dataset's annotation file",
    )
    out_dir: str = setting("results/data")
    seed: int = setting(0)
    n_train: int = setting(15000, "training samples (LLaVA conversation format)")
    n_eval_per_family: int = setting(200, "evaluation questions per family")
    turns_per_sample: int = setting(4)
    n_properties: int = setting(8, "facts per object kind in the ontology")
    cell_px: int = setting(12, "pixels per grid cell of a scene")
    min_objects: int = setting(2)
    max_objects: int = setting(5)
    mixture: dict[str, float] = setting(
        {"open": 3, "yesno": 4, "mc": 4, "count": 2, "caption": 0.5, "knowledge_image": 2, "text": 1.5, "knowledge_text": 1},
        "relative weight of each question family in the training data",
    )

    def __post_init__(self) -> None:
        if set(self.generate) - set(GENERATED):
            raise ValueError(f"generate must list some of {list(GENERATED)}, got {self.generate}")
        if self.generate and self.manifest != f"{self.out_dir.rstrip('/')}/{MANIFEST}":
            raise ValueError(
                f"manifest must be {self.out_dir.rstrip('/')}/{MANIFEST} (the generated data's) while generate is {self.generate}"
            )
        unknown = set(self.mixture) - set(TRAIN_FAMILIES)
        if unknown:
            raise ValueError(f"unknown families in mixture: {sorted(unknown)}; expected some of {TRAIN_FAMILIES}")
        if any(w < 0 for w in self.mixture.values()) or sum(self.mixture.values()) <= 0:
            raise ValueError(f"mixture weights must be >= 0 with a positive sum, got {self.mixture}")
        _at_least(self, ("n_train", "n_eval_per_family", "turns_per_sample", "n_properties", "cell_px", "min_objects"))
        if self.max_objects < self.min_objects:
            raise ValueError(f"max_objects ({self.max_objects}) must be >= min_objects ({self.min_objects})")


@dataclass
class SubsetsConfig:
    """Nested, stratified fractions of the training data (notebooks/00_subsets.ipynb)."""

    train: str = setting("results/data/train.json", "LLaVA-format training JSON")
    out_dir: str = setting("results/subsets", "<out_dir>/<N>pct.json per fraction")
    fractions: list[float] = setting([0.01, 0.05, 0.1, 0.25, 0.5, 1.0])
    seed: int = setting(0)

    def __post_init__(self) -> None:
        check_fractions(self.fractions)


# ---------------------------------------------------------------------------------------------- teacher


@dataclass
class TeacherArchitecture:
    """Shapes of the tiny LLaVA teacher (study.models.teacher)."""

    hidden_size: int = setting(112)
    intermediate_size: int = setting(336)
    num_hidden_layers: int = setting(8)
    num_attention_heads: int = setting(4)
    num_key_value_heads: int = setting(2)
    vision_hidden_size: int = setting(128)
    vision_intermediate_size: int = setting(256)
    vision_layers: int = setting(2)
    vision_heads: int = setting(4)
    image_size: int = setting(36)
    patch_size: int = setting(12)
    max_position_embeddings: int = setting(512)

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of num_key_value_heads {self.num_key_value_heads}"
            )


@dataclass
class TeacherTraining:
    """The teacher recipe's hyper-parameters (study.teacher.training): a vision stage, a text-only
    language stage, then instruction tuning of the whole model."""

    seed: int = setting(0)
    vision_steps: int = setting(150)
    vision_batch_size: int = setting(256)
    vision_lr: float = setting(0.001)
    language_steps: int = setting(2200, "text-only option lookup (value, then facts), loss on every token")
    language_lr: float = setting(0.0003)
    steps: int = setting(3000, "instruction-tuning steps")
    batch_size: int = setting(64)
    lr: float = setting(0.0003)
    projector_lr: float = setting(0.0003)
    warmup_steps: int = setting(100)
    decay_steps: int = setting(600, "the cosine decay at the end (steps - warmup_steps: a plain cosine schedule)")
    weight_decay: float = setting(0.0)
    max_grad_norm: float = setting(1.0)
    log_every: int = setting(200)
    text_loss_weight: float = setting(1.0, "+ this x the loss on the question and template tokens (0: answers only)")

    def __post_init__(self) -> None:
        if self.steps < 1 or self.warmup_steps < 0 or self.decay_steps < 0 or self.language_steps < 0:
            raise ValueError(
                f"steps must be >= 1 and warmup/decay/language steps >= 0, got {self.steps}, {self.warmup_steps}, "
                f"{self.decay_steps}, {self.language_steps}"
            )
        if self.text_loss_weight < 0:
            raise ValueError(f"text_loss_weight must be >= 0, got {self.text_loss_weight}")
        if self.warmup_steps + self.decay_steps > self.steps:
            raise ValueError(f"warmup_steps + decay_steps ({self.warmup_steps} + {self.decay_steps}) exceed steps ({self.steps})")


@dataclass
class TeacherConfig:
    """The unpruned model every run starts from (notebooks/01_teacher.ipynb): trained here, or a
    local checkpoint linked in."""

    data_dir: str = setting("results/data")
    out_dir: str = setting("results/teacher")
    log_csv: str = setting("results/plots/teacher_training.csv")
    checkpoint: str | None = setting(None, "a local HF LLaVA folder to use instead of training the embedded teacher")
    threads: int = setting(2)
    monitor_questions: int = setting(32, "per family, scored every log_every steps (0: off)")
    architecture: TeacherArchitecture = field(default_factory=TeacherArchitecture)
    training: TeacherTraining = field(default_factory=TeacherTraining)
    overwrite: bool = per_run(False, "replace an existing out_dir (the DVC stage sets it: DVC owns it)")

    def __post_init__(self) -> None:
        _at_least(self, ("threads",))
        _at_least(self, ("monitor_questions",), 0)


# ---------------------------------------------------------------------------------------------- evaluate


@dataclass
class EvaluateConfig:
    """Benchmarks and efficiency of a model folder (notebooks/04_evaluate.ipynb, study.evaluation)."""

    data_dir: str = setting("results/data", "the synthetic data (the teacher's layer-skip ablation calibrates on it)")
    eval_files: str = setting("results/data/eval/*.jsonl", "question files (a glob), or a folder of LLaVA's benchmark files")
    image_folder: str = setting("results/data/images")
    batch_size: int = setting(64)
    max_new_tokens: int = setting(16)
    limit: int | None = setting(None, "questions per family (null: all)")
    ablation_fraction: float | None = setting(0.25, "layer-skip ablation of the teacher (null: off)")
    calibration_samples: int = setting(64, "the ablation's calibration samples")
    device: str = setting("auto", "cuda if available, else cpu; or a torch device (cuda:1)")
    dtype: Literal[DTYPES] = setting("auto", "auto: the checkpoint's stored dtype (the embedded teacher: float32)")
    threads: int = setting(2)
    timings_dir: str = setting("results/timings/evaluation", "measured latency and memory per run (untracked)")
    backend: Literal[BACKENDS] = setting(
        STUDY, "who answers and scores: study (this project's evaluator) or lmms-eval (the lmms extra); the same metrics JSON"
    )
    lmms_tasks: list[str] = setting(
        [], "lmms-eval's tasks, <task> or <task>:<metric> (backend lmms-eval; []: the eval_files as local lmms-eval tasks)"
    )
    lmms_include_path: str | None = setting(None, "a folder of your own lmms-eval task YAMLs (lmms-eval's --include_path)")
    model_dir: str | None = per_run(None, "the model folder (null: only the folders under models_root)")
    models_root: str | None = per_run(None, "also every model folder under it (metrics_dir/<run>.json each)")
    reference_metrics: str | None = per_run(None, "the teacher's metrics JSON: relative scores against it")
    metrics_out: str | None = per_run(None, "model_dir's metrics JSON")
    predictions_out: str | None = per_run(None, "model_dir's predictions JSONL")
    metrics_dir: str | None = per_run(None)
    predictions_dir: str | None = per_run(None)

    def __post_init__(self) -> None:
        _check_choices(self)
        _at_least(self, ("batch_size", "max_new_tokens", "calibration_samples", "threads"))
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be null or >= 1, got {self.limit}")
        if self.ablation_fraction is not None and not 0 < self.ablation_fraction < 1:
            raise ValueError(f"ablation_fraction must be null or in (0, 1), got {self.ablation_fraction}")
        check_device(self.device)
        for task in self.lmms_tasks:
            lmms_task_score(task)
        if self.backend == LMMS_EVAL:
            if importlib.util.find_spec("lmms_eval") is None:
                raise ValueError("backend lmms-eval needs lmms-eval, which is not installed: pip install -e '.[lmms]'")
            if self.ablation_fraction is not None:
                raise ValueError(
                    "the layer-skip ablation is scored by the project's evaluator: set ablation_fraction null with backend lmms-eval"
                )
        if self.model_dir is not None and self.metrics_out is None:
            raise ValueError("model_dir needs metrics_out")
        if self.models_root is not None and (self.metrics_dir is None or self.predictions_dir is None):
            raise ValueError("models_root needs metrics_dir and predictions_dir")


# ---------------------------------------------------------------------------------------------- prune


@dataclass
class PruneConfig:
    """How a run prunes (notebooks/02_prune.ipynb, ``python -m study prune``, study.pruning); the
    method and level come per run (prune_runs)."""

    model_dir: str = setting("results/teacher")
    calibration: str = setting("results/data/train.json", "LLaVA-format JSON of calibration samples")
    image_folder: str | None = setting(None, "null: the 'images' folder beside the calibration file")
    calibration_samples: int = setting(64)
    calibration_batch_size: int = setting(8, "samples per forward pass while scoring importance")
    mode: Literal[MODES] = setting("query_heads", "GQA: remove query heads evenly per KV group, or whole kv_groups")
    match_budget: Literal[MATCH_BUDGETS] = setting(
        "layer",
        "width and hybrid runs remove as many decoder parameters as the layerwise run at the same level "
        "(round(level x blocks) whole blocks), so paradigms compare at equal size; none: the requested level",
    )
    depth_share: float = setting(0.5, "hybrid runs: the share of the budget removed as whole blocks (the rest: widths)")
    round_to: int = setting(1, "width and hybrid runs: kept MLP channels (and query width where it can) are multiples of it")
    seed: int = setting(0, "draws the calibration samples (run <method>-<level>)")
    extra_seeds: list[int] = setting(
        [1, 2], "the run again with each of these calibration seeds, in the same stage: run <method>-<level>-s<seed>"
    )
    device: str = setting("auto", "where importance is estimated: cuda if available, else cpu")
    dtype: Literal[DTYPES] = setting("auto", "the pruned model's dtype (auto: the checkpoint's stored dtype)")
    threads: int = setting(2)
    timings_dir: str = setting("results/timings/pruning", "each run's measured cost (untracked)")
    method: str | None = per_run(None, "<paradigm>-<metric>[-text], e.g. width-taylor")
    level: float | None = per_run(None, "fraction of decoder-layer parameters to remove")
    out_dir: str | None = per_run(None, "the pruned HF folder")
    record_out: str | None = per_run(None, "a copy of its pruning.json for the report")
    importance: str | None = per_run(
        None, "the method's importance file: the importance stage writes it, each level's run reads it (null: scored in the run)"
    )
    overwrite: bool = per_run(False, "replace existing output folders (the DVC stage sets it: DVC owns them)")

    def __post_init__(self) -> None:
        _check_choices(self)
        _at_least(self, ("calibration_samples", "calibration_batch_size", "threads", "round_to"))
        if not 0 <= self.depth_share <= 1:
            raise ValueError(f"depth_share must be in [0, 1] (the share of a hybrid's budget removed as blocks), got {self.depth_share}")
        if any(s < 0 for s in self.extra_seeds):
            raise ValueError(f"extra_seeds must be integers >= 0, got {self.extra_seeds}")
        if len(set(self.extra_seeds)) != len(self.extra_seeds) or self.seed in self.extra_seeds:
            raise ValueError(
                f"extra_seeds must be distinct and differ from seed ({self.seed}, the runs without a suffix), got {self.extra_seeds}"
            )
        check_device(self.device)
        if self.method is not None:
            Method.parse(self.method)
        if self.level is not None:
            check_ratio(self.level)

    @property
    def calibration_images(self) -> Path:
        """The folder the calibration samples' images are read from: ``image_folder``, else the
        'images' folder beside the calibration file."""
        return Path(self.image_folder) if self.image_folder is not None else Path(self.calibration).parent / "images"


@dataclass
class PruneRunsConfig:
    """The (method x level) grid of the prune and evaluate_pruned stages."""

    levels: list[float] = setting([0.15, 0.3, 0.45, 0.6], "fraction of decoder-layer parameters removed")
    methods: list[str] = setting(
        [
            "layer-block_influence",
            "width-taylor",
            "layer-block_influence-text",
            "width-taylor-text",
            "hybrid-block_influence+taylor",
        ],
        "<paradigm>-<metric>, -text: calibrated on the samples' text only; hybrid: <layer metric>+<width metric>",
    )

    def __post_init__(self) -> None:
        if not self.levels:
            raise ValueError("levels needs at least one level")
        for level in self.levels:
            if check_ratio(level) == 0:
                raise ValueError("a level of 0 prunes nothing; the teacher is evaluated anyway")
        if not self.methods:
            raise ValueError("methods needs at least one method")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"a method is listed twice in {self.methods}")
        for method in self.methods:
            try:
                Method.parse(method)
            except ValueError as err:
                raise ValueError(f"methods {method!r}: {err}") from None

    def runs(self) -> list[str]:
        """The main seed's run names, method by method."""
        return [Method.parse(m).run(level) for m in self.methods for level in self.levels]


# ---------------------------------------------------------------------------------------------- recover


@dataclass
class RecoveryConfig:
    """Hyper-parameters of one recovery run (study.recovery.train). The reference study, on 7B:
    lr 2e-5, LoRA r 128 / alpha 256 (the paper profiles)."""

    trainable: Literal[TRAINABLE] = per_run("projector+llm", "what is trained (each recipe sets it)")
    loss: str = per_run("sft", "sft, kd_logit, kd_hidden joined by '+' (each recipe sets it)")
    kd_alpha: float = setting(0.5, "weight of distillation against SFT when both are used")
    hidden_weight: float = setting(1.0)
    temperature: float = setting(2.0)
    kl_direction: Literal[KL_DIRECTIONS] = setting("forward")
    hidden_layers: list[int] | None = setting(None, "student blocks distilled (null: the last)")
    hidden_kind: Literal[HIDDEN_KINDS] = setting("mse")
    lr: float = setting(0.0001)
    epochs: float = setting(1.0)
    batch_size: int = setting(16)
    grad_accum: int = setting(1)
    warmup_ratio: float = setting(0.03)
    weight_decay: float = setting(0.0)
    max_grad_norm: float = setting(1.0)
    lora_r: int = setting(16)
    lora_alpha: int = setting(32)
    lora_dropout: float = setting(0.05)
    mixed_precision: Literal[MIXED_PRECISION] = setting("no", "bf16 / fp16: float32 master weights, 16-bit compute under autocast")
    teacher_dtype: Literal[DTYPES] = setting("auto", "the frozen KD teacher's dtype")
    seed: int = setting(0)
    checkpoint_every: int = setting(50, "optimizer steps between checkpoints (0: none)")
    log_every: int = setting(10)
    stop_after: int | None = per_run(None, "stop (as if interrupted) after this many optimizer steps")

    def __post_init__(self) -> None:
        _check_choices(self)
        parse_loss(self.loss)
        if not 0 <= self.kd_alpha <= 1:
            raise ValueError(f"kd_alpha must be in [0, 1], got {self.kd_alpha}")
        _at_least(self, ("batch_size", "grad_accum", "lora_r", "log_every"))
        _at_least(self, ("checkpoint_every",), 0)
        if self.epochs <= 0 or self.lr < 0:  # lr 0: the losses of a run that changes no weight
            raise ValueError(f"epochs must be > 0 and lr >= 0, got {self.epochs} and {self.lr}")


@dataclass(frozen=True)
class Recipe:
    """A named recovery method: what is trained and with which loss (``sft+kd_hidden`` ...)."""

    name: str
    trainable: Literal[TRAINABLE]
    loss: str

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE:
            raise ValueError(f"recipe {self.name!r}: trainable must be one of {TRAINABLE}, got {self.trainable!r}")
        parse_loss(self.loss)
        if "/" in self.name or not self.name:
            raise ValueError(f"recipe name must be a non-empty folder name, got {self.name!r}")


@dataclass
class DataEfficiency:
    """The data-efficiency curve: one recipe on every data fraction, for some students."""

    recipe: str
    fractions: list[float]
    students: list[str]

    def __post_init__(self) -> None:
        check_fractions(self.fractions)


@dataclass
class ExtraSeeds:
    """Recovery seeds beyond ``config.seed`` for some students: every recipe at the main fractions
    again with each seed (run ``<student>-<recipe>-<fraction>-s<seed>``), for a spread over seeds."""

    seeds: list[int]
    students: list[str]

    def __post_init__(self) -> None:
        if any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"extra_seeds.seeds must be distinct integers >= 0, got {self.seeds}")


@dataclass
class RecoverConfig:
    """Recovery training of the pruned students (notebooks/03_recover.ipynb, study.recovery): every
    student gets every recipe at every main fraction."""

    pruned_dir: str = setting("results/pruned", "the students: <pruned_dir>/<student>")
    teacher_dir: str = setting("results/teacher")
    subsets_dir: str = setting("results/subsets")
    image_folder: str = setting("results/data/images")
    out_root: str = setting("results/recovered", "<out_root>/<student>/<recipe>-<fraction>/ (HF folder + recovery.json)")
    curves_root: str = setting("results/plots/recovery", "<curves_root>/<student>/<recipe>-<fraction>.csv")
    threads: int = setting(2)
    fractions: list[float] = setting([0.05], "the main data fractions (the reference study: 5%)")
    recipes: list[Recipe] = field(
        default_factory=lambda: [
            Recipe("projector", "projector", "sft"),
            Recipe("sft", "projector+llm", "sft"),
            Recipe("lora", "lora", "sft"),
            Recipe("sft+kd_logit", "projector+llm", "sft+kd_logit"),
            Recipe("sft+kd_hidden", "projector+llm", "sft+kd_hidden"),
            Recipe("kd_hidden", "projector+llm", "kd_hidden"),
        ],
        metadata={"help": "the reference study's methods"},
    )
    data_efficiency: DataEfficiency | None = field(
        default_factory=lambda: DataEfficiency("sft+kd_hidden", [0.01, 0.05, 0.1, 0.25, 0.5, 1.0], ["width-taylor-0.3"]),
        metadata={"help": "the reference study's best recipe on every data fraction (null: none)"},
    )
    extra_seeds: ExtraSeeds | None = field(
        default_factory=lambda: ExtraSeeds([1, 2], ["layer-block_influence-0.3", "width-taylor-0.3"]),
        metadata={"help": "these students' main grid again with each recovery seed: a spread where the findings compare (null: none)"},
    )
    config: RecoveryConfig = field(default_factory=RecoveryConfig)
    student: str | None = per_run(None, "the pruned run to recover (recover_runs.students)")
    overwrite: bool = per_run(False, "replace existing model folders (the DVC stage sets it: DVC owns them)")

    def __post_init__(self) -> None:
        _at_least(self, ("threads",))
        check_fractions(self.fractions)
        names = [r.name for r in self.recipes]
        if not names:
            raise ValueError("recipes needs at least one recipe")
        if len(set(names)) != len(names):
            raise ValueError(f"recipe names must be unique, got {names}")
        if self.data_efficiency is not None and self.data_efficiency.recipe not in names:
            raise ValueError(f"data_efficiency.recipe {self.data_efficiency.recipe!r} is not one of the recipes {names}")
        if self.extra_seeds is not None and self.config.seed in self.extra_seeds.seeds:
            raise ValueError(
                f"extra_seeds.seeds must differ from config.seed ({self.config.seed}, the runs without a suffix), got {self.extra_seeds.seeds}"
            )


@dataclass
class RecoverRunsConfig:
    """One recover and one evaluate_recovered stage per student (runs of prune_runs)."""

    students: list[str] = setting([f"{m}-{level}" for m in ("layer-block_influence", "width-taylor") for level in (0.15, 0.3, 0.45, 0.6)])


# ---------------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class FindingsConfig:
    """The thresholds of the reference study's findings (study.report.findings)."""

    low_level: float = setting(0.2, "(b) projector-only finetuning suffices below this compression level")
    little_data_fraction: float = setting(0.05, '(a) recovery on at most this fraction of the data is "little data"')
    target_fraction: float = setting(0.05, "(d) recovery on this fraction ...")
    target_retained_pct: float = setting(95.0, "(d) ... retains more than this AVG-%")
    best_recipe: str = setting("sft+kd_hidden", "(c)")
    projector_margin_pct: float = setting(1.0, '(b) "suffices": within this many AVG-% points of the best recovery that trains the LLM')


@dataclass(frozen=True)
class ReportConfig(FindingsConfig):
    """The report (notebooks/05_report.ipynb, study.report): reads results/ only, writes runs.csv,
    figures, tables and REPORT.md."""

    metrics_dir: str = setting("results/metrics")
    predictions_dir: str = setting(
        "results/predictions", "each run's per-question answers, at its metrics JSON's relative path (.jsonl): what the findings pair"
    )
    pruning_files: str = setting("results/pruning/**/*.json", "recursive: the extra seeds' records sit in <run>-seeds/")
    runs_csv: str = setting("results/runs.csv")
    figures_dir: str = setting("results/figures")
    tables_dir: str = setting("results/tables")
    report_md: str = setting("results/REPORT.md")
    heatmap_fraction: float | None = setting(None, "data fraction shown in the recovery heatmap (null: the one most recovered runs use)")
    dpi: int = setting(120)


SECTIONS = {
    "data": DataConfig,
    "subsets": SubsetsConfig,
    "teacher": TeacherConfig,
    "evaluate": EvaluateConfig,
    "prune": PruneConfig,
    "prune_runs": PruneRunsConfig,
    "recover": RecoverConfig,
    "recover_runs": RecoverRunsConfig,
    "report": ReportConfig,
}
