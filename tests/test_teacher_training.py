"""Pieces of the teacher recipe on a tiny model and a tiny synthetic dataset."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from PIL import Image

from study.data.llava import read_samples
from study.data.synthetic import DataConfig, generate_dataset
from study.models.io import link_checkpoint, load_model, save_model
from study.models.teacher import build_processor, build_teacher
from study.models.teacher_training import TeacherTraining, init_projector, instruction_tune, pretrain_vision, vision_features


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    generate_dataset(DataConfig(n_train=64, n_eval_per_family=4, seed=1), out)
    return out


@pytest.fixture
def teacher(data_dir, tiny_arch):
    samples = read_samples(data_dir / "train.json")
    processor = build_processor((t["value"] for s in samples for t in s["conversations"]), tiny_arch)
    return build_teacher(tiny_arch, processor, seed=0), processor


def test_projector_init_puts_image_tokens_on_the_text_embedding_scale(teacher, data_dir):
    model, processor = teacher
    init_projector(model, processor, data_dir, n_images=32)
    pixels = processor.image_processor([Image.open(data_dir / "images/train/000000.png")] * 2, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        tokens = model.model.multi_modal_projector(vision_features(model, pixels))
    text_norm = model.get_input_embeddings().weight.norm(dim=-1).mean()
    assert tokens.norm(dim=-1).mean() == pytest.approx(float(text_norm), rel=0.5)


def test_vision_pretraining_trains_only_the_tower(teacher, data_dir):
    model, processor = teacher
    llm_before = {k: v.clone() for k, v in model.model.language_model.state_dict().items()}
    tower_before = {k: v.clone() for k, v in model.model.vision_tower.state_dict().items()}
    log = pretrain_vision(model, processor, data_dir, TeacherTraining(vision_steps=2, vision_batch_size=8))
    assert len(log) == 2 and {"acc_colour", "acc_shape", "acc_cell"} <= set(log[0])
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


def test_the_recipe_is_deterministic_by_seed(data_dir, tiny_arch):
    from study.models.teacher_training import train_teacher

    cfg = TeacherTraining(vision_steps=2, vision_batch_size=8, steps=2, batch_size=8, warmup_steps=1)
    first, _, _ = train_teacher(data_dir, tiny_arch, cfg)
    second, _, _ = train_teacher(data_dir, tiny_arch, cfg)
    third, _, _ = train_teacher(data_dir, tiny_arch, replace(cfg, seed=1))
    a, b, c = first.state_dict(), second.state_dict(), third.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
