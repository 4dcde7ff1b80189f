"""Evaluation by lmms-eval (``evaluate.backend: lmms-eval``), the harness the field reports with.

:func:`evaluate_with_lmms` runs lmms-eval in this process on a model :func:`study.models.io.load_model`
loaded and returns what :func:`study.evaluation.benchmark.evaluate` returns, so the metrics JSON,
``runs.csv``, the figures and the findings do not change with the backend:

- the tasks are lmms-eval's (``gqa``, ``pope``, ``mme`` ...; each task's score in [0, 1] is the
  metric :func:`study.config.vocabulary.lmms_task_score` names, under the task's name), or, with no
  task named, the project's own question files written as local tasks (:mod:`study.evaluation.lmms_tasks`;
  scored as the project scores them, under their family names);
- the model classes are lmms-eval's ``llava_hf`` ones (:mod:`study.evaluation.lmms_models`): its chat
  class for generation tasks, its simple class with a fixed loglikelihood for multiple-choice and
  loglikelihood tasks (the two kinds run as two lmms-eval evaluations);
- a failure is an error: lmms-eval logs some failures and goes on (a generation that raised becomes
  an empty answer, and its command line exits 0 after "Error during evaluation"), so every error it
  logs during the run, and every task without its score, raises :class:`LmmsEvalError`.

Without the ``lmms`` extra (``pip install -e '.[lmms]'``) :func:`require_lmms` says how to install it.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from study.config.vocabulary import lmms_task_score
from study.evaluation.lmms_tasks import METRIC, family_of, write_tasks

INSTALL = "pip install -e '.[lmms]'"
LOGLIKELIHOOD_TYPES = ("loglikelihood", "multiple_choice")
SERVED_FAMILIES = ("llava",)  # the model_types the adapter's classes serve (lmms-eval's llava_hf)


class LmmsEvalError(RuntimeError):
    """lmms-eval failed on a task (it logged an error, or a task has no score)."""


def require_lmms() -> str:
    """lmms-eval's version; ``ImportError`` saying how to install it when it is absent."""
    try:
        return version("lmms_eval")
    except PackageNotFoundError:
        raise ImportError(f"the lmms-eval backend needs the lmms extra: {INSTALL}") from None


def evaluate_with_lmms(
    model,
    processor,
    tasks: Sequence[str],
    benchmarks: dict[str, list[dict]] | None = None,
    image_folder: str | Path | None = None,
    *,
    max_new_tokens: int = 16,
    limit: int | None = None,
    include_path: str | Path | None = None,
    name: str = "model",
) -> dict:
    """``{"scores", "mean_score", "details", "predictions"}`` from lmms-eval's ``tasks`` (each
    ``<task>`` or ``<task>:<metric>``), or with no task the families of ``benchmarks`` (images in
    ``image_folder``) as local tasks, greedy with at most ``max_new_tokens``. ``limit``: the first
    questions of each lmms-eval task (``benchmarks`` come limited already). ``include_path``: a folder
    of more task YAMLs (lmms-eval's ``--include_path``). ``name`` names the model in lmms-eval's logs."""
    require_lmms()
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from study.evaluation.lmms_models import LlavaChat, LlavaSimple

    if model.config.model_type not in SERVED_FAMILIES:
        raise ValueError(f"the lmms-eval backend evaluates {SERVED_FAMILIES} models, got model_type {model.config.model_type!r}")
    specs = [lmms_task_score(t) for t in tasks]
    results: dict[str, dict] = {}
    samples: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="study-lmms-tasks-") as local:
        if not specs:
            if not benchmarks:
                raise ValueError("no lmms-eval task named and no question files to write as local tasks")
            specs = [(task, (METRIC,), 1.0) for task in write_tasks(benchmarks, image_folder, local, max_new_tokens)]
            limit = None
        names = [task for task, _, _ in specs]
        paths = [local, *([str(include_path)] if include_path else [])]
        manager = TaskManager(verbosity="WARNING", include_path=paths, include_defaults=False)
        if set(names) - set(manager.all_tasks):  # lmms-eval's own tasks: index them too (seconds)
            manager = TaskManager(verbosity="WARNING", include_path=paths)
        unknown = [t for t in names if t not in manager.all_tasks]
        if unknown:
            raise ValueError(f"lmms-eval {require_lmms()} has no task {unknown} (`python -m lmms_eval --tasks list` lists them)")
        by_kind = {LlavaSimple: [t for t in names if _output_type(manager, t) in LOGLIKELIHOOD_TYPES]}
        by_kind[LlavaChat] = [t for t in names if t not in by_kind[LlavaSimple]]
        with _logged_errors() as errors:
            for cls, group in by_kind.items():
                if group:
                    out = simple_evaluate(
                        model=cls(model, processor, name),
                        tasks=group,
                        task_manager=manager,
                        limit=limit,
                        bootstrap_iters=0,
                        log_samples=True,
                    )
                    results.update(out["results"])
                    samples.update(out["samples"])
    if errors:
        raise LmmsEvalError(f"lmms-eval logged {len(errors)} error(s) on {names}; the first: {errors[0]}")
    return fold_results(specs, results, samples)


def fold_results(specs: Sequence[tuple[str, tuple[str, ...], float]], results: dict, samples: dict) -> dict:
    """lmms-eval's ``results`` and ``samples`` as :func:`study.evaluation.benchmark.evaluate`'s
    result: per task (its family for a local task) the score, every number lmms-eval reported,
    and one prediction per question."""
    scores, details, predictions = {}, {}, []
    for task, metrics, maximum in specs:
        reported = {
            key.split(",")[0]: float(value) for key, value in results.get(task, {}).items() if _is_number(value) and "_stderr" not in key
        }
        absent = [m for m in metrics if m not in reported]
        if absent:
            raise LmmsEvalError(f"lmms-eval reported no {absent} for task {task!r}; it reported {sorted(reported) or 'nothing'}")
        key = family_of(task) or task
        scores[key] = sum(reported[m] for m in metrics) / maximum
        if not 0 <= scores[key] <= 1:
            raise LmmsEvalError(f"task {task!r}: {' + '.join(metrics)} over {maximum} is {scores[key]}, not in [0, 1]")
        details[key] = {**reported, "score": scores[key], "n": len(samples.get(task, []))}
        predictions += [_prediction(key, sample) for sample in samples.get(task, [])]
    return {"scores": scores, "mean_score": sum(scores.values()) / len(scores), "details": details, "predictions": predictions}


def _prediction(family: str, sample: dict) -> dict:
    """A logged sample as a prediction: the reply, or for a loglikelihood task the continuation with
    the lowest loss (lmms-eval logs each request's arguments one after the other: context,
    continuation, ...)."""
    replies = sample["filtered_resps"]
    if isinstance(replies[0], tuple | list):
        chosen = min(range(len(replies)), key=lambda i: replies[i][0])
        reply = sample["arguments"][chosen * (len(sample["arguments"]) // len(replies)) + 1]
    else:
        reply = replies[0]
    doc = sample.get("doc") or {}
    return {
        "question_id": doc.get("question_id", sample["doc_id"]),
        "category": family,
        "prediction": str(reply).strip(),
        "answer": sample.get("target"),
    }


def _output_type(manager, task: str) -> str:
    """A task's output type, read from its YAML (a group or tag counts as generation)."""
    from lmms_eval.utils import load_yaml_config

    entry = manager.task_index[task]
    if entry["type"] != "task":
        return "generate_until"
    return load_yaml_config(entry["yaml_path"], mode="simple").get("output_type", "generate_until")


@contextlib.contextmanager
def _logged_errors() -> Iterator[list[str]]:
    """The messages lmms-eval logs at level ERROR (and above) while the block runs."""
    from loguru import logger

    errors: list[str] = []
    sink = logger.add(lambda message: errors.append(message.record["message"]), level="ERROR")
    try:
        yield errors
    finally:
        logger.remove(sink)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
