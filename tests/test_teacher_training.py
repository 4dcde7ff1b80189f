"""Pieces of the teacher recipe on a tiny model and a tiny synthetic dataset."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from PIL import Image

from study.data.llava import read_samples
from study.data.scenes import POSITIONS, all_kinds
from study.data.synthetic import DataConfig, generate_dataset
from study.models.io import link_checkpoint, load_model, save_model
from study.models.teacher import build_processor, build_teacher
from study.models.teacher_training import TeacherTraining, init_projector, instruction_tune, phrase_tokens, pretrain_vision, vision_features
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


def test_projector_alignment_maps_a_cell_to_the_embeddings_of_its_kind_and_position(teacher, data_dir):
    model, processor = teacher
    _, heads = pretrain_vision(model, processor, data_dir, TeacherTraining(vision_steps=150, vision_batch_size=64))
    init_projector(model, processor, heads, data_dir, n_images=32)
    scene = json.loads((data_dir / "scenes.jsonl").read_text().splitlines()[0])
    pixels = processor.image_processor([Image.open(data_dir / "images" / scene["image"])], return_tensors="pt")["pixel_values"]
    proj = model.model.multi_modal_projector
    with torch.no_grad():
        features = vision_features(model, pixels)
        kind_units = proj.act(proj.linear_1(features))[0, :, : len(all_kinds())]
        tokens = proj(features)[0]
    embed, tok = model.get_input_embeddings().weight, processor.tokenizer
    kinds = [f"{c} {s}" for c, s in all_kinds()]
    for obj in scene["objects"]:
        units = kind_units[obj["cell"]]
        active = (units > 0.01 * units.max()).nonzero().flatten().tolist()
        assert [kinds[i] for i in active] == [f"{obj['colour']} {obj['shape']}"]  # one kind per token, not a blend
        position = embed[tok.convert_tokens_to_ids(POSITIONS[obj["cell"]])]
        targets = torch.stack([embed[tok.convert_tokens_to_ids(k)] + position for k in kinds])
        similarity = torch.nn.functional.cosine_similarity(tokens[obj["cell"]][None], targets, dim=-1)
        assert kinds[int(similarity.argmax())] == f"{obj['colour']} {obj['shape']}"  # nearest: its own kind


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


def test_instruction_tuning_stops_on_a_non_finite_loss(teacher, data_dir, monkeypatch):
    model, processor = teacher
    forward = model.forward

    def nan_loss(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(model, "forward", nan_loss)
    with pytest.raises(FloatingPointError, match="step 1"):
        instruction_tune(model, processor, data_dir, TeacherTraining(steps=2, batch_size=8, warmup_steps=1, decay_steps=1))


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
    from study.models.teacher_training import train_teacher

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
    [({"steps": 0}, "steps must be >= 1"), ({"decay_steps": -1}, "decay steps >= 0"), ({"steps": 100, "decay_steps": 50}, "exceed steps")],
)
def test_training_schedule_rejects_impossible_step_counts(fields, message):
    with pytest.raises(ValueError, match=message):
        TeacherTraining(**{"warmup_steps": 60, **fields})
