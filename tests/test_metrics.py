"""Answer normalisation and per-family scores, against hand-computed numbers."""

from __future__ import annotations

import pytest

from study.evaluation.metrics import (
    exact_match,
    multiple_choice,
    normalize_answer,
    option_letter,
    pope,
    relative_score,
    score_family,
    yes_no,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Top Left.", "top left"),
        ("3", "three"),
        ("  A  red\tcircle! ", "red circle"),
        ("an orange ring", "orange ring"),
        ("0", "zero"),
        ("20", "twenty"),
        ("21", "21"),
        ("It's red.", "it's red"),
        ("bottom-right", "bottom right"),
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match():
    predictions = ["Red.", "a blue circle", "3", "four", "top"]
    answers = ["red", "blue circle", "three", "five", "top left"]
    # hits: yes, yes, yes, no, no
    assert exact_match(predictions, answers) == {"score": 0.6, "accuracy": 0.6, "n": 5}


def test_exact_match_empty():
    assert exact_match([], []) == {"score": 0.0, "accuracy": 0.0, "n": 0}


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("No, there is not.", "no"),
        ("Yes.", "yes"),
        ("There is not a cat", "no"),
        ("yes", "yes"),
        ("NO", "yes"),  # eval_pope matches the words No / no / not exactly, case included
        ("Not at all", "yes"),
        ("Yes. But it is not red.", "yes"),  # only the first sentence counts
        ("Nothing like that", "yes"),  # word match, not substring
        ("I don't know", "yes"),
        ("", "yes"),
    ],
)
def test_pope_reading_of_a_reply(reply, expected):
    assert yes_no(reply) == expected


def test_pope_on_a_hand_computed_confusion_matrix():
    answers = ["yes"] * 5 + ["no"] * 5
    predictions = [
        # gold yes: 4 read as yes (TP), 1 as no (FN)
        "Yes.",
        "Yes, there is.",
        "yes",
        "There is a cat.",
        "There is not a cat",
        # gold no: 2 read as yes (FP), 3 as no (TN)
        "Yes.",
        "I think so",
        "No, there is not.",
        "no",
        "Not at all, no.",
    ]
    # TP=4 FN=1 FP=2 TN=3
    result = pope(predictions, answers)
    assert result["n"] == 10
    assert result["accuracy"] == pytest.approx(7 / 10)  # (TP + TN) / n
    assert result["score"] == result["accuracy"]
    assert result["precision"] == pytest.approx(4 / 6)  # TP / (TP + FP)
    assert result["recall"] == pytest.approx(4 / 5)  # TP / (TP + FN)
    assert result["f1"] == pytest.approx(8 / 11)  # 2TP / (2TP + FP + FN)
    assert result["yes_ratio"] == pytest.approx(6 / 10)  # (TP + FP) / n


def test_pope_gold_answers_are_normalised():
    result = pope(["yes", "no"], ["Yes.", " NO "])
    assert result["accuracy"] == 1.0 and result["precision"] == 1.0 and result["recall"] == 1.0


def test_pope_without_predicted_positives_does_not_divide_by_zero():
    result = pope(["No.", "no"], ["yes", "no"])
    # TP=0 FN=1 FP=0 TN=1
    assert result == {"score": 0.5, "accuracy": 0.5, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0, "n": 2}


def test_pope_empty():
    assert pope([], [])["accuracy"] == 0.0


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("B", "B"),
        ("B.", "B"),
        (" B ", "B"),
        ("(C) red", "C"),
        ("C) red", "C"),
        ("D: blue ring", "D"),
        ("The answer is D.", "D"),
        ("the answer is (A)", "A"),
        ("red", None),
        ("Bird", None),
        ("", None),
        ("I", None),  # not one of the option letters
    ],
)
def test_option_letter(reply, expected):
    assert option_letter(reply) == expected


def test_option_letter_respects_the_letters():
    assert option_letter("E", letters="ABCD") is None
    assert option_letter("E", letters="ABCDE") == "E"


def test_option_letter_does_not_read_an_article_as_a_letter():
    assert option_letter("The answer is a red circle.") is None
    assert option_letter("A red circle") is None


def test_multiple_choice_counts_invalid_replies():
    predictions = ["B", "(C) red", "red", "The answer is D.", "I don't know"]
    answers = ["B", "A", "C", " d ", "A"]
    # letters: B, C, None, D, None -> hits: yes, no, no, yes, no
    assert multiple_choice(predictions, answers) == {"score": 0.4, "accuracy": 0.4, "invalid": 2, "n": 5}


def test_score_family_dispatch():
    assert "yes_ratio" in score_family("yesno", ["yes"], ["yes"])
    assert score_family("mc", ["red"], ["A"])["invalid"] == 1
    assert score_family("open", ["Red."], ["red"])["score"] == 1.0
    assert score_family("count", ["3"], ["three"])["score"] == 1.0


def test_relative_score():
    scores = {"open": 0.4, "mc": 0.3, "yesno": 0.9, "count": 0.2, "extra": 0.5}
    reference = {"open": 0.8, "mc": 0.6, "yesno": 0.9, "count": 0.0, "text": 0.5}
    # count has a zero reference and extra none: both left out; text has no score
    # (0.4/0.8 + 0.3/0.6 + 0.9/0.9) / 3 = (0.5 + 0.5 + 1.0) / 3
    assert relative_score(scores, reference) == pytest.approx(2 / 3)


def test_relative_score_above_reference():
    assert relative_score({"open": 0.6}, {"open": 0.5}) == pytest.approx(1.2)


def test_relative_score_without_a_usable_reference_raises():
    with pytest.raises(ValueError):
        relative_score({"open": 0.5}, {"open": 0.0, "mc": 0.7})


@pytest.mark.parametrize("metric", [exact_match, pope, multiple_choice])
def test_length_mismatch_raises(metric):
    with pytest.raises(ValueError, match="2 predictions for 3 answers"):
        metric(["a", "b"], ["a", "b", "c"])
