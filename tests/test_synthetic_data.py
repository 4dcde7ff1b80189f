"""The synthetic dataset: deterministic, balanced and consistent with the scenes it draws."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from study.config.sections import DataConfig
from study.data.ontology import PROPERTIES, build_ontology, property_names
from study.data.scenes import BACKGROUND, COLOURS, GRID, POSITIONS, SHAPES, kind_popularity
from study.data.synthetic import generate_dataset, write_manifest

CONFIG = dict(n_train=200, n_eval_per_family=12, seed=3)  # enough for every family at its mixture weight (caption: ~3%)
# the shared dataset has more eval questions, so that every question type is checked
N_EVAL = 60
# independent of the module under test, so a shifted number list is caught
WORDS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen".split()
TEXT_FAMILIES = {"text", "knowledge_text"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    generate_dataset(DataConfig(**{**CONFIG, "n_eval_per_family": N_EVAL}), out)
    return out


@pytest.fixture(scope="module")
def scenes(dataset) -> dict[str, dict[int, dict]]:
    """Image path -> {cell: object}."""
    rows = [json.loads(line) for line in (dataset / "scenes.jsonl").read_text().splitlines()]
    return {row["image"]: {obj["cell"]: obj for obj in row["objects"]} for row in rows}


@pytest.fixture(scope="module")
def facts(dataset) -> dict[str, dict[str, str]]:
    return json.loads((dataset / "ontology.json").read_text())["facts"]


def read_eval(dataset: Path, family: str) -> list[dict]:
    return [json.loads(line) for line in (dataset / "eval" / f"{family}.jsonl").read_text().splitlines()]


def kind(obj: dict) -> str:
    return f"{obj['colour']} {obj['shape']}"


def cell_of(objects: dict[int, dict], name: str) -> int:
    (cell,) = [c for c, o in objects.items() if kind(o) == name]
    return cell


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- determinism ---------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(tmp_path):
    generate_dataset(DataConfig(**CONFIG), tmp_path / "a")
    generate_dataset(DataConfig(**CONFIG), tmp_path / "b")
    a, b = files(tmp_path / "a"), files(tmp_path / "b")
    assert sorted(a) == sorted(b)
    assert any(name.endswith(".png") for name in a)
    assert {"train.json", "scenes.jsonl", "ontology.json"} <= set(a)
    for name in a:
        assert a[name] == b[name], name


def test_different_seed_gives_different_data(tmp_path):
    generate_dataset(DataConfig(**CONFIG), tmp_path / "a")
    generate_dataset(DataConfig(**{**CONFIG, "seed": 4}), tmp_path / "b")
    assert (tmp_path / "a" / "train.json").read_bytes() != (tmp_path / "b" / "train.json").read_bytes()


def test_manifest_hashes_every_other_file(dataset, tmp_path):
    manifest = json.loads((dataset / "manifest.json").read_text())
    others = {name: data for name, data in files(dataset).items() if name != "manifest.json"}
    assert sorted(manifest) == sorted(others)
    assert manifest["train.json"] == hashlib.sha256(others["train.json"]).hexdigest()
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    image = next(name for name in others if name.endswith(".png"))
    (copy / image).write_bytes(b"another image")
    assert json.loads(write_manifest(copy).read_text()) == {**manifest, image: hashlib.sha256(b"another image").hexdigest()}


def test_generate_replaces_previous_contents(tmp_path):
    stale = tmp_path / "out" / "images" / "train" / "stale.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    generate_dataset(DataConfig(**CONFIG), tmp_path / "out")
    assert not stale.exists()


def test_ontology_is_deterministic_by_seed():
    kinds = [("red", "circle"), ("blue", "ring")]
    assert build_ontology(kinds, 3, seed=1) == build_ontology(kinds, 3, seed=1)
    onto = build_ontology(kinds, 3, seed=1)
    assert set(onto) == {"red circle", "blue ring"}
    for values in onto.values():
        assert list(values) == property_names(3)
        assert all(value in PROPERTIES[prop][1] for prop, value in values.items())
    with pytest.raises(ValueError):
        property_names(0)


# --- yes/no balance ------------------------------------------------------------------------------


@pytest.mark.parametrize("n_eval", [12, N_EVAL])
def test_yesno_answers_are_balanced_overall_and_per_type(tmp_path, n_eval):
    generate_dataset(DataConfig(**{**CONFIG, "n_eval_per_family": n_eval}), tmp_path)
    rows = read_eval(tmp_path, "yesno")
    assert len(rows) == n_eval
    assert Counter(r["answer"] for r in rows) == {"yes": n_eval // 2, "no": n_eval // 2}
    by_type = Counter((r["type"], r["answer"]) for r in rows)
    assert {t for t, _ in by_type} == {"random", "popular", "adversarial"}
    for strategy in ("random", "popular", "adversarial"):
        assert by_type[strategy, "yes"] == by_type[strategy, "no"] == n_eval // 6


def test_yesno_negatives_follow_their_strategy(dataset, scenes):
    popularity = [f"{c} {s}" for c, s in kind_popularity(CONFIG["seed"])]
    for row in read_eval(dataset, "yesno"):
        if row["answer"] != "no":
            continue
        asked = re.fullmatch(r"Is there an? (\w+ \w+) in the image\?", row["text"]).group(1)
        present = {kind(o) for o in scenes[row["image"]].values()}
        if row["type"] == "popular":
            assert asked in [k for k in popularity if k not in present][:8], row
        elif row["type"] == "adversarial":
            assert set(asked.split()) & {p for k in present for p in k.split()}, row


# --- answers consistent with the scene -----------------------------------------------------------


def expected_open(row: dict, objects: dict[int, dict]) -> str:
    text, qtype = row["text"], row["type"]
    if qtype in ("colour", "shape"):
        pos = re.fullmatch(rf"What {qtype} is the object at the (.+)\?", text).group(1)
        return objects[POSITIONS.index(pos)][qtype]
    if qtype == "what":
        pos = re.fullmatch(r"What is at the (.+)\?", text).group(1)
        return kind(objects[POSITIONS.index(pos)])
    if qtype == "where":
        name = re.fullmatch(r"Where is the (.+)\?", text).group(1)
        return POSITIONS[cell_of(objects, name)]
    assert qtype == "right_of", row
    name = re.fullmatch(r"What is right of the (.+)\?", text).group(1)
    cell = cell_of(objects, name)
    if cell % GRID == GRID - 1 or cell + 1 not in objects:
        return "nothing"
    return kind(objects[cell + 1])


def expected_count(row: dict, objects: dict[int, dict]) -> str:
    text = row["text"]
    if text == "How many objects are there?":
        return WORDS[len(objects)]
    if m := re.fullmatch(r"How many (\w+) objects are there\?", text):
        assert m.group(1) in COLOURS
        return WORDS[sum(o["colour"] == m.group(1) for o in objects.values())]
    m = re.fullmatch(r"How many (\w+) shapes are there\?", text)
    assert m.group(1) in SHAPES
    return WORDS[sum(o["shape"] == m.group(1) for o in objects.values())]


def expected_yesno(row: dict, objects: dict[int, dict]) -> str:
    m = re.fullmatch(r"Is there (an?) (\w+ \w+) in the image\?", row["text"])
    assert m.group(1) == ("an" if m.group(2)[0] in "aeiou" else "a")
    return "yes" if m.group(2) in {kind(o) for o in objects.values()} else "no"


def object_at_phrase(template: str, text: str, objects: dict[int, dict]) -> dict:
    """The object whose position, put in ``template``, gives ``text``."""
    (cell,) = [c for c, pos in enumerate(POSITIONS) if template.format(f"the object at the {pos}") == text]
    return objects[cell]


def expected_knowledge_image(row: dict, objects: dict[int, dict], facts: dict) -> str:
    prop = row["type"]
    obj = object_at_phrase(PROPERTIES[prop][0], row["text"], objects)
    return facts[kind(obj)][prop]


@pytest.mark.parametrize("family", ["open", "count", "yesno", "knowledge_image"])
def test_eval_answers_match_the_scene(dataset, scenes, facts, family):
    rows = read_eval(dataset, family)
    assert len(rows) == N_EVAL
    for row in rows:
        objects = scenes[row["image"]]
        if family == "open":
            expected = expected_open(row, objects)
        elif family == "count":
            expected = expected_count(row, objects)
        elif family == "yesno":
            expected = expected_yesno(row, objects)
        else:
            expected = expected_knowledge_image(row, objects, facts)
        assert row["answer"] == expected, row
        assert row["category"] == family


def test_eval_questions_cover_every_type(dataset):
    """Guards the consistency checks above against silently skipping a question type."""
    open_rows = read_eval(dataset, "open")
    assert {r["type"] for r in open_rows} == {"what", "colour", "shape", "where", "right_of"}
    assert {r["answer"] == "nothing" for r in open_rows if r["type"] == "right_of"} == {True, False}
    assert {r["type"] for r in read_eval(dataset, "count")} == {"all", "colour", "shape"}
    ops = itertools.product(("plus", "minus"), repeat=3)
    assert {r["type"] for r in read_eval(dataset, "text")} == {"_".join(o) for o in ops}


def test_mc_letter_points_at_the_right_option(dataset, scenes, facts):
    rows = read_eval(dataset, "mc")
    assert {r["type"] == "object_at" for r in rows} == {True, False}  # both kinds of question occur
    for row in rows:
        question, *option_lines, instruction = row["text"].split("\n")
        assert instruction == "Answer with the option's letter from the given choices directly."
        options = {}
        for letter, line in zip("ABCD", option_lines, strict=True):
            assert line.startswith(f"{letter}. "), row
            options[letter] = line[3:]
        assert len(set(options.values())) == 4, row
        objects = scenes[row["image"]]
        if row["type"] == "object_at":
            pos = re.fullmatch(r"Which object is at the (.+)\?", question).group(1)
            correct = kind(objects[POSITIONS.index(pos)])
        else:
            prop = row["type"].removeprefix("fact_")
            correct = facts[kind(object_at_phrase(PROPERTIES[prop][0], question, objects))][prop]
        assert options[row["answer"]] == correct, row
        assert list(options.values()).count(correct) == 1, row


def test_text_families_answer_from_text_alone(dataset, facts):
    for row in read_eval(dataset, "text"):
        m = re.fullmatch(r"What is (\w+)((?: (?:plus|minus) \w+){3})\?", row["text"])
        value, ops = WORDS.index(m.group(1)), []
        assert value <= 9, row
        for op, word in re.findall(r" (plus|minus) (\w+)", m.group(2)):
            n = WORDS.index(word)
            value += n if op == "plus" else -n
            assert n <= 9 and 0 <= value <= 18, row  # every operand a digit, every partial result a word
            ops.append(op)
        assert row["answer"] == WORDS[value] and row["type"] == "_".join(ops), row
    for row in read_eval(dataset, "knowledge_text"):
        prop = row["type"]
        (name,) = [k for k in facts if PROPERTIES[prop][0].format(f"the {k}") == row["text"]]
        assert row["answer"] == facts[name][prop]
    for family in TEXT_FAMILIES:
        assert all("image" not in row for row in read_eval(dataset, family))


def test_train_captions_describe_the_scene_in_reading_order(dataset, scenes):
    samples = [s for s in json.loads((dataset / "train.json").read_text()) if s["family"] == "caption"]
    assert samples
    for sample in samples:
        objects = scenes[sample["image"]]
        article = {True: "an", False: "a"}
        expected = " and ".join(f"{article[kind(o)[0] in 'aeiou']} {kind(o)} at the {POSITIONS[c]}" for c, o in sorted(objects.items()))
        assert [t["value"] for t in sample["conversations"]] == ["<image>\nDescribe the image.", expected]


def test_scenes_are_valid(scenes, dataset):
    config = DataConfig(**CONFIG)
    for image, objects in scenes.items():
        assert config.min_objects <= len(objects) <= config.max_objects, image
        assert len({kind(o) for o in objects.values()}) == len(objects), image
        assert all(0 <= cell < GRID * GRID for cell in objects)
        assert (dataset / "images" / image).is_file()


def test_rendered_pixels_match_the_scene(dataset, scenes):
    cell_px = DataConfig(**CONFIG).cell_px
    for image_path, objects in scenes.items():
        with Image.open(dataset / "images" / image_path) as image:
            image = image.convert("RGB")
        assert image.size == (GRID * cell_px, GRID * cell_px)
        for cell in range(GRID * GRID):
            row, col = divmod(cell, GRID)
            box = (col * cell_px, row * cell_px, (col + 1) * cell_px, (row + 1) * cell_px)
            centre = image.getpixel((col * cell_px + cell_px // 2, row * cell_px + cell_px // 2))
            obj = objects.get(cell)
            if obj is None:
                assert set(image.crop(box).getdata()) == {BACKGROUND}, (image_path, cell)
            elif obj["shape"] == "ring":  # hollow: background inside, the colour on the outline
                assert centre == BACKGROUND, (image_path, cell)
                assert COLOURS[obj["colour"]] in set(image.crop(box).getdata()), (image_path, cell)
            else:
                assert centre == COLOURS[obj["colour"]], (image_path, cell, obj)


# --- train.json structure ------------------------------------------------------------------------


def test_every_mixture_family_appears_in_train(dataset):
    samples = json.loads((dataset / "train.json").read_text())
    assert len(samples) == CONFIG["n_train"]
    assert {s["family"] for s in samples} == set(DataConfig().mixture)
    assert len({s["id"] for s in samples}) == len(samples)


def test_train_conversations_are_well_formed(dataset):
    config = DataConfig(**CONFIG)
    for sample in json.loads((dataset / "train.json").read_text()):
        turns = sample["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2), sample["id"]
        assert 1 <= len(turns) // 2 <= (1 if sample["family"] == "caption" else config.turns_per_sample)
        questions = [t["value"] for t in turns[::2]]
        assert len(set(questions)) == len(questions), sample["id"]
        n_images = sum(t["value"].count("<image>") for t in turns)
        if sample["family"] in TEXT_FAMILIES:
            assert "image" not in sample and n_images == 0, sample["id"]
        else:
            assert (dataset / "images" / sample["image"]).is_file()
            assert n_images == 1 and turns[0]["value"].startswith("<image>\n"), sample["id"]


def test_returned_counts_match_the_files(tmp_path):
    counts = generate_dataset(DataConfig(**CONFIG), tmp_path)
    samples = json.loads((tmp_path / "train.json").read_text())
    assert counts["train"] == Counter(s["family"] for s in samples)
    for family, n in counts["eval"].items():
        assert len(read_eval(tmp_path, family)) == n == CONFIG["n_eval_per_family"]


# --- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"mixture": {"open": 1, "vqa": 1}}, "unknown families"),
        ({"mixture": {"open": 1, "text": -0.5}}, "weights"),
        ({"mixture": {"open": 0}}, "weights"),
        ({"turns_per_sample": 0}, "turns_per_sample"),
    ],
)
def test_bad_config_raises(overrides, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**overrides)
