"""The names the settings choose from (paradigms, metrics, recovery recipes, dtypes, families)
and the checks on single values. Torch-free: the schema, check-config and the report use them,
and the modules that implement each name import the list from here."""

from __future__ import annotations

from dataclasses import dataclass

PARADIGMS = ("layer", "width", "hybrid")
LAYER_METRICS = ("block_influence", "angular", "loss", "last", "random")
WIDTH_METRICS = ("magnitude_l1", "magnitude_l2", "taylor", "activation")
DATA_FREE_METRICS = ("last", "random", "magnitude_l1", "magnitude_l2")  # need no calibration batches
MODES = ("query_heads", "kv_groups")  # GQA: remove query heads evenly per KV group, or whole groups
# what a width or hybrid run at a level removes: as many decoder parameters as the layerwise run at
# that level (whole blocks), or the requested fraction
MATCH_BUDGETS = ("layer", "none")

TRAINABLE = ("projector", "llm", "projector+llm", "lora")
LOSS_PARTS = ("sft", "kd_logit", "kd_hidden")
MIXED_PRECISION = ("no", "bf16", "fp16")
KL_DIRECTIONS = ("forward", "reverse")
HIDDEN_KINDS = ("mse", "cosine")

DTYPES = ("auto", "float32", "bfloat16", "float16")

STUDY, LMMS_EVAL = "study", "lmms-eval"
BACKENDS = (STUDY, LMMS_EVAL)  # who evaluates: the project's evaluator, or lmms-eval (the ``lmms`` extra)
# lmms-eval tasks whose score is known here (the paper profiles'): the metrics lmms-eval 0.7.3 reports,
# whose sum over the given maximum is the task's score in [0, 1]. Any other task is named with its
# metric, ``<task>:<metric>``, a metric that already lies in [0, 1].
LMMS_TASK_SCORES = {
    "gqa": (("exact_match",), 1.0),
    "pope": (("pope_f1_score",), 1.0),
    "scienceqa_img": (("exact_match",), 1.0),
    "mme": (("mme_perception_score", "mme_cognition_score"), 2800.0),  # 14 subtasks, each (acc + acc+) x 100
    "mmbench_en_dev": (("gpt_eval_score",), 100.0),  # a percentage
    "mmbench_en_dev_static": (("gpt_eval_score",), 100.0),
}

NONE = "none"  # the paradigm and recovery of the unpruned model; the calibration of data-free metrics
MULTIMODAL, TEXT = "multimodal", "text"  # what a run's importance scores were calibrated on

# the synthetic data's question families (the evaluation ``category``); captions are training only
EVAL_FAMILIES = ("open", "yesno", "mc", "count", "text", "knowledge_image", "knowledge_text")
TRAIN_FAMILIES = (*EVAL_FAMILIES, "caption")
GENERATED = ("synthetic",)  # the datasets the data stage can generate
MANIFEST = "manifest.json"  # written beside generated data: a hash per file, what the stages depend on


def check_ratio(ratio: float) -> float:
    if not 0 <= ratio < 1:
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")
    return float(ratio)


def split_hybrid_metric(metric: str) -> tuple[str, str]:
    """``block_influence+taylor`` -> (``block_influence``, ``taylor``): the layer metric that picks
    the blocks to drop, then the width metric that picks the heads and channels of the others."""
    layer, plus, width = metric.partition("+")
    if not plus or layer not in LAYER_METRICS or width not in WIDTH_METRICS:
        raise ValueError(
            f"a hybrid metric is '<layer metric>+<width metric>' (layer: {', '.join(LAYER_METRICS)}; "
            f"width: {', '.join(WIDTH_METRICS)}), e.g. 'block_influence+taylor'; got {metric!r}"
        )
    return layer, width


def check_method(paradigm: str, metric: str) -> None:
    """Raise ``ValueError`` for an unknown paradigm or a metric that does not fit it."""
    if paradigm not in PARADIGMS:
        raise ValueError(f"unknown paradigm {paradigm!r}; expected one of {PARADIGMS}")
    if paradigm == "hybrid":
        split_hybrid_metric(metric)
        return
    known = LAYER_METRICS if paradigm == "layer" else WIDTH_METRICS
    if metric not in known:
        raise ValueError(f"unknown {paradigm} importance metric {metric!r}; expected one of {known}")


def needs_calibration(metric: str) -> bool:
    """Whether ``metric`` (or either half of a hybrid ``<layer>+<width>`` metric) reads calibration data."""
    return any(part not in DATA_FREE_METRICS for part in metric.split("+"))


def parse_loss(spec: str) -> set[str]:
    """``sft+kd_hidden`` -> ``{"sft", "kd_hidden"}``."""
    parts = set(spec.split("+"))
    if not spec or parts - set(LOSS_PARTS):
        raise ValueError(f"loss must join some of {LOSS_PARTS} with '+', got {spec!r}")
    return parts


def check_fractions(fractions) -> list[float]:
    """Data fractions, each in (0, 1], sorted and without repeats."""
    bad = [f for f in fractions if not 0 < f <= 1]
    if bad or not fractions:
        raise ValueError(f"fractions must be in (0, 1], got {list(fractions)}")
    return sorted(set(float(f) for f in fractions))


def lmms_task_score(spec: str) -> tuple[str, tuple[str, ...], float]:
    """``gqa`` -> ``("gqa", ("exact_match",), 1.0)`` (:data:`LMMS_TASK_SCORES`); ``<task>:<metric>``
    -> ``(task, (metric,), 1.0)``: the task, the metrics summed and their maximum."""
    task, colon, metric = spec.partition(":")
    if colon:
        if not task or not metric:
            raise ValueError(f"an lmms-eval task is '<task>' or '<task>:<metric>', got {spec!r}")
        return task, (metric,), 1.0
    if task not in LMMS_TASK_SCORES:
        raise ValueError(
            f"lmms-eval task {task!r}: name the metric that is its score in [0, 1] as '{task}:<metric>' "
            f"(known without one: {', '.join(LMMS_TASK_SCORES)})"
        )
    return (task, *LMMS_TASK_SCORES[task])


def check_device(device: str) -> str:
    """``auto`` or a torch device name (``cpu``, ``cuda``, ``cuda:1``, ``mps``), checked without torch."""
    kind, _, index = device.partition(":")
    if device != "auto" and (kind not in ("cpu", "cuda", "mps", "xpu") or (index and not index.isdigit())):
        raise ValueError(f"device must be 'auto' or a torch device such as 'cpu', 'cuda' or 'cuda:1', got {device!r}")
    return device


@dataclass(frozen=True)
class Method:
    """A pruning method: paradigm, importance metric, and whether it calibrates on text only."""

    paradigm: str
    metric: str
    text_only: bool = False

    def __post_init__(self) -> None:
        check_method(self.paradigm, self.metric)

    @classmethod
    def parse(cls, name: str) -> Method:
        """``width-taylor-text`` -> ``Method("width", "taylor", True)``."""
        parts = str(name).split("-")
        text_only = len(parts) == 3 and parts[2] == TEXT
        if len(parts) != 2 + text_only:
            raise ValueError(f"a method is '<paradigm>-<metric>' or '<paradigm>-<metric>-text', got {name!r}")
        return cls(parts[0], parts[1], text_only)

    @property
    def name(self) -> str:
        return f"{self.paradigm}-{self.metric}" + (f"-{TEXT}" if self.text_only else "")

    @property
    def calibration(self) -> str:
        """``multimodal``, ``text``, or ``none`` for a metric that reads no data."""
        return NONE if not needs_calibration(self.metric) else TEXT if self.text_only else MULTIMODAL

    def run(self, level: float, seed: int | None = None) -> str:
        """The run's name at ``level``; ``seed`` None: the main calibration seed (no suffix)."""
        name = f"{self.name}-{float(level)}"
        return name if seed is None else f"{name}-s{seed}"
