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


@pytest.mark.xfail(
    strict=True,
    reason="issue 2 open: with centred head logits ~14 kind units stay positive after GELU (measured on this setup), "
    "so an image token is a blend of many kind embeddings; the fix (threshold at the top-1/top-2 midpoint) needs a retrained teacher",
)
def test_projector_alignment_maps_a_cell_to_the_embeddings_of_its_kind_and_position(teacher, data_dir):
    model, processor = teacher
    _, heads = pretrain_vision(model, processor, data_dir, TeacherTraining(vision_steps=60, vision_batch_size=32))
    init_projector(model, processor, heads, data_dir, n_images=32)
    scene = json.loads((data_dir / "scenes.jsonl").read_text().splitlines()[0])
    pixels = processor.image_processor([Image.open(data_dir / "images" / scene["image"])], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        tokens = model.model.multi_modal_projector(vision_features(model, pixels))[0]
    embed, tok = model.get_input_embeddings().weight, processor.tokenizer
    kinds = [f"{c} {s}" for c, s in all_kinds()]
    for obj in scene["objects"]:
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
    cfg = TeacherTraining(steps=2, batch_size=8, warmup_steps=1, log_every=1)
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
        instruction_tune(model, processor, data_dir, replace(TeacherTraining(), steps=2, batch_size=8, warmup_steps=1))


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

    cfg = TeacherTraining(vision_steps=2, vision_batch_size=8, steps=2, batch_size=8, warmup_steps=1)
    first, _, _ = train_teacher(data_dir, ALIGNABLE, cfg)
    second, _, _ = train_teacher(data_dir, ALIGNABLE, cfg)
    third, _, _ = train_teacher(data_dir, ALIGNABLE, replace(cfg, seed=1))
    a, b, c = first.state_dict(), second.state_dict(), third.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
