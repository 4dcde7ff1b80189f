"""Recovery losses on hand-computed tensors."""

from __future__ import annotations

import math

import pytest
import torch

from study.recovery.losses import combine, kd_hidden_loss, kd_logit_loss, loss_weights

# one sequence of 3 positions; only position 0's next token (label at 1) is an answer
LABELS = torch.tensor([[-100, 5, -100]])


def logits_for(probs_at_0: list[float]) -> torch.Tensor:
    out = torch.randn(1, 3, 2) * 10  # rows that must be ignored: garbage
    out[0, 0] = torch.log(torch.tensor(probs_at_0))
    return out


def test_forward_kl_is_teacher_to_student_and_reverse_the_other_way():
    teacher, student = logits_for([0.5, 0.5]), logits_for([0.9, 0.1])
    forward = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    reverse = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert kd_logit_loss(student, teacher, LABELS, temperature=1.0) == pytest.approx(forward, rel=1e-5)
    assert kd_logit_loss(student, teacher, LABELS, temperature=1.0, direction="reverse") == pytest.approx(reverse, rel=1e-5)
    assert forward != pytest.approx(reverse)


def test_temperature_softens_and_scales_by_its_square():
    teacher, student = logits_for([0.5, 0.5]), logits_for([0.8, 0.2])
    tau = 2.0
    s = torch.softmax(student[0, 0] / tau, -1)
    t = torch.softmax(teacher[0, 0] / tau, -1)
    expected = float((t * (t.log() - s.log())).sum()) * tau**2
    assert kd_logit_loss(student, teacher, LABELS, temperature=tau) == pytest.approx(expected, rel=1e-5)


def test_identical_student_and_teacher_give_zero_kd():
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, 1, 2, -100, 3], [-100, -100, 4, 4, 4]])
    assert kd_logit_loss(logits, logits.clone(), labels) == pytest.approx(0.0, abs=1e-6)
    hidden = tuple(torch.randn(2, 5, 4) for _ in range(4))
    assert kd_hidden_loss(hidden, hidden, labels) == pytest.approx(0.0, abs=1e-7)


def test_masked_positions_do_not_count():
    teacher, student = logits_for([0.5, 0.5]), logits_for([0.5, 0.5])
    assert kd_logit_loss(student, teacher, LABELS, temperature=1.0) == pytest.approx(0.0, abs=1e-6)


def test_hidden_loss_uses_the_layer_map_of_a_layer_pruned_student():
    labels = torch.tensor([[-100, 1, -100]])  # answer row: position 0
    teacher = tuple(torch.full((1, 3, 2), float(i)) for i in range(5))  # embeddings + 4 blocks
    student = tuple(torch.full((1, 3, 2), float(i)) for i in (0, 1, 3, 4))  # kept blocks 0, 2, 3
    # student block 1 is parent block 2: hidden index 3 on both sides -> zero distance
    assert kd_hidden_loss(student, teacher, labels, student_layers=[1], layer_map=[0, 2, 3]) == 0.0
    # without the map it is compared with parent block 1 (value 2 vs 3): MSE 1
    assert kd_hidden_loss(student, teacher, labels, student_layers=[1], layer_map=[0, 1, 2]) == 1.0
    # the last block is matched with the teacher's final representation
    assert kd_hidden_loss(student, teacher, labels, layer_map=[0, 2, 3]) == 0.0
    cos = kd_hidden_loss(student, teacher, labels, student_layers=[1], layer_map=[0, 1, 2], kind="cosine")
    assert cos == pytest.approx(0.0, abs=1e-6)  # parallel vectors


def test_bad_arguments():
    x = torch.randn(1, 3, 2)
    with pytest.raises(ValueError, match="temperature"):
        kd_logit_loss(x, x, LABELS, temperature=0)
    with pytest.raises(ValueError, match="direction"):
        kd_logit_loss(x, x, LABELS, direction="sideways")
    with pytest.raises(ValueError, match="shape"):
        kd_logit_loss(x, torch.randn(1, 3, 3), LABELS)
    hidden = tuple(torch.randn(1, 3, 2) for _ in range(3))
    with pytest.raises(ValueError, match="layer_map has 1 entries"):
        kd_hidden_loss(hidden, hidden, LABELS, layer_map=[0])
    with pytest.raises(ValueError, match="out of range"):
        kd_hidden_loss(hidden, hidden, LABELS, student_layers=[5])


def test_combine_weights():
    losses = {"ce": torch.tensor(2.0), "kd_logit": torch.tensor(4.0)}
    assert combine(losses, {"ce": 0.5, "kd_logit": 0.5}) == 3.0
    with pytest.raises(ValueError, match="not computed"):
        combine(losses, {"kd_hidden": 1.0})
    with pytest.raises(ValueError, match="> 0"):
        combine(losses, {"ce": 0.0})


def test_loss_weights_mix_kd_with_ce_only_when_both_are_on():
    assert loss_weights({"sft"}) == {"ce": 1.0}
    assert loss_weights({"kd_logit"}, kd_alpha=0.3) == {"kd_logit": 1.0}
    assert loss_weights({"sft", "kd_logit"}, kd_alpha=0.3) == {"kd_logit": 0.3, "ce": 0.7}
    assert loss_weights({"kd_hidden"}, hidden_weight=2.0) == {"kd_hidden": 2.0}
    assert loss_weights({"sft", "kd_logit", "kd_hidden"}, 0.5, 0.1) == {"kd_logit": 0.5, "ce": 0.5, "kd_hidden": 0.1}


def test_combine_adds_in_the_order_of_the_weights_and_leaves_out_zero_weights():
    big, one = torch.tensor(1e8), torch.tensor(1.0)  # float32: 1e8 + 1 rounds back to 1e8
    losses = {"a": big, "b": one, "c": -big}
    assert combine(losses, {"a": 1.0, "b": 1.0, "c": 1.0}) == 0.0
    assert combine(losses, {"a": 1.0, "c": 1.0, "b": 1.0}) == 1.0
    nan = {"ce": torch.tensor(2.0), "kd_logit": torch.tensor(float("nan"))}
    assert combine(nan, {"ce": 1.0, "kd_logit": 0.0}) == 2.0
