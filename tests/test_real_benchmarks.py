"""LLaVA's own evaluation files (GQA, POPE, ScienceQA, MME): reading them with their answers and
scoring them with the benchmarks' definitions, on small hand-written files laid out as LLaVA's
``playground/data/eval``, against hand-computed numbers."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from study.evaluation.benchmark import evaluate, load_benchmarks
from study.evaluation.llava_formats import BenchmarkFormatError, benchmark_of, read_benchmark
from study.evaluation.metrics import gqa_answer, mme_yes_no, scienceqa_letter, score_family, yes_no

SHORT = "\nAnswer the question using a single word or phrase."


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 24), (90, 120, 200)).save(path)


@pytest.fixture
def eval_root(tmp_path):
    return write_llava_eval_root(tmp_path / "eval")


def write_llava_eval_root(root):
    """A miniature of LLaVA's evaluation root with the four benchmarks; returns ``root``."""
    # GQA: LLaVA's question file + GQA's testdev_balanced_questions.json (answer, types.structural)
    gqa = [("201307251", "n161313.jpg", "Is it overcast?", "yes", "verify"), ("201640614", "n235859.jpg", "Who is wearing the dress?", "woman", "query"),
           ("20136592", "n446242.jpg", "What color are the pants?", "black", "query"), ("20602803", "n168412.jpg", "Is the ground blue or brown?", "brown", "choose")]  # fmt: skip
    write_jsonl(
        root / "gqa/llava_gqa_testdev_balanced.jsonl",
        [{"question_id": q, "image": i, "text": t + SHORT, "category": "default"} for q, i, t, _, _ in gqa],
    )
    write_json(
        root / "gqa/data/testdev_balanced_questions.json",
        {q: {"answer": a, "types": {"structural": s}, "isBalanced": True} for q, _, _, a, s in gqa},
    )
    for _, i, *_ in gqa:
        image(root / "gqa/data/images" / i)
    # POPE: LLaVA's question file (unique ids, category) + POPE's label files (ids restart per file)
    pope = {"adversarial": [("A.jpg", "dog", "yes"), ("A.jpg", "cat", "yes"), ("B.jpg", "car", "no"), ("B.jpg", "bus", "no")],
            "random": [("C.jpg", "cup", "yes"), ("C.jpg", "fork", "no"), ("D.jpg", "bed", "yes")]}  # fmt: skip
    rows, qid = [], 0
    for category, items in pope.items():
        labels = []
        for n, (img, obj, label) in enumerate(items, 1):
            qid += 1
            rows.append({"question_id": qid, "image": img, "text": f"Is there a {obj} in the image?" + SHORT, "category": category})
            labels.append({"question_id": n, "image": img, "text": f"Is there a {obj} in the image?", "label": label})
            image(root / "pope/val2014" / img)
        write_jsonl(root / f"pope/coco/coco_pope_{category}.json", labels)
    write_jsonl(root / "pope/llava_pope_test.jsonl", rows)
    # ScienceQA: LLaVA's conversation file + ScienceQA's problems.json and pid_splits.json
    sqa = [
        {"id": "1", "image": "1/image.png", "conversations": [{"from": "human", "value": "<image>\nContext: A map.\nWhich state is highlighted?\nA. Ohio\nB. Utah"}, {"from": "gpt", "value": "B"}]},
        {"id": "2", "image": "2/image.png", "conversations": [{"from": "human", "value": "<image>\nWhich is a mammal?\nA. whale\nB. shark\nC. trout"}, {"from": "gpt", "value": "A"}]},
        {"id": "3", "conversations": [{"from": "human", "value": "Which word is a noun?\nA. run\nB. blue\nC. table"}, {"from": "gpt", "value": "C"}]},
        {"id": "4", "conversations": [{"from": "human", "value": "Context: N/A\nPick the largest.\nA. 1\nB. 2\nC. 3\nD. 4"}, {"from": "gpt", "value": "D"}]},
    ]  # fmt: skip
    write_json(root / "scienceqa/llava_test_CQM-A.json", sqa)
    write_json(root / "scienceqa/problems.json", {"1": {"answer": 1, "choices": ["Ohio", "Utah"]}, "2": {"answer": 0, "choices": ["whale", "shark", "trout"]},
                                                  "3": {"answer": 2, "choices": ["run", "blue", "table"]}, "4": {"answer": 3, "choices": ["1", "2", "3", "4"]}})  # fmt: skip
    write_json(root / "scienceqa/pid_splits.json", {"test": ["1", "2", "3", "4"], "val": ["9"]})
    for pid in ("1", "2"):
        image(root / f"scienceqa/images/test/{pid}/image.png")
    # MME: LLaVA's question file + MME's release (flat subtask folders, and images/ + questions_answers_YN/)
    mme_root = root / "MME/MME_Benchmark_release_version"
    mme = [  # (question_id, question, answer, gt line's spacing before "Please")
        ("existence/000001.jpg", "Is there a dog in this image?", "Yes", " "), ("existence/000001.jpg", "Is there a cat in this image?", "No", " "),
        ("existence/000002.jpg", "Is there a car in this image?", "Yes", " "), ("existence/000002.jpg", "Is there a bus in this image?", "No", " "),
        ("artwork/images/42.jpg", "Is this artwork created by Goya?", "Yes", " "), ("artwork/images/42.jpg", "Is this artwork titled sorrow?", "No", "  "),
        ("code_reasoning/0001.png", "Is the output of the code '7'?", "Yes", " "), ("code_reasoning/0001.png", "Is the output of the code '1'?", "No", " "),
    ]  # fmt: skip
    write_jsonl(
        root / "MME/llava_mme.jsonl", [{"question_id": q, "image": q, "text": t + SHORT, "category": q.split("/")[0]} for q, t, _, _ in mme]
    )
    gt: dict = {}
    for q, t, a, space in mme:
        subtask, name = q.split("/")[0], q.rsplit("/", 1)[1]
        folder = mme_root / subtask / ("questions_answers_YN" if "/images/" in q else "")
        gt.setdefault(folder / (name.rsplit(".", 1)[0] + ".txt"), []).append(f"{t}{space}Please answer yes or no.\t{a}")
        image(mme_root / q)
    for path, lines in gt.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    return root


def test_benchmark_files_are_recognised_by_name():
    assert benchmark_of("x/llava_gqa_testdev_balanced.jsonl") == "gqa"
    assert benchmark_of("pope/llava_pope_test.jsonl") == "pope"
    assert benchmark_of("scienceqa/llava_test_CQM-A.json") == "scienceqa"
    assert benchmark_of("MME/llava_mme.jsonl") == "mme"
    assert benchmark_of("results/data/eval/yesno.jsonl") is None


def test_gqa_reads_answers_from_gqa_release(eval_root):
    questions = read_benchmark(eval_root / "gqa/llava_gqa_testdev_balanced.jsonl")
    assert [q["answer"] for q in questions] == ["yes", "woman", "black", "brown"]
    assert questions[0]["text"] == "Is it overcast?" + SHORT  # LLaVA's prompt, as given to the model
    assert questions[0]["image"] == str(eval_root / "gqa/data/images/n161313.jpg")
    assert {q["family"] for q in questions} == {"gqa"}


def test_gqa_normalisation_and_exact_match(eval_root):
    questions = read_benchmark(eval_root / "gqa/llava_gqa_testdev_balanced.jsonl")
    assert gqa_answer("Yes.") == "yes" and gqa_answer("The Table..") == "the table"
    # yes ok (verify) | "the woman" != "woman" (query) | ok (query) | ok (choose)
    result = score_family("gqa", ["Yes.", "The woman", "Black", "brown."], [q["answer"] for q in questions], questions)
    assert result == {"score": 0.75, "accuracy": 0.75, "n": 4, "open": 0.5, "binary": 1.0}


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Yes", "yes"),
        ("No, there is no cat.", "no"),
        ("NO", "yes"),
        ("Not at all", "yes"),
        ("There is not.", "no"),
        ("no!", "yes"),
        ("Yes. No.", "yes"),
    ],
)
def test_pope_reads_replies_as_eval_pope_does(reply, expected):
    assert yes_no(reply) == expected


def test_pope_labels_per_category(eval_root):
    questions = read_benchmark(eval_root / "pope/llava_pope_test.jsonl")
    assert [(q["category"], q["answer"]) for q in questions] == [
        ("adversarial", "yes"), ("adversarial", "yes"), ("adversarial", "no"), ("adversarial", "no"),
        ("random", "yes"), ("random", "no"), ("random", "yes"),
    ]  # fmt: skip
    assert questions[4]["image"] == str(eval_root / "pope/val2014/C.jpg")


def test_pope_metrics_per_category(eval_root):
    questions = read_benchmark(eval_root / "pope/llava_pope_test.jsonl")
    predictions = ["Yes", "NO", "no", "Not really", "No, there is no cup.", "no", "Yes."]
    result = score_family("pope", predictions, [q["answer"] for q in questions], questions)
    # adversarial: read yes, yes ("NO"), no, yes ("Not") vs yes yes no no -> TP=2 FP=1 TN=1 FN=0
    assert result["adversarial_accuracy"] == pytest.approx(3 / 4)
    assert result["adversarial_precision"] == pytest.approx(2 / 3)
    assert result["adversarial_recall"] == pytest.approx(1.0)
    assert result["adversarial_f1"] == pytest.approx(0.8)
    assert result["adversarial_yes_ratio"] == pytest.approx(3 / 4)
    assert result["adversarial_n"] == 4
    # random: read no, no, yes vs yes no yes -> TP=1 FP=0 TN=1 FN=1
    assert result["random_accuracy"] == pytest.approx(2 / 3)
    assert result["random_precision"] == pytest.approx(1.0)
    assert result["random_recall"] == pytest.approx(0.5)
    assert result["random_f1"] == pytest.approx(2 / 3)
    assert result["random_yes_ratio"] == pytest.approx(1 / 3)
    # score: F1 averaged over the categories; accuracy and yes-ratio over all 7 questions
    assert result["score"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert result["accuracy"] == pytest.approx(5 / 7)
    assert result["yes_ratio"] == pytest.approx(4 / 7)


def test_pope_labels_that_do_not_line_up_are_an_error(eval_root):
    labels = eval_root / "pope/coco/coco_pope_random.json"
    rows = [json.loads(line) for line in labels.read_text().splitlines()]
    rows[0]["image"] = "Z.jpg"
    write_jsonl(labels, rows)
    with pytest.raises(BenchmarkFormatError, match="does not line up"):
        read_benchmark(eval_root / "pope/llava_pope_test.jsonl")


def test_pope_missing_label_file_names_it(eval_root):
    (eval_root / "pope/coco/coco_pope_random.json").unlink()
    with pytest.raises(FileNotFoundError, match="coco_pope_random.json"):
        read_benchmark(eval_root / "pope/llava_pope_test.jsonl")


@pytest.mark.parametrize(
    "reply, n_choices, expected",
    [
        ("B", 2, "B"),
        ("A. whale", 3, "A"),
        ("The answer is C.", 3, "C"),
        ("Hence The answer is B, because", 3, "B"),  # "The answer is ([A-Z])." -- any character after the letter
        ("the answer is B.", 3, None),  # case-sensitive
        ("The answer is B", 3, None),  # ... but one must follow
        ("D", 3, None),  # beyond the choices
        ("(A)", 3, None),
        ("a", 3, None),
        ("The answer is A. The answer is B.", 3, None),  # two matches: no answer
    ],
)
def test_scienceqa_letter_parsing(reply, n_choices, expected):
    assert scienceqa_letter(reply, n_choices) == expected


def test_scienceqa_reads_problems_and_scores(eval_root):
    questions = read_benchmark(eval_root / "scienceqa/llava_test_CQM-A.json")
    assert [(q["question_id"], q["answer"], q["n_choices"]) for q in questions] == [
        ("1", "B", 2),
        ("2", "A", 3),
        ("3", "C", 3),
        ("4", "D", 4),
    ]
    assert questions[0]["text"] == (
        "Context: A map.\nWhich state is highlighted?\nA. Ohio\nB. Utah\nAnswer with the option's letter from the given choices directly."
    )
    assert questions[0]["image"] == str(eval_root / "scienceqa/images/test/1/image.png")
    assert "image" not in questions[2]
    # 1 (image) right, 2 (image) right, 3 "D" is not among 3 choices, 4 unparsed
    result = score_family("scienceqa", ["B", "The answer is A.", "D", "(D)"], [q["answer"] for q in questions], questions)
    assert result == {"score": 0.5, "accuracy": 0.5, "img_accuracy": 1.0, "img_n": 2, "invalid": 2, "n": 4}


def test_scienceqa_without_problems_json_reads_the_file(eval_root):
    (eval_root / "scienceqa/problems.json").unlink()
    questions = read_benchmark(eval_root / "scienceqa/llava_test_CQM-A.json")
    assert [(q["answer"], q["n_choices"]) for q in questions] == [("B", 2), ("A", 3), ("C", 3), ("D", 4)]


def test_scienceqa_problem_outside_the_split_is_an_error(eval_root):
    write_json(eval_root / "scienceqa/pid_splits.json", {"test": ["1", "2", "3"]})
    with pytest.raises(BenchmarkFormatError, match="problem 4 is not in the 'test' split"):
        read_benchmark(eval_root / "scienceqa/llava_test_CQM-A.json")


@pytest.mark.parametrize(
    "reply, expected",
    [("Yes", "yes"), ("no", "no"), ("No.", "no"), ("yes, there is", "yes"), ("Maybe", "other"), ("Not", "no"), ("", "other")],
)
def test_mme_reads_replies_as_its_eval_tool_does(reply, expected):
    assert mme_yes_no(reply) == expected


def test_mme_reads_answers_from_the_release(eval_root):
    questions = read_benchmark(eval_root / "MME/llava_mme.jsonl")
    assert [q["answer"] for q in questions] == ["Yes", "No"] * 4
    assert [q["subtask"] for q in questions] == ["existence"] * 4 + ["artwork"] * 2 + ["code_reasoning"] * 2
    assert questions[4]["image"] == str(eval_root / "MME/MME_Benchmark_release_version/artwork/images/42.jpg")


def test_mme_scores(eval_root):
    questions = read_benchmark(eval_root / "MME/llava_mme.jsonl")
    predictions = [
        "Yes", "No",  # existence image 1: both right
        "Yes", "yes, there is",  # existence image 2: one right -> acc 3/4, acc+ 1/2, score 125
        "No", "no",  # artwork: one right -> acc 1/2, acc+ 0, score 50
        "Yes.", "Maybe",  # code_reasoning: "Maybe" is "other" -> acc 1/2, acc+ 0, score 50
    ]  # fmt: skip
    result = score_family("mme", predictions, [q["answer"] for q in questions], questions)
    assert result["existence_acc"] == pytest.approx(0.75)
    assert result["existence_acc_plus"] == pytest.approx(0.5)
    assert result["existence_score"] == pytest.approx(125.0)
    assert result["artwork_score"] == pytest.approx(50.0)
    assert result["code_reasoning_score"] == pytest.approx(50.0)
    assert result["perception"] == pytest.approx(175.0)
    assert result["cognition"] == pytest.approx(50.0)
    assert result["score"] == pytest.approx(225 / 600)
    assert result["accuracy"] == pytest.approx(5 / 8)


def test_mme_question_without_an_answer_is_an_error(eval_root):
    path = eval_root / "MME/llava_mme.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["text"] = "Is there a unicorn in this image?" + SHORT
    write_jsonl(path, rows)
    with pytest.raises(BenchmarkFormatError, match="unicorn"):
        read_benchmark(path)


def test_benchmark_families_need_their_question_records():
    with pytest.raises(ValueError, match="question records"):
        score_family("mme", ["yes"], ["Yes"])


def test_an_evaluation_root_loads_every_benchmark(eval_root):
    benchmarks = load_benchmarks([eval_root])
    assert {f: len(qs) for f, qs in benchmarks.items()} == {"gqa": 4, "pope": 7, "scienceqa": 4, "mme": 8}
    limited = load_benchmarks([eval_root / "pope/llava_pope_test.jsonl", eval_root / "gqa/llava_gqa_testdev_balanced.jsonl"], limit=2)
    assert {f: len(qs) for f, qs in limited.items()} == {"pope": 2, "gqa": 2}


def test_an_empty_evaluation_root_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="none of LLaVA's evaluation files"):
        load_benchmarks([tmp_path])


def test_evaluate_runs_on_llava_files(tiny_model, tiny_processor, eval_root, tmp_path):
    benchmarks = load_benchmarks([eval_root])
    # image_folder does not apply: LLaVA benchmark images are resolved in their own folders
    result = evaluate(tiny_model, tiny_processor, benchmarks, tmp_path / "unused", batch_size=4, max_new_tokens=2, progress=False)
    assert set(result["scores"]) == {"gqa", "pope", "scienceqa", "mme"}
    assert all(0.0 <= s <= 1.0 for s in result["scores"].values())
    assert {"adversarial_f1", "random_f1"} <= set(result["details"]["pope"])
    assert {"perception", "cognition", "existence_acc_plus"} <= set(result["details"]["mme"])
    assert len(result["predictions"]) == 4 + 7 + 4 + 8
