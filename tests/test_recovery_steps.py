"""The pieces ``recover`` is made of, on hand-made tensors and stand-in models (no training)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from study.recovery.losses import combine, kd_hidden_loss, kd_logit_loss, loss_weights
from study.recovery.train import RecoveryConfig, TrainingData, epoch_order, loss_step, optimizer_steps, parse_loss, resume

LABELS = torch.tensor([[-100, 3, 1, -100], [-100, -100, 2, 0]])


class Fixed(torch.nn.Module):
    """A stand-in model that returns the same hand-made outputs whatever the batch."""

    def __init__(self, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.logits = torch.nn.Parameter(torch.randn(2, 4, 5, generator=g))
        self.hidden = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(2, 4, 3, generator=g)) for _ in range(4))
        self.ce = torch.nn.Parameter(torch.rand((), generator=g) + 1)
        self.calls: list[dict] = []

    def forward(self, output_hidden_states=False, **batch):
        self.calls.append({**batch, "output_hidden_states": output_hidden_states})
        return SimpleNamespace(loss=self.ce * 1, logits=self.logits * 1, hidden_states=tuple(h * 1 for h in self.hidden))


@pytest.mark.parametrize(
    "loss", ["sft", "kd_logit", "kd_hidden", "sft+kd_logit", "sft+kd_hidden", "kd_logit+kd_hidden", "sft+kd_logit+kd_hidden"]
)
def test_the_loss_step_total_is_combine_of_its_terms(loss):
    cfg = RecoveryConfig(loss=loss, kd_alpha=0.3, hidden_weight=0.7, temperature=1.5, hidden_layers=[0, 2])
    student, teacher = Fixed(0), Fixed(1)
    batch = {"input_ids": torch.zeros(2, 4, dtype=torch.long), "labels": LABELS}
    losses = loss_step(student, teacher if loss != "sft" else None, batch, cfg, layer_map=[0, 2, 3])
    expected = {}
    if "sft" in loss:
        expected["ce"] = student.ce
    if "kd_logit" in loss:
        expected["kd_logit"] = kd_logit_loss(student.logits, teacher.logits, LABELS, 1.5)
    if "kd_hidden" in loss:
        expected["kd_hidden"] = kd_hidden_loss(tuple(student.hidden), tuple(teacher.hidden), LABELS, [0, 2], [0, 2, 3])
    assert list(losses) == [*expected, "total"]  # the curve's columns, in this order
    assert all(torch.equal(losses[k], v) for k, v in expected.items())
    assert torch.equal(losses["total"], combine(expected, loss_weights(parse_loss(loss), 0.3, 0.7)))
    assert losses["total"].requires_grad
    if loss != "sft":  # the teacher sees no labels
        assert "labels" not in teacher.calls[0]
        assert student.calls[0]["labels"] is LABELS
    assert student.calls[0]["output_hidden_states"] == ("kd_hidden" in loss)


def test_the_loss_step_passes_the_answer_token_count_of_all_processes_to_the_student():
    student = Fixed(0)
    loss_step(student, None, {"labels": LABELS}, RecoveryConfig(loss="sft"), answer_tokens=torch.tensor(2.5))
    assert student.calls[0]["num_items_in_batch"] == 2.5
    loss_step(student, None, {"labels": LABELS}, RecoveryConfig(loss="sft"))
    assert "num_items_in_batch" not in student.calls[1]


def test_the_total_is_the_mix_of_the_recovery_recipe():
    ce, kd, hid = torch.tensor(2.0), torch.tensor(4.0), torch.tensor(8.0)
    cfg = RecoveryConfig(kd_alpha=0.25, hidden_weight=0.5)
    terms = {"ce": ce, "kd_logit": kd, "kd_hidden": hid}
    assert combine(terms, loss_weights({"sft", "kd_logit", "kd_hidden"}, cfg.kd_alpha, cfg.hidden_weight)) == 0.25 * 4 + 0.75 * 2 + 0.5 * 8
    assert combine(terms, loss_weights({"kd_logit"}, cfg.kd_alpha, cfg.hidden_weight)) == 4.0  # alpha only mixes KD with CE


class Loads:
    """A stand-in accelerator for the pieces that only load state or prepare loaders."""

    def __init__(self):
        self.loaded: list[str] = []

    def load_state(self, path):
        self.loaded.append(path)

    def print(self, *args):
        pass

    def prepare_data_loader(self, loader):
        return loader


def test_resume_loads_the_latest_complete_checkpoint(tmp_path):
    accelerator = Loads()
    assert resume(accelerator, tmp_path / "none") == 0 and accelerator.loaded == []
    for name in ("step-2", "step-10", "step-9", ".step-12.partial"):
        (tmp_path / name).mkdir()
    assert resume(accelerator, tmp_path) == 10
    assert accelerator.loaded == [str(tmp_path / "step-10")]


def test_training_data_skips_into_the_same_epoch_order():
    items = [{"input_ids": torch.tensor([i]), "attention_mask": torch.tensor([1]), "labels": torch.tensor([i])} for i in range(10)]
    data = TrainingData(items, pad_token_id=0, batch_size=3, seed=4)
    assert data.batches_per_epoch == 3
    batches = [b["input_ids"].flatten().tolist() for b in data.loader(Loads(), epoch=1)]
    order = epoch_order(10, 4, 1)
    assert batches == [order[0:3], order[3:6], order[6:9]]  # full batches only
    assert [b["input_ids"].flatten().tolist() for b in data.loader(Loads(), epoch=1, skip=2)] == batches[2:]
    assert [b["input_ids"].flatten().tolist() for b in data.loader(Loads(), epoch=2)] != batches


def test_optimizer_steps_cover_the_epochs_in_whole_steps():
    cfg = RecoveryConfig()
    assert optimizer_steps(cfg, 6) == 6
    assert optimizer_steps(replace(cfg, grad_accum=4), 6) == 2
    assert optimizer_steps(replace(cfg, epochs=0.1), 6) == 1
    assert optimizer_steps(replace(cfg, epochs=0.01), 6) == 1  # never zero
