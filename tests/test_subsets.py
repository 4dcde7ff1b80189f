"""Nested, stratified training subsets."""

from __future__ import annotations

import json
import math
from collections import Counter
from fractions import Fraction
from itertools import pairwise

import pytest

from study.config.vocabulary import check_fractions
from study.data.llava import read_samples
from study.data.subsets import nested_subsets, stratum, subset_name, write_subsets

# 0.3 * 10 and 0.07 * 100 are a hair above 3 and 7 in floating point: ceil must not round them up
FRACTIONS = [0.05, 0.07, 0.1, 0.3, 0.5, 1.0]
SIZES = {"open": 100, "yesno": 10, "caption": 3, "text": 1}


def make_samples(sizes: dict[str, int] = SIZES) -> list[dict]:
    samples = []
    for family, n in sizes.items():
        for i in range(n):
            sample = {
                "id": f"{family}-{i}",
                "family": family,
                "conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A"}],
            }
            if family != "text":
                sample["image"] = f"train/{family}-{i}.png"
                sample["conversations"][0]["value"] = "<image>\nQ?"
            samples.append(sample)
    # interleave the strata so that positions say nothing about the family
    return sorted(samples, key=lambda s: (int(s["id"].split("-")[1]), s["id"]))


def expected_size(fraction: float, n: int) -> int:
    return max(1, math.ceil(Fraction(str(fraction)) * n))


def test_subsets_are_nested():
    subsets = nested_subsets(make_samples(), FRACTIONS, seed=0)
    assert list(subsets) == sorted(FRACTIONS)
    for small, large in pairwise(sorted(FRACTIONS)):
        assert set(subsets[small]) < set(subsets[large]), (small, large)


def test_subsets_are_stratified():
    samples = make_samples()
    for fraction, indices in nested_subsets(samples, FRACTIONS, seed=0).items():
        assert indices == sorted(indices) and len(set(indices)) == len(indices)
        counts = Counter(samples[i]["family"] for i in indices)
        assert counts == {family: expected_size(fraction, n) for family, n in SIZES.items()}, fraction


def test_expected_sizes_are_as_hand_computed():
    """Pins the rounding: at least one per stratum, ceil otherwise, no float overshoot."""
    samples = make_samples()
    subsets = nested_subsets(samples, [0.05, 0.3], seed=0)
    assert Counter(samples[i]["family"] for i in subsets[0.05]) == {"open": 5, "yesno": 1, "caption": 1, "text": 1}
    assert Counter(samples[i]["family"] for i in subsets[0.3]) == {"open": 30, "yesno": 3, "caption": 1, "text": 1}


def test_full_fraction_is_everything():
    samples = make_samples()
    assert nested_subsets(samples, [1.0], seed=5)[1.0] == list(range(len(samples)))


def test_deterministic_by_seed():
    samples = make_samples()
    assert nested_subsets(samples, FRACTIONS, seed=7) == nested_subsets(samples, FRACTIONS, seed=7)
    assert nested_subsets(samples, [0.1], seed=7) != nested_subsets(samples, [0.1], seed=8)


def test_a_fraction_does_not_depend_on_the_other_fractions_asked():
    samples = make_samples()
    assert nested_subsets(samples, [0.1], seed=2)[0.1] == nested_subsets(samples, [0.1, 0.5, 1.0], seed=2)[0.1]


def test_duplicate_and_unsorted_fractions_are_normalised():
    assert check_fractions([0.5, 0.1, 0.5]) == [0.1, 0.5]


@pytest.mark.parametrize("fractions", [[0], [1.5], [], [-0.1], [0.1, 2.0]])
def test_bad_fractions_raise(fractions):
    with pytest.raises(ValueError, match="fractions"):
        nested_subsets(make_samples(), fractions, seed=0)


@pytest.mark.parametrize(
    "sample, expected",
    [
        ({"family": "count", "image": "coco/x.jpg"}, "count"),
        ({"image": "coco/x.jpg"}, "coco"),
        ({"image": "ocr_vqa/images/1.jpg"}, "ocr_vqa"),
        ({"image": "x.jpg"}, "image"),
        ({"id": "t", "conversations": []}, "text"),
    ],
)
def test_stratum(sample, expected):
    assert stratum(sample) == expected


def test_strata_from_image_folders_without_family():
    samples = (
        [{"image": f"coco/{i}.jpg"} for i in range(20)] + [{"image": f"gqa/{i}.jpg"} for i in range(4)] + [{"id": i} for i in range(2)]
    )
    indices = nested_subsets(samples, [0.25], seed=0)[0.25]
    assert Counter(stratum(samples[i]) for i in indices) == {"coco": 5, "gqa": 1, "text": 1}


@pytest.mark.parametrize(
    "fraction, name", [(0.05, "5pct"), (0.005, "0.5pct"), (0.1, "10pct"), (0.25, "25pct"), (0.07, "7pct"), (1.0, "100pct")]
)
def test_subset_name(fraction, name):
    assert subset_name(fraction) == name


def test_write_subsets_round_trips_as_llava(tmp_path):
    samples = make_samples()
    train = tmp_path / "train.json"
    train.write_text(json.dumps(samples))
    summary = write_subsets(train, [0.05, 0.5, 1.0], seed=0, out_dir=tmp_path / "subsets")

    assert sorted(p.name for p in (tmp_path / "subsets").iterdir()) == ["100pct.json", "50pct.json", "5pct.json"]
    assert set(summary) == {"5pct", "50pct", "100pct"}
    expected = nested_subsets(samples, [0.05, 0.5, 1.0], seed=0)
    for fraction, name in ((0.05, "5pct"), (0.5, "50pct"), (1.0, "100pct")):
        written = read_samples(tmp_path / "subsets" / f"{name}.json")
        assert written == [samples[i] for i in expected[fraction]]
        assert summary[name] == Counter(s["family"] for s in written)
    assert summary["100pct"] == Counter(SIZES)
