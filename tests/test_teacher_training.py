"""Pieces of the teacher recipe on a tiny model and a tiny synthetic dataset."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from transformers.loss.loss_utils import ForCausalLMLoss

from study.config.sections import DataConfig, TeacherTraining
from study.data.llava import read_samples
from study.data.ontology import PROPERTIES
from study.data.scenes import POSITIONS, all_kinds
from study.data.synthetic import MC_LETTERS, generate_dataset
from study.models.io import link_checkpoint, load_model, save_model
from study.models.teacher import build_processor, build_teacher
from study.teacher import training as teacher_training
from study.teacher.training import (
    answer_and_text_loss,
    init_projector,
    instruction_tune,
    lookup_question,
    phrase_tokens,
    pretrain_language,
    pretrain_vision,
    separating_threshold,
)
from tests.conftest import TINY


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    generate_dataset(DataConfig(n_train=64, n_eval_per_family=4, seed=1), out)
    return out


# the tiny test architecture, wide enough for the projector to hold 49 kind + 9 cell units
ALIGNABLE = replace(TINY, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)


@pytest.fixture
def teacher(data_dir):
    samples = read_samples(data_dir / "train.json")
    processor = build_processor((t["value"] for s in samples for t in s["conversations"]), ALIGNABLE, phrases=phrase_tokens())
    return build_teacher(ALIGNABLE, processor, seed=0), processor


def test_phrases_are_single_tokens(teacher):
    _, processor = teacher
    tokens = processor.tokenizer.tokenize("Is there a red circle at the top left ?")
    assert "red circle" in tokens and "top left" in tokens


def test_projector_alignment_isolates_the_kind_and_the_position_of_a_cell(data_dir, monkeypatch):
    """Vision features with the measured failure built in: the cell head's logit for the true cell
    is lower on an occupied patch (6) than on an empty one (17), and an occupied patch also gives a
    wrong cell a positive logit (3). Centred logits alone left two position units active."""
    arch = replace(ALIGNABLE, vision_hidden_size=64)
    samples = read_samples(data_dir / "train.json")
    processor = build_processor((t["value"] for s in samples for t in s["conversations"]), arch, phrases=phrase_tokens())
    model = build_teacher(arch, processor, seed=0)
    n_kinds, n_cells = len(all_kinds()), len(POSITIONS)
    real_batches, seen = teacher_training.scene_batches, {}

    def batches(*args):
        for pixels, labels in real_batches(*args):
            seen["kind"] = labels["kind"]
            yield pixels, labels

    def features(model, pixels):
        kind = seen["kind"]
        out = torch.zeros(*kind.shape, 64)
        out[..., : n_kinds + 1] = 10 * torch.nn.functional.one_hot(kind, n_kinds + 1)
        cell = torch.arange(n_cells).expand_as(kind)
        empty = (kind == n_kinds).float().unsqueeze(-1)
        true, wrong = 6 + 11 * empty, 3 + 4 * empty
        cells = true * torch.nn.functional.one_hot(cell, n_cells) + wrong * torch.nn.functional.one_hot((cell + 1) % n_cells, n_cells)
        out[..., n_kinds + 1 : n_kinds + 1 + n_cells] = cells
        return out

    monkeypatch.setattr(teacher_training, "scene_batches", batches)
    monkeypatch.setattr(teacher_training, "vision_features", features)
    heads = torch.nn.ModuleDict({"kind": torch.nn.Linear(64, n_kinds + 1), "cell": torch.nn.Linear(64, n_cells)})
    with torch.no_grad():
        for name, (start, width) in {"kind": (0, n_kinds + 1), "cell": (n_kinds + 1, n_cells)}.items():
            heads[name].weight.zero_()
            heads[name].weight[:, start : start + width] = torch.eye(width)
            heads[name].bias.zero_()
    init_projector(model, processor, heads, data_dir, n_images=16)
    pixels, labels = next(batches(teacher_training.read_scenes(data_dir), data_dir, processor, 16, random.Random(1)))
    proj = model.model.multi_modal_projector
    with torch.no_grad():
        feats = features(model, pixels)
        hidden, tokens = proj.act(proj.linear_1(feats)), proj(feats)
    embed, tok = model.get_input_embeddings().weight, processor.tokenizer
    kinds = [f"{c} {s}" for c, s in all_kinds()]
    targets = torch.stack([embed[tok.convert_tokens_to_ids(k)] + embed[tok.convert_tokens_to_ids(p)] for p in POSITIONS for k in kinds])
    occupied = (labels["kind"] < n_kinds).nonzero().tolist()
    assert occupied
    for image, cell in occupied:
        kind = int(labels["kind"][image, cell])
        units = hidden[image, cell, :n_kinds]
        assert (units > 0.01 * units.max()).nonzero().flatten().tolist() == [kind]  # one kind, not a blend
        units = hidden[image, cell, n_kinds + 1 : n_kinds + 1 + n_cells]
        assert (units > 0.01 * units.max()).nonzero().flatten().tolist() == [cell]  # one position, not a blend
        nearest = int(torch.nn.functional.cosine_similarity(tokens[image, cell][None], targets, dim=-1).argmax())
        assert nearest == cell * n_kinds + kind  # the embeddings of its own kind and position


def test_separating_threshold_is_the_middle_of_the_gap_that_isolates_the_most_targets():
    logits = torch.tensor([[5.0, 1.0, 0.0], [1.0, 6.0, 0.0], [0.0, 2.0, 9.0]])
    # true logits 5, 6, 9 and best wrong ones 1, 1, 2: every row is isolated between 2 and 5
    assert float(separating_threshold(logits, torch.tensor([0, 1, 2]))) == 3.5
    # a row whose target is not its top class cannot be isolated; the other two still are
    assert 2.0 < float(separating_threshold(logits, torch.tensor([1, 1, 2]))) < 6.0


def test_projector_alignment_needs_phrase_tokens_and_room(data_dir, tiny_arch):
    samples = read_samples(data_dir / "train.json")
    texts = [t["value"] for s in samples for t in s["conversations"]]
    narrow = build_teacher(tiny_arch, build_processor(texts, tiny_arch, phrases=phrase_tokens()), seed=0)
    with pytest.raises(ValueError, match="smaller than kinds"):
        init_projector(narrow, build_processor(texts, tiny_arch, phrases=phrase_tokens()), {}, data_dir)
    plain = build_processor(texts, ALIGNABLE)
    with pytest.raises(ValueError, match="single tokens"):
        init_projector(build_teacher(ALIGNABLE, plain, seed=0), plain, {}, data_dir)


def test_vision_pretraining_trains_only_the_tower(teacher, data_dir):
    model, processor = teacher
    llm_before = {k: v.clone() for k, v in model.model.language_model.state_dict().items()}
    tower_before = {k: v.clone() for k, v in model.model.vision_tower.state_dict().items()}
    log, heads = pretrain_vision(model, processor, data_dir, TeacherTraining(vision_steps=2, vision_batch_size=8))
    assert len(log) == 2 and {"acc_colour", "acc_shape", "acc_kind", "acc_cell"} <= set(log[0]) and "kind" in heads
    assert all(torch.equal(v, model.model.language_model.state_dict()[k]) for k, v in llm_before.items())
    assert any(not torch.equal(v, model.model.vision_tower.state_dict()[k]) for k, v in tower_before.items())


def test_instruction_tuning_freezes_the_vision_tower_and_logs(teacher, data_dir):
    model, processor = teacher
    tower_before = {k: v.clone() for k, v in model.model.vision_tower.state_dict().items()}
    proj_before = {k: v.clone() for k, v in model.model.multi_modal_projector.state_dict().items()}
    attention = model.config._attn_implementation
    calls = []
    cfg = TeacherTraining(steps=2, batch_size=8, warmup_steps=1, decay_steps=1, log_every=1)
    log = instruction_tune(model, processor, data_dir, cfg, on_log=lambda step, m, p: calls.append(step) or {"extra": 1.0})
    assert [e["step"] for e in log] == [1, 2] == calls and log[0]["extra"] == 1.0
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in log)
    assert all(torch.equal(v, model.model.vision_tower.state_dict()[k]) for k, v in tower_before.items())
    assert any(not torch.equal(v, model.model.multi_modal_projector.state_dict()[k]) for k, v in proj_before.items())
    assert model.config._attn_implementation == attention  # eager only while training
    assert not model.training


@pytest.mark.parametrize("text_loss_weight", [0.0, 1.0])
def test_instruction_tuning_stops_on_a_non_finite_loss(teacher, data_dir, monkeypatch, text_loss_weight):
    model, processor = teacher
    forward = model.forward

    def nan_outputs(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = out.logits * float("nan")  # the text loss is computed from the logits
        out.loss = None if out.loss is None else out.loss * float("nan")
        return out

    monkeypatch.setattr(model, "forward", nan_outputs)
    cfg = TeacherTraining(steps=2, batch_size=8, warmup_steps=1, decay_steps=1, text_loss_weight=text_loss_weight)
    with pytest.raises(FloatingPointError, match="step 1"):
        instruction_tune(model, processor, data_dir, cfg)


def test_lookup_questions_name_a_value_or_ask_a_fact_and_their_letter_is_right(data_dir):
    facts = json.loads((data_dir / "ontology.json").read_text())["facts"]
    rng = random.Random(0)
    questions = [lookup_question(rng, facts) for _ in range(200)]
    assert {q.type for q in questions} == {"lookup_value", "lookup_fact"}
    for q in questions:
        head, *lines, instruction = q.question.split("\n")
        options = dict(line.split(". ", 1) for line in lines)
        assert list(options) == list(MC_LETTERS) and len(set(options.values())) == len(MC_LETTERS)
        if q.type == "lookup_value":
            assert head == f"Which option is {options[q.answer]}?"
        else:
            kind, prop = next((k, p) for k in facts for p in facts[k] if head == PROPERTIES[p][0].format(f"the {k}"))
            assert options[q.answer] == facts[kind][prop]


def test_language_pretraining_trains_only_the_llm_and_scores_both_lookups(teacher, data_dir):
    model, processor = teacher
    frozen = {**model.model.vision_tower.state_dict(), **model.model.multi_modal_projector.state_dict()}
    frozen = {k: v.clone() for k, v in frozen.items()}
    llm_before = {k: v.clone() for k, v in model.model.language_model.state_dict().items()}
    attention = model.config._attn_implementation
    log = pretrain_language(model, processor, data_dir, TeacherTraining(language_steps=2, batch_size=4, log_every=1), n_eval=8)
    assert [e["step"] for e in log] == [1, 2] and all(torch.isfinite(torch.tensor(e["loss"])) for e in log)
    assert 0 <= log[-1]["lookup_value_accuracy"] <= 1 and 0 <= log[-1]["lookup_fact_accuracy"] <= 1
    after = {**model.model.vision_tower.state_dict(), **model.model.multi_modal_projector.state_dict()}
    assert all(torch.equal(v, after[k]) for k, v in frozen.items())
    assert any(not torch.equal(v, model.model.language_model.state_dict()[k]) for k, v in llm_before.items())
    assert model.config._attn_implementation == attention and not model.training
    assert pretrain_language(model, processor, data_dir, TeacherTraining(language_steps=0)) == []


def test_link_checkpoint_makes_a_loadable_folder_of_links(teacher, tmp_path):
    model, processor = teacher
    save_model(model, processor, tmp_path / "real")
    link_checkpoint(tmp_path / "real", tmp_path / "linked")
    assert (tmp_path / "linked" / "config.json").is_symlink()
    loaded, _ = load_model(tmp_path / "linked")
    assert type(loaded).__name__ == "LlavaForConditionalGeneration"
    with pytest.raises(FileNotFoundError, match="no config.json"):
        link_checkpoint(tmp_path / "nowhere", tmp_path / "x")


def test_the_recipe_is_deterministic_by_seed(data_dir):
    from study.teacher.training import train_teacher

    cfg = TeacherTraining(vision_steps=2, vision_batch_size=8, steps=2, batch_size=8, warmup_steps=1, decay_steps=1)
    first, _, _ = train_teacher(data_dir, ALIGNABLE, cfg)
    second, _, _ = train_teacher(data_dir, ALIGNABLE, cfg)
    third, _, _ = train_teacher(data_dir, ALIGNABLE, replace(cfg, seed=1))
    a, b, c = first.state_dict(), second.state_dict(), third.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_instruction_tuning_warms_up_holds_the_rate_then_decays(teacher, data_dir):
    model, processor = teacher
    cfg = TeacherTraining(steps=6, batch_size=4, lr=1e-3, warmup_steps=1, decay_steps=2, log_every=1)
    lrs = [entry["lr"] for entry in instruction_tune(model, processor, data_dir, cfg)]
    # the rate logged after step s is the one of step s + 1: warmup ends at 1, decay runs over steps 5-6
    assert lrs[:4] == [pytest.approx(1e-3)] * 4
    assert 0 < lrs[4] < 1e-3 and lrs[5] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"steps": 0}, "steps must be >= 1"),
        ({"decay_steps": -1}, "decay/language steps >= 0"),
        ({"language_steps": -1}, "decay/language steps >= 0"),
        ({"steps": 100, "decay_steps": 50}, "exceed steps"),
        ({"text_loss_weight": -0.5}, "text_loss_weight must be >= 0"),
    ],
)
def test_training_schedule_rejects_impossible_step_counts(fields, message):
    with pytest.raises(ValueError, match=message):
        TeacherTraining(**{"warmup_steps": 60, **fields})


def test_the_text_loss_adds_the_questions_tokens_but_not_images_padding_or_answers():
    """Position t gives its target token probability e^t / (e^t + 9) (10 classes), so each
    position's cross-entropy is log(e^t + 9) - t and the masking is visible in the sum."""
    pad, bos, eos, image = 0, 1, 2, 4
    ids = torch.tensor([[pad, bos, 7, image, 8, 9, eos]])
    labels = torch.tensor([[-100, -100, -100, -100, -100, 9, eos]])
    batch = {"input_ids": ids, "attention_mask": (ids != pad).long(), "labels": labels}
    logits = torch.zeros(1, 7, 10)
    for t in range(6):
        logits[0, t, ids[0, t + 1]] = float(t)

    class Model:
        """Returns the logits above with the real causal-LM loss on the labels it is given."""

        loss_function = staticmethod(ForCausalLMLoss)

        def __call__(self, **inputs):
            assert inputs["labels"] is labels
            return SimpleNamespace(logits=logits, loss=ForCausalLMLoss(logits, labels, 10))

    def ce(t):
        return math.log(math.exp(t) + 9) - t

    answers = (ce(4) + ce(5)) / 2  # position 4 predicts the answer word, 5 its end
    text = (ce(1) + ce(3)) / 2  # 1 predicts the question word, 3 the word after the image; 0 (padding) and 2 (image) are out
    assert answer_and_text_loss(Model(), batch, 0.5, image).item() == pytest.approx(answers + 0.5 * text)
    assert answer_and_text_loss(Model(), batch, 0.0, image).item() == pytest.approx(answers)  # the model's own loss
