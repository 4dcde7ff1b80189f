"""Evaluation of a model over question files, the metrics record, efficiency and the ablation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from study.evaluation.ablation import layer_skip_ablation
from study.evaluation.benchmark import evaluate, load_benchmarks, metrics_record
from study.evaluation.efficiency import TIMING_KEYS, measure_efficiency, parameter_counts, split_timings
from study.evaluation.generate import encode_prompts, generate_answers
from study.evaluation.records import write_run
from study.models.layers import decoder_layers
from study.records import teacher_identity


@pytest.fixture
def question_files(tmp_path):
    Image.new("RGB", (36, 36), (128, 128, 128)).save(tmp_path / "a.png")
    rows = {
        "yesno": [
            {"question_id": f"y{i}", "image": "a.png", "text": "Is there a red circle in the image ?", "answer": "yes" if i % 2 else "no"}
            for i in range(4)
        ],
        "text": [{"question_id": "t0", "text": "What colour is the object ?", "answer": "red", "category": "text"}],
    }
    for name, qs in rows.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs))
    return tmp_path


def test_load_benchmarks_groups_by_category_else_file_stem(question_files):
    benchmarks = load_benchmarks(sorted(question_files.glob("*.jsonl")), limit=3)
    assert sorted(benchmarks) == ["text", "yesno"]
    assert len(benchmarks["yesno"]) == 3


def test_read_questions_names_the_bad_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"question_id": 1, "text": "x"}\n{"text": "no id"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_benchmarks([tmp_path / "bad.jsonl"])


def test_batched_generation_equals_one_by_one(tiny_model, tiny_processor, question_files):
    questions = load_benchmarks([question_files / "yesno.jsonl"])["yesno"] + load_benchmarks([question_files / "text.jsonl"])["text"]
    batched = generate_answers(tiny_model, tiny_processor, questions, question_files, batch_size=5, max_new_tokens=4, progress=False)
    single = [generate_answers(tiny_model, tiny_processor, [q], question_files, max_new_tokens=4, progress=False)[0] for q in questions]
    assert batched == single


def test_evaluate_and_record(tiny_model, tiny_processor, question_files, tmp_path):
    benchmarks = load_benchmarks(sorted(question_files.glob("*.jsonl")))
    result = evaluate(tiny_model, tiny_processor, benchmarks, question_files, max_new_tokens=3, progress=False)
    assert set(result["scores"]) == {"yesno", "text"}
    assert set(result["details"]["yesno"]) >= {"precision", "recall", "f1", "yes_ratio"}
    identity = {**teacher_identity(), "run": "t", "model": "m"}
    reference = {"yesno": 1.0, "text": 0.0}  # families with a zero reference are left out of AVG-%
    record = metrics_record(identity, result, {"llm_params": 1}, reference)
    assert record["relative_score"] == pytest.approx(result["scores"]["yesno"])
    with pytest.raises(ValueError, match="seed"):
        metrics_record({k: v for k, v in identity.items() if k != "seed"}, result, {})
    timings = {"prefill_ms": 3.0, "decode_tokens_per_s": 100.0, "peak_mem_mb": 50.0}
    write_run(
        record, result["predictions"], tmp_path / "m" / "run.json", tmp_path / "p" / "run.jsonl", timings, tmp_path / "t" / "run.json"
    )
    assert json.loads((tmp_path / "m" / "run.json").read_text())["run"] == "t"
    assert len((tmp_path / "p" / "run.jsonl").read_text().splitlines()) == 5
    assert json.loads((tmp_path / "t" / "run.json").read_text()) == {"run": "t", "model": "m", **timings}
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["run.json"]  # no per-run CSV beside it


def test_efficiency_figures(tiny_model, tiny_processor, question_files):
    q = {"question_id": "x", "image": "a.png", "text": "Is there a red circle ?"}
    eff = measure_efficiency(tiny_model, dict(encode_prompts([q], tiny_processor, question_files)), decode_tokens=4, repeats=1)
    counts = parameter_counts(tiny_model)
    assert eff["total_params"] == sum(p.numel() for p in tiny_model.parameters())
    assert counts["llm_params"] < counts["total_params"]
    assert eff["flops_per_sample"] > 2 * sum(p.numel() for p in decoder_layers(tiny_model).parameters())
    assert eff["prefill_ms"] > 0 and eff["decode_tokens_per_s"] > 0 and eff["peak_mem_mb"] > 0
    counts, timings = split_timings(eff)
    assert set(timings) == set(TIMING_KEYS) and set(counts) == {"llm_params", "total_params", "flops_per_sample"}


def test_layer_skip_ablation_leaves_the_model_untouched(tiny_model, tiny_processor, question_files):
    benchmarks = load_benchmarks([question_files / "yesno.jsonl"])
    batch = dict(encode_prompts(benchmarks["yesno"][:2], tiny_processor, question_files))
    out = layer_skip_ablation(tiny_model, tiny_processor, [batch], benchmarks, question_files, 0.5, max_new_tokens=2, progress=False)
    assert len(out["skipped_layers"]) == 2 and len(out["block_cosine"]) == 4
    assert len(decoder_layers(tiny_model)) == 4
    with pytest.raises(ValueError, match="fraction"):
        layer_skip_ablation(tiny_model, tiny_processor, [batch], benchmarks, question_files, 1.0)


def test_evaluation_jobs_name_each_folder_after_its_run(tmp_path):
    from study.config.sections import EvaluateConfig
    from study.evaluation.run import evaluation_jobs
    from study.records import PRUNING_FILE

    root = tmp_path / "seeds"
    for folder, run in (("b", "width-taylor-0.3-s2"), ("a", "width-taylor-0.3-s1")):
        (root / folder).mkdir(parents=True)
        (root / folder / "config.json").write_text("{}")
        (root / folder / PRUNING_FILE).write_text(json.dumps({"identity": {"run": run}}))
    (root / "not-a-model").mkdir()
    cfg = EvaluateConfig(
        model_dir="main",
        metrics_out="m.json",
        models_root=str(root),
        metrics_dir=str(tmp_path / "metrics"),
        predictions_dir=str(tmp_path / "predictions"),
    )
    assert evaluation_jobs(cfg) == [
        (Path("main"), Path("m.json"), None),
        (root / "a", tmp_path / "metrics/width-taylor-0.3-s1.json", tmp_path / "predictions/width-taylor-0.3-s1.jsonl"),
        (root / "b", tmp_path / "metrics/width-taylor-0.3-s2.json", tmp_path / "predictions/width-taylor-0.3-s2.jsonl"),
    ]
    assert (tmp_path / "metrics").is_dir() and (tmp_path / "predictions").is_dir()
