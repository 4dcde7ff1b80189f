"""LLaVA's own evaluation files for GQA, POPE, ScienceQA and MME, read as question records.

LLaVA-1.5 evaluates from the folder its ``eval.zip`` unpacks to (``playground/data/eval``; see
LLaVA's ``docs/Evaluation.md`` and ``scripts/v1_5/eval/*.sh``). Each benchmark's question file
lies there beside the benchmark's own annotations, which hold the answers:

- GQA: ``gqa/llava_gqa_testdev_balanced.jsonl``; answers (and ``types.structural``) from GQA's
  release ``gqa/data/testdev_balanced_questions.json``; images ``gqa/data/images``.
- POPE: ``pope/llava_pope_test.jsonl`` (``category``: adversarial, popular, random); labels from
  POPE's ``pope/coco/coco_pope_<category>.json`` (JSON lines with ``label``, in the order of that
  category's questions); images ``pope/val2014``.
- ScienceQA: ``scienceqa/llava_test_CQM-A.json`` (LLaVA's conversation format: human turn
  ``<image>\nContext: ...\nQuestion\nA. ...\nB. ...``, gpt turn the letter); answers from
  ScienceQA's ``scienceqa/problems.json`` (``answer``: index into ``choices``), the split from
  ``pid_splits.json``; images ``scienceqa/images/test``.
- MME: ``MME/llava_mme.jsonl`` (``question_id`` = ``<subtask>/[images/]<image file>``); answers
  from MME's release ``MME/MME_Benchmark_release_version/<subtask>/`` (images in the same folder).

A reader returns question records in the evaluation contract (``question_id``, ``image``,
``text``, ``answer``) plus ``family`` (``gqa``, ``pope``, ``scienceqa``, ``mme``; the metric of
:mod:`study.evaluation.metrics` it is scored with) and what that metric needs (POPE's
``category``; ScienceQA's ``n_choices``; MME's ``subtask`` and ``image_id``; GQA's
``structural`` type). The ``text`` is the prompt LLaVA's scripts give the model, and ``image`` is
resolved to an absolute path in the benchmark's own image folder, so the evaluate stage's
``image_folder`` does not apply to these files.

A file is recognised by its name (:data:`LLAVA_QUESTION_FILES`); a folder given as an evaluation
path is read as LLaVA's evaluation root and every benchmark file found in it is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from study.evaluation.generate import read_questions

SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."
SCIENCEQA_PROMPT = "Answer with the option's letter from the given choices directly."  # model_vqa_science --single-pred-prompt
MME_GT_SUFFIX = " Please answer yes or no."
SCIENCEQA_LETTERS = "ABCDE"

# Where each benchmark's question file lies under LLaVA's evaluation root (eval.zip).
LLAVA_QUESTION_FILES = {
    "gqa": "gqa/llava_gqa_testdev_balanced.jsonl",
    "pope": "pope/llava_pope_test.jsonl",
    "scienceqa": "scienceqa/llava_test_CQM-A.json",
    "mme": "MME/llava_mme.jsonl",
}


class BenchmarkFormatError(ValueError):
    """A benchmark file that does not have the layout or content LLaVA's evaluation expects."""


def benchmark_of(path: str | Path) -> str | None:
    """The LLaVA benchmark a question file belongs to, from its name; None for other files."""
    name = Path(path).name
    if name.startswith("llava_gqa_") and name.endswith(".jsonl"):
        return "gqa"
    if name.startswith("llava_pope_") and name.endswith(".jsonl"):
        return "pope"
    if name.startswith("llava_") and name.endswith(".json") and "_CQM-A" in name:
        return "scienceqa"
    if name == "llava_mme.jsonl":
        return "mme"
    return None


def companion_paths(benchmark: str, question_file: str | Path) -> dict[str, Path]:
    """The annotation files and image folder a benchmark's question file needs, by LLaVA's layout
    (what ``check-config`` looks for; the readers use the same paths)."""
    q = Path(question_file)
    if benchmark == "gqa":
        tier = q.stem.removeprefix("llava_gqa_")
        return {"answers": q.parent / "data" / f"{tier}_questions.json", "images": q.parent / "data" / "images"}
    if benchmark == "pope":
        return {"labels": q.parent / "coco", "images": q.parent / "val2014"}
    if benchmark == "scienceqa":
        split = scienceqa_split(q)
        return {
            "problems": q.parent / "problems.json",
            "splits": q.parent / "pid_splits.json",
            "images": q.parent / "images" / split,
        }
    if benchmark == "mme":
        return {"answers": q.parent / "MME_Benchmark_release_version", "images": q.parent / "MME_Benchmark_release_version"}
    raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {sorted(LLAVA_QUESTION_FILES)}")


def scienceqa_split(question_file: str | Path) -> str:
    """ScienceQA's split of a LLaVA question file: ``llava_test_CQM-A.json`` -> ``test``."""
    return Path(question_file).stem.removeprefix("llava_").split("_")[0]


def llava_question_files(root: str | Path) -> list[Path]:
    """The benchmark files present under LLaVA's evaluation root ``root``."""
    root = Path(root)
    found = [root / rel for rel in LLAVA_QUESTION_FILES.values() if (root / rel).is_file()]
    if not found:
        raise FileNotFoundError(f"{root} holds none of LLaVA's evaluation files {sorted(LLAVA_QUESTION_FILES.values())}")
    return found


def read_benchmark(path: str | Path) -> list[dict]:
    """The question records of one of LLaVA's benchmark files, with their answers."""
    benchmark = benchmark_of(path)
    if benchmark is None:
        raise ValueError(f"{path} is not one of LLaVA's benchmark files ({sorted(LLAVA_QUESTION_FILES.values())})")
    return READERS[benchmark](Path(path).absolute())  # images become absolute paths


def read_gqa(path: Path) -> list[dict]:
    where = companion_paths("gqa", path)
    annotations = _load_json(
        where["answers"], "GQA's questions file (from the GQA release, in gqa/data as LLaVA's docs/Evaluation.md says)"
    )
    rows = []
    for row in read_questions(path):
        qid = str(row["question_id"])
        if qid not in annotations:
            raise BenchmarkFormatError(f"{path}: question {qid} is not in {where['answers']}")
        gold = annotations[qid]
        rows.append(
            {
                **row,
                "question_id": qid,
                "image": str(where["images"] / row["image"]),
                "answer": gold["answer"],
                "structural": gold.get("types", {}).get("structural"),
                "family": "gqa",
            }
        )
    return rows


def read_pope(path: Path) -> list[dict]:
    """Labels come from POPE's ``coco_pope_<category>.json`` (JSON lines with ``label``), matched
    to the questions of that category in order, as ``eval_pope.py`` matches them; the image names
    of each pair must agree (a check the original does not make)."""
    where = companion_paths("pope", path)
    rows = read_questions(path)
    by_category: dict[str, list[dict]] = {}
    for row in rows:
        if "category" not in row:
            raise BenchmarkFormatError(f"{path}: question {row['question_id']} has no 'category' (adversarial/popular/random)")
        by_category.setdefault(row["category"], []).append(row)
    out = []
    for category, questions in by_category.items():
        label_file = where["labels"] / f"coco_pope_{category}.json"
        if not label_file.is_file():
            raise FileNotFoundError(f"POPE label file not found: {label_file} (POPE's output/coco folder, in pope/coco)")
        labels = [json.loads(line) for line in label_file.read_text().splitlines() if line.strip()]
        if len(labels) < len(questions):
            raise BenchmarkFormatError(f"{label_file}: {len(labels)} labels for {len(questions)} {category} questions in {path}")
        for q, lab in zip(questions, labels):
            if "image" in lab and lab["image"] != q["image"]:
                raise BenchmarkFormatError(
                    f"{label_file} does not line up with {path}: question {q['question_id']} shows {q['image']}, its label {lab['image']}"
                )
            if lab.get("label") not in ("yes", "no"):
                raise BenchmarkFormatError(f"{label_file}: label must be 'yes' or 'no', got {lab.get('label')!r}")
            out.append({**q, "image": str(where["images"] / q["image"]), "answer": lab["label"], "family": "pope"})
    return out


def read_scienceqa(path: Path) -> list[dict]:
    """The prompt is the human turn without ``<image>`` plus LLaVA's ``--single-pred-prompt``
    instruction. The answer is the letter of ``problems.json``'s ``answer`` index and the number
    of choices bounds the letters a reply may give; without ``problems.json`` both are read from
    the file itself (the gpt turn's letter and the "A. ..." option lines)."""
    where = companion_paths("scienceqa", path)
    try:
        samples = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BenchmarkFormatError(f"{path}: not JSON: {err}") from err
    problems = _load_json(where["problems"], "ScienceQA's problems.json") if where["problems"].is_file() else None
    split = None
    if where["splits"].is_file():
        split = set(_load_json(where["splits"], "ScienceQA's pid_splits.json")[scienceqa_split(path)])
    rows = []
    for sample in samples:
        pid = str(sample.get("id"))
        turns = sample.get("conversations") or []
        if len(turns) < 2 or turns[0].get("from") != "human":
            raise BenchmarkFormatError(f"{path}: sample {pid} needs a human turn and a gpt turn")
        if split is not None and pid not in split:
            raise BenchmarkFormatError(f"{path}: problem {pid} is not in the {scienceqa_split(path)!r} split of {where['splits']}")
        text = turns[0]["value"].replace("<image>", "").strip()
        if problems is not None:
            if pid not in problems:
                raise BenchmarkFormatError(f"{path}: problem {pid} is not in {where['problems']}")
            answer, n_choices = SCIENCEQA_LETTERS[problems[pid]["answer"]], len(problems[pid]["choices"])
        else:
            answer = turns[1]["value"].strip()
            n_choices = sum(line[:3] in {f"{c}. " for c in SCIENCEQA_LETTERS} for line in text.splitlines())
        row = {"question_id": pid, "text": f"{text}\n{SCIENCEQA_PROMPT}", "answer": answer, "n_choices": n_choices, "family": "scienceqa"}
        if sample.get("image"):
            row["image"] = str(where["images"] / sample["image"])
        rows.append(row)
    return rows


def read_mme(path: Path) -> list[dict]:
    """Answers from MME's release, found as LLaVA's ``convert_answer_to_mme.py`` finds them: the
    subtask is the first part of ``question_id``; its answers are in ``<image stem>.txt`` (lines
    ``question<TAB>Yes|No``) in ``questions_answers_YN/`` when the subtask has an ``images/``
    folder, else beside the images; the question there is LLaVA's text without the short-answer
    prompt plus " Please answer yes or no." (a few have two spaces before "Please")."""
    where = companion_paths("mme", path)
    root = where["answers"]
    if not root.is_dir():
        raise FileNotFoundError(f"MME's release folder not found: {root} (MME_Benchmark_release_version, beside llava_mme.jsonl)")
    cache: dict[Path, dict[str, str]] = {}
    rows = []
    for row in read_questions(path):
        qid = str(row["question_id"])
        subtask = qid.split("/")[0]
        folder = root / subtask
        gt_file = (folder / "questions_answers_YN" if (folder / "images").is_dir() else folder) / f"{Path(qid).stem}.txt"
        if gt_file not in cache:
            if not gt_file.is_file():
                raise FileNotFoundError(f"{path}: MME answers for {qid} not found: {gt_file}")
            cache[gt_file] = _mme_answers(gt_file)
        question = row["text"].replace(SHORT_ANSWER_PROMPT, "").strip()
        if MME_GT_SUFFIX.strip() not in question:
            question += MME_GT_SUFFIX
        gold = cache[gt_file].get(question) or cache[gt_file].get(question.replace(MME_GT_SUFFIX, " " + MME_GT_SUFFIX))
        if gold is None:
            raise BenchmarkFormatError(f"{path}: no answer for {question!r} in {gt_file}")
        rows.append(
            {
                **row,
                "question_id": qid,
                "image": str(root / row["image"]),
                "answer": gold.strip(),
                "subtask": subtask,
                "image_id": qid,
                "family": "mme",
            }
        )
    return rows


READERS: dict[str, Callable[[Path], list[dict]]] = {"gqa": read_gqa, "pope": read_pope, "scienceqa": read_scienceqa, "mme": read_mme}


def _mme_answers(gt_file: Path) -> dict[str, str]:
    answers = {}
    for line_no, line in enumerate(gt_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.strip().split("\t")
        if len(fields) != 2:
            raise BenchmarkFormatError(f"{gt_file}:{line_no}: expected 'question<TAB>answer', got {line!r}")
        answers[fields[0]] = fields[1]
    return answers


def _load_json(path: Path, what: str):
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BenchmarkFormatError(f"{path}: not JSON: {err}") from err
