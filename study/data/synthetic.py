"""The embedded offline dataset: question families over synthetic scenes, in LLaVA's formats.

Training data is a LLaVA conversation JSON plus an image folder (multi-turn samples of one family,
single-turn captions, text-only samples); evaluation data is one JSONL question file per family,
as LLaVA's evaluation scripts read them. Everything is deterministic by seed: the same seed and
pinned library versions give byte-identical files, which DVC relies on to skip retraining.

Families (the evaluation ``category``):
- ``open``: open-ended object, attribute and relation questions (GQA-like);
- ``yesno``: existence probes with balanced answers and random/popular/adversarial negatives
  (POPE-like; the negative sampling is the question's ``type``);
- ``mc``: lettered multiple choice about the image or about a depicted object's facts
  (ScienceQA/MMBench-like);
- ``count``: how many objects (of a colour or shape);
- ``text``: text-only arithmetic in words;
- ``knowledge_image`` / ``knowledge_text``: a fact from the ontology about a depicted object, or
  about a named kind with no image;
- ``caption`` (training only): a description of the scene in reading order.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm  # text bars: readable in stage logs and executed notebooks

from study.config.sections import DataConfig
from study.config.vocabulary import EVAL_FAMILIES, MANIFEST
from study.data.ontology import PROPERTIES, build_ontology
from study.data.scenes import COLOURS, GRID, POSITIONS, SHAPES, Scene, all_kinds, kind_popularity, render, sample_scene

IMAGE_FAMILIES = ("open", "yesno", "mc", "count", "knowledge_image", "caption")
NUMBERS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen"
).split()
MC_LETTERS = "ABCD"
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."


@dataclass(frozen=True)
class World:
    """What every question generator needs besides the scene."""

    ontology: dict[str, dict[str, str]]
    popularity: list[tuple[str, str]]

    @property
    def properties(self) -> list[str]:
        return list(next(iter(self.ontology.values())))

    def kinds(self) -> list[str]:
        return [f"{c} {s}" for c, s in self.popularity]


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    type: str


def eval_row(question_id: str, qa: QA, category: str, image: str | None = None) -> dict:
    """One question of an evaluation JSONL file (the format ``study.evaluation`` reads)."""
    row = {"question_id": question_id} | ({"image": image} if image is not None else {})
    return row | {"text": qa.question, "answer": qa.answer, "category": category, "type": qa.type}


def make_world(config: DataConfig) -> World:
    return World(build_ontology(all_kinds(), config.n_properties, config.seed), kind_popularity(config.seed))


# --- question generators: (scene or None, rng, world) -> QA ---------------------------------------


def ask_open(scene: Scene, rng: random.Random, world: World) -> QA:
    obj = rng.choice(scene.objects)
    kind = rng.choice(("what", "colour", "shape", "where", "right_of"))
    if kind == "what":
        return QA(f"What is at the {obj.position}?", obj.kind, "what")
    if kind == "colour":
        return QA(f"What colour is the object at the {obj.position}?", obj.colour, "colour")
    if kind == "shape":
        return QA(f"What shape is the object at the {obj.position}?", obj.shape, "shape")
    if kind == "where":
        return QA(f"Where is the {obj.kind}?", obj.position, "where")
    candidates = [o for o in scene.objects if o.cell % GRID < GRID - 1] or list(scene.objects)
    obj = rng.choice(candidates)
    right = scene.at(obj.cell + 1) if obj.cell % GRID < GRID - 1 else None
    return QA(f"What is right of the {obj.kind}?", right.kind if right else "nothing", "right_of")


def negative_kind(scene: Scene, rng: random.Random, world: World, strategy: str) -> str:
    """An absent kind chosen like POPE's negatives: random, popular (frequent overall) or
    adversarial (shares a colour or a shape with a present object)."""
    present = scene.kinds()
    absent = [k for k in world.kinds() if k not in present]
    if strategy == "popular":
        pool = absent[:8]
    elif strategy == "adversarial":
        parts = {p for k in present for p in k.split()}
        pool = [k for k in absent if set(k.split()) & parts]
    elif strategy == "random":
        pool = absent
    else:
        raise ValueError(f"unknown negative strategy {strategy!r}")
    return rng.choice(pool or absent)


def ask_yesno(scene: Scene, rng: random.Random, world: World, answer: str | None = None, strategy: str | None = None) -> QA:
    answer = answer or rng.choice(("yes", "no"))
    strategy = strategy or rng.choice(("random", "popular", "adversarial"))
    kind = rng.choice(scene.objects).kind if answer == "yes" else negative_kind(scene, rng, world, strategy)
    return QA(f"Is there {article(kind)} {kind} in the image?", answer, strategy)


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def ask_mc(scene: Scene, rng: random.Random, world: World) -> QA:
    obj = rng.choice(scene.objects)
    if rng.random() < 0.5:
        question, correct, qtype = f"Which object is at the {obj.position}?", obj.kind, "object_at"
        pool = world.kinds()
    else:
        prop = rng.choice(world.properties)
        template, values = PROPERTIES[prop]
        question, correct, qtype = template.format(f"the object at the {obj.position}"), world.ontology[obj.kind][prop], f"fact_{prop}"
        pool = values
    return lettered_choice(question, correct, pool, rng, qtype)


def lettered_choice(question: str, correct: str, pool: Sequence[str], rng: random.Random, qtype: str) -> QA:
    """A multiple-choice question in LLaVA's format: ``correct`` and distractors drawn from
    ``pool`` (``correct`` excluded) under the letters A-D in random order, then the instruction;
    the answer is the correct option's letter."""
    options = [correct, *rng.sample([v for v in pool if v != correct], len(MC_LETTERS) - 1)]
    rng.shuffle(options)
    lines = "\n".join(f"{letter}. {option}" for letter, option in zip(MC_LETTERS, options))
    return QA(f"{question}\n{lines}\n{MC_INSTRUCTION}", MC_LETTERS[options.index(correct)], qtype)


def ask_count(scene: Scene, rng: random.Random, world: World) -> QA:
    kind = rng.choice(("all", "colour", "shape"))
    if kind == "all":
        return QA("How many objects are there?", NUMBERS[len(scene.objects)], "all")
    if kind == "colour":
        colour = rng.choice([o.colour for o in scene.objects] + list(COLOURS))
        n = sum(o.colour == colour for o in scene.objects)
        return QA(f"How many {colour} objects are there?", NUMBERS[n], "colour")
    shape = rng.choice([o.shape for o in scene.objects] + list(SHAPES))
    n = sum(o.shape == shape for o in scene.objects)
    return QA(f"How many {shape} shapes are there?", NUMBERS[n], "shape")


def ask_knowledge_image(scene: Scene, rng: random.Random, world: World) -> QA:
    obj = rng.choice(scene.objects)
    prop = rng.choice(world.properties)
    template = PROPERTIES[prop][0]
    return QA(template.format(f"the object at the {obj.position}"), world.ontology[obj.kind][prop], prop)


def ask_caption(scene: Scene, rng: random.Random, world: World) -> QA:
    parts = [f"{article(o.kind)} {o.kind} at the {o.position}" for o in scene.objects]
    return QA("Describe the image.", " and ".join(parts), "caption")


def ask_text(scene: None, rng: random.Random, world: World) -> QA:
    """Three steps of arithmetic on number words ("What is four plus nine minus six plus two?"), every
    partial result between zero and eighteen. Each step is a small table, but the answer needs all
    three in sequence: computation over the backbone's depth, as multi-step questions need in a real
    LLM. Without their two most similar blocks, teachers lost 3 points on one-step sums, 22.5 on
    two-step and 39.5 on three-step sums (measured, ``benchmarks/README.md``)."""
    value = rng.randint(0, 9)
    words, ops = [NUMBERS[value]], []
    for _ in range(3):
        op = rng.choice(("plus", "minus"))
        n = rng.randint(0, min(9, len(NUMBERS) - 1 - value)) if op == "plus" else rng.randint(0, min(9, value))
        value += n if op == "plus" else -n
        words += [op, NUMBERS[n]]
        ops.append(op)
    return QA(f"What is {' '.join(words)}?", NUMBERS[value], "_".join(ops))


def ask_knowledge_text(scene: None, rng: random.Random, world: World) -> QA:
    kind = rng.choice(world.kinds())
    prop = rng.choice(world.properties)
    return QA(PROPERTIES[prop][0].format(f"the {kind}"), world.ontology[kind][prop], prop)


ASK: dict[str, Callable[..., QA]] = {
    "open": ask_open,
    "yesno": ask_yesno,
    "mc": ask_mc,
    "count": ask_count,
    "caption": ask_caption,
    "knowledge_image": ask_knowledge_image,
    "text": ask_text,
    "knowledge_text": ask_knowledge_text,
}


def distinct_questions(family: str, scene: Scene | None, rng: random.Random, world: World, n: int) -> list[QA]:
    """Up to ``n`` questions of one family with distinct texts (fewer if the scene has fewer)."""
    out: list[QA] = []
    for _ in range(20 * n):
        qa = ASK[family](scene, rng, world)
        if all(qa.question != q.question for q in out):
            out.append(qa)
        if len(out) == n:
            break
    return out


def turns_for(family: str, turns_per_sample: int) -> int:
    """Captions are single-turn; multiple-choice questions are about twice as long as the others,
    so their samples get half the turns. Similar sample lengths keep the padding of randomly
    shuffled batches small without grouping batches by length, which made batches of a single
    family and slowed training down (measured)."""
    if family == "caption":
        return 1
    return max(1, turns_per_sample // 2) if family == "mc" else turns_per_sample


def conversation(qas: list[QA], with_image: bool) -> list[dict[str, str]]:
    turns = []
    for i, qa in enumerate(qas):
        prefix = "<image>\n" if with_image and i == 0 else ""
        turns += [{"from": "human", "value": prefix + qa.question}, {"from": "gpt", "value": qa.answer}]
    return turns


def generation_settings(config: DataConfig) -> dict:
    """The settings that shape the data (where it is written, and what the stages depend on, do not)."""
    return {k: v for k, v in asdict(config).items() if k not in ("out_dir", "generate", "manifest")}


def generate_dataset(config: DataConfig, out_dir: Path) -> dict[str, Counter]:
    """Write ``train.json``, ``images/``, ``eval/<family>.jsonl``, ``scenes.jsonl``,
    ``ontology.json`` and their ``manifest.json`` under ``out_dir`` (replacing what was there);
    return the number of samples per family and split."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    for sub in ("images/train", "images/eval", "eval"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    world = make_world(config)
    rng = random.Random(f"data-{config.seed}")
    families, weights = zip(*config.mixture.items())
    scenes: list[dict] = []
    counts: dict[str, Counter] = {"train": Counter(), "eval": Counter()}

    def new_scene(split: str, index: int) -> tuple[Scene, str]:
        scene = sample_scene(rng, world.popularity, config.min_objects, config.max_objects)
        rel = f"{split}/{index:06d}.png"
        render(scene, config.cell_px).save(out_dir / "images" / rel, format="PNG")
        scenes.append({"image": rel, "objects": scene.to_json()})
        return scene, rel

    train = []
    for i in tqdm(range(config.n_train), desc="train samples"):
        family = rng.choices(families, weights)[0]
        sample: dict = {"id": f"{family}-{i:06d}"}
        scene = None
        if family in IMAGE_FAMILIES:
            scene, sample["image"] = new_scene("train", i)
        turns = turns_for(family, config.turns_per_sample)
        sample["conversations"] = conversation(distinct_questions(family, scene, rng, world, turns), scene is not None)
        sample["family"] = family
        train.append(sample)
        counts["train"][family] += 1
    _write_json(out_dir / "train.json", train)

    for family in tqdm(EVAL_FAMILIES, desc="eval files"):
        rows = []
        for j in range(config.n_eval_per_family):
            scene = image = None
            if family in IMAGE_FAMILIES:
                scene, image = new_scene("eval", counts["eval"].total())
            if family == "yesno":  # exactly balanced answers within each negative strategy
                strategy = ("random", "popular", "adversarial")[j % 3]
                qa = ask_yesno(scene, rng, world, answer=("yes", "no")[(j // 3) % 2], strategy=strategy)
            else:
                qa = ASK[family](scene, rng, world)
            rows.append(eval_row(f"{family}-{j:05d}", qa, family, image))
            counts["eval"][family] += 1
        _write_jsonl(out_dir / "eval" / f"{family}.jsonl", rows)

    _write_jsonl(out_dir / "scenes.jsonl", scenes)
    _write_json(out_dir / "ontology.json", {"config": generation_settings(config), "positions": POSITIONS, "facts": world.ontology})
    write_manifest(out_dir)
    return counts


def write_manifest(out_dir: Path) -> Path:
    """``<out_dir>/manifest.json``: the SHA-256 of every other file under ``out_dir``. The stages
    depend on this one file (``data.manifest``) rather than on ~10,000 images."""
    files = sorted(p for p in out_dir.rglob("*") if p.is_file() and p != out_dir / MANIFEST)
    digests = {p.relative_to(out_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    _write_json(out_dir / MANIFEST, digests)
    return out_dir / MANIFEST


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, sort_keys=True) + "\n")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
