"""The project's question files as local lmms-eval tasks, so that lmms-eval asks a model exactly the
questions the project's own evaluator asks and scores them with the same definitions.

:func:`write_tasks` writes, for each family of questions (as :func:`study.evaluation.benchmark.load_benchmarks`
groups them), ``<family>.jsonl`` and the task ``study_<family>.yaml``: greedy generation, the prompt
the question's text with its image first (the project's prompt, see :mod:`study.evaluation.generate`),
the reply stripped and scored by :func:`study.evaluation.metrics.score_family`. The folder is what
lmms-eval calls an include path (``--include_path``); its ``study_tasks.py`` holds the task functions
bound to the image folder. Torch-free, and lmms-eval is not imported here.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from study.evaluation.metrics import score_family

TASK_PREFIX = "study_"
FUNCTIONS_MODULE = "study_tasks"
METRIC = "score"

_TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: generate_until
doc_to_visual: !function {module}.doc_to_visual
doc_to_text: !function {module}.doc_to_text
doc_to_target: answer
process_results: !function {module}.process_results
generation_kwargs:
  max_new_tokens: {max_new_tokens}
  temperature: 0
  do_sample: false
  num_beams: 1
metric_list:
  - metric: {metric}
    aggregation: !function {module}.aggregate
    higher_is_better: true
metadata:
  version: 0
"""


def task_name(family: str) -> str:
    return f"{TASK_PREFIX}{family}"


def family_of(task: str) -> str | None:
    """The family of a task :func:`write_tasks` wrote, else None."""
    return task.removeprefix(TASK_PREFIX) if task.startswith(TASK_PREFIX) else None


def write_tasks(benchmarks: dict[str, list[dict]], image_folder: str | Path, out_dir: str | Path, max_new_tokens: int) -> list[str]:
    """One lmms-eval task per family of ``benchmarks`` in ``out_dir`` (made if absent); returns the
    task names. ``image_folder``: where the questions' images are (as for the project's evaluator)."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{FUNCTIONS_MODULE}.py").write_text(
        "# Written by study.evaluation.lmms_tasks: the task functions, bound to the questions' image folder.\n"
        "from study.evaluation.lmms_tasks import task_functions\n\n"
        f"doc_to_visual, doc_to_text, process_results, aggregate = task_functions({str(Path(image_folder).resolve())!r})\n"
    )
    names = []
    for family, questions in benchmarks.items():
        data = out_dir / f"{family}.jsonl"
        data.write_text("".join(json.dumps({**q, "family": family}) + "\n" for q in questions))
        name = task_name(family)
        (out_dir / f"{name}.yaml").write_text(
            _TASK_YAML.format(
                task=name,
                data=json.dumps(str(data)),
                cache=json.dumps(str(out_dir / "cache")),
                module=FUNCTIONS_MODULE,
                max_new_tokens=max_new_tokens,
                metric=METRIC,
            )
        )
        names.append(name)
    return names


def task_functions(image_folder: str | Path):
    """(doc_to_visual, doc_to_text, process_results, aggregate) of the tasks, images read from
    ``image_folder``."""
    image_folder = Path(image_folder)

    def doc_to_visual(doc: dict) -> list:
        return [Image.open(image_folder / doc["image"]).convert("RGB")] if doc.get("image") else []

    def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
        return doc["text"]

    def process_results(doc: dict, results: list[str]) -> dict:
        return {METRIC: {"question": question_record(doc), "prediction": results[0].strip()}}

    def aggregate(items: list[dict]) -> float:
        questions = [item["question"] for item in items]
        predictions = [item["prediction"] for item in items]
        family = questions[0]["family"]
        return score_family(family, predictions, [q["answer"] for q in questions], questions)["score"]

    return doc_to_visual, doc_to_text, process_results, aggregate


def question_record(doc: dict) -> dict:
    """A question as written: the JSON loader gives every row every column, None where absent."""
    return {k: v for k, v in doc.items() if v is not None}
