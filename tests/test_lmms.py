"""The lmms-eval backend: lmms-eval, given the project's question files as local tasks, gives the
teacher and a pruned model of each paradigm the same answers and the same scores as the project's
own evaluator; a multiple-choice (loglikelihood) task runs on every LLaVA folder and chooses the
option the model's own logits prefer; a failure lmms-eval only logs is an error.

The settings' checks run everywhere; the rest needs the ``lmms`` extra (``make test-lmms``)."""

from __future__ import annotations

import importlib.util
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import pytest
import torch

from study.config.sections import EvaluateConfig
from study.config.vocabulary import LMMS_EVAL

REPO = Path(__file__).resolve().parents[1]
TEACHER = REPO / "results/teacher"
METHODS = {"layer": "block_influence", "width": "taylor", "hybrid": "block_influence+taylor"}
needs_lmms = pytest.mark.skipif(
    importlib.util.find_spec("lmms_eval") is None, reason="the lmms extra is not installed: pip install -e '.[lmms]' (make test-lmms)"
)


# ---------------------------------------------------------------------------------------------- settings


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match=r"backend must be one of \('study', 'lmms-eval'\), got 'vllm'"):
        EvaluateConfig(backend="vllm")


def test_the_lmms_backend_without_the_extra_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr("study.config.sections.importlib.util.find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"pip install -e '\.\[lmms\]'"):
        EvaluateConfig(backend=LMMS_EVAL, ablation_fraction=None)

    from study.evaluation import lmms

    def absent(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(lmms, "version", absent)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[lmms\]'"):
        lmms.require_lmms()


def test_lmms_tasks_name_a_known_task_or_their_metric(monkeypatch):
    EvaluateConfig(lmms_tasks=["gqa", "pope", "mme", "seedbench:acc"])
    with pytest.raises(ValueError, match=r"name the metric .* as 'seedbench:<metric>'"):
        EvaluateConfig(lmms_tasks=["seedbench"])
    monkeypatch.setattr("study.config.sections.importlib.util.find_spec", lambda name: object())
    with pytest.raises(ValueError, match="set ablation_fraction null with backend lmms-eval"):
        EvaluateConfig(backend=LMMS_EVAL)


# ---------------------------------------------------------------------------------------------- lmms-eval


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic questions the committed teacher knows, and the teacher pruned by 30% in each paradigm."""
    from study.config.sections import DataConfig, PruneConfig
    from study.config.vocabulary import Method
    from study.data.synthetic import generate_dataset
    from study.evaluation.benchmark import load_benchmarks
    from study.pruning.run import prune_checkpoint

    root = tmp_path_factory.mktemp("lmms")
    generate_dataset(DataConfig(n_train=64, n_eval_per_family=6, seed=0), root / "data")
    folders = {"teacher": TEACHER}
    for paradigm, metric in METHODS.items():
        config = PruneConfig(model_dir=str(TEACHER), calibration=str(root / "data/train.json"), calibration_samples=16)
        prune_checkpoint(root / paradigm, Method(paradigm, metric), 0.3, config)
        folders[paradigm] = root / paradigm
    benchmarks = load_benchmarks(sorted((root / "data/eval").glob("*.jsonl")))
    return root, folders, benchmarks


@needs_lmms
def test_lmms_eval_scores_equal_the_projects_own_on_the_same_questions(world):
    from study.evaluation.run import evaluate_checkpoint

    root, folders, benchmarks = world
    records = {}
    for backend in ("study", LMMS_EVAL):
        reference = None
        for name, folder in folders.items():
            out = root / backend / name
            records[backend, name] = evaluate_checkpoint(
                folder, benchmarks, root / "data/images", out.with_suffix(".json"), out.with_suffix(".jsonl"), reference, backend=backend
            )
            reference = reference or records[backend, name]["scores"]
    for name in folders:
        own, lmms = records["study", name], records[LMMS_EVAL, name]
        assert lmms["evaluator"].startswith("lmms-eval 0.7.3") and "evaluator" not in own
        assert lmms["scores"] == own["scores"], name
        assert (lmms["mean_score"], lmms["relative_score"]) == (own["mean_score"], own["relative_score"]), name
        assert lmms["efficiency"] == own["efficiency"]
        answers = {}
        for backend in ("study", LMMS_EVAL):
            rows = (root / backend / name).with_suffix(".jsonl").read_text().splitlines()
            answers[backend] = sorted(rows)
        assert answers["study"] == answers[LMMS_EVAL], f"{name}: lmms-eval's answers differ from the project's"
        assert len(answers["study"]) == sum(len(q) for q in benchmarks.values())
    assert min(records[LMMS_EVAL, p]["mean_score"] for p in METHODS) < records[LMMS_EVAL, "teacher"]["mean_score"]


MC_TASK = """\
task: letters
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_visual: !function letters_functions.doc_to_visual
doc_to_text: !function letters_functions.doc_to_text
doc_to_choice: [A, B, C, D]
doc_to_target: answer
metric_list:
  - metric: acc
metadata:
  version: 0
"""


@needs_lmms
def test_a_multiple_choice_task_chooses_the_option_the_models_logits_prefer(world, tmp_path):
    from study.evaluation.generate import encode_prompts
    from study.evaluation.lmms import evaluate_with_lmms
    from study.models.device import move_to_model
    from study.models.io import load_model

    root, folders, benchmarks = world
    (tmp_path / "letters.yaml").write_text(MC_TASK.format(data=root / "data/eval/mc.jsonl"))
    (tmp_path / "letters_functions.py").write_text(
        "from study.evaluation.lmms_tasks import task_functions\n\n"
        f"doc_to_visual, doc_to_text, _, _ = task_functions({str(root / 'data/images')!r})\n"
    )
    for name, folder in folders.items():
        model, processor = load_model(folder, dtype="float32")
        letters = [processor.tokenizer.convert_tokens_to_ids(letter) for letter in "ABCD"]
        expected = {}
        for q in benchmarks["mc"]:
            with torch.no_grad():
                logits = model(**move_to_model(encode_prompts([q], processor, root / "data/images"), model)).logits[0, -1]
            expected[q["question_id"]] = "ABCD"[int(logits[letters].argmax())]
        result = evaluate_with_lmms(model, processor, ["letters:acc"], include_path=tmp_path)
        chosen = {p["question_id"]: p["prediction"] for p in result["predictions"]}
        assert chosen == expected, name
        hits = [expected[q["question_id"]] == q["answer"] for q in benchmarks["mc"]]
        assert result["scores"] == {"letters": sum(hits) / len(hits)}


@needs_lmms
def test_a_failure_lmms_eval_only_logs_is_an_error(world, monkeypatch):
    from study.evaluation.lmms import LmmsEvalError, evaluate_with_lmms
    from study.models.io import load_model

    root, folders, benchmarks = world
    model, processor = load_model(folders["width"], dtype="float32")

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model, "generate", broken)  # lmms-eval's chat class logs it and answers ""
    with pytest.raises(LmmsEvalError, match="out of memory"):
        evaluate_with_lmms(model, processor, [], {"open": benchmarks["open"]}, root / "data/images")
    with pytest.raises(ValueError, match=r"has no task \['no_such_task'\]"):
        evaluate_with_lmms(model, processor, ["no_such_task:acc"])
