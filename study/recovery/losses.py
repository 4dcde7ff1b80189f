"""Recovery losses, each a small function on tensors (answer tokens only).

Positions: the logits at position t predict token t + 1, so a logit row counts when the *next*
label is an answer token (``labels[:, 1:] != -100``), exactly the rows HF's causal-LM loss uses.

- :func:`kd_logit_loss`: KL between teacher and student next-token distributions at temperature
  tau, times tau^2 (Hinton et al.) so gradients keep their scale across temperatures. ``forward``
  is KL(teacher || student) = sum p_t (log p_t - log p_s), the usual distillation objective;
  ``reverse`` is KL(student || teacher).
- :func:`kd_hidden_loss`: MSE (or 1 - cosine) between student and teacher hidden states on answer
  tokens, at the output of chosen student blocks matched to the teacher blocks they came from
  (``layer_map`` of a layer-pruned student; the identity for width-pruned ones).
- :func:`loss_weights` and :func:`combine`: the weight of each term (``alpha * KD + (1 - alpha) * CE``
  when both are on, plus ``hidden_weight`` times the hidden loss) and their weighted sum, the one
  place the total training loss is made.
"""

from __future__ import annotations

import operator
from collections.abc import Collection, Sequence
from functools import reduce

import torch
import torch.nn.functional as F

from study.data.llava import IGNORE_INDEX


def answer_rows(labels: torch.Tensor) -> torch.Tensor:
    """Boolean mask over logit positions [:, :-1] whose next token is an answer token."""
    return labels[:, 1:] != IGNORE_INDEX


def kd_logit_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float = 2.0, direction: str = "forward"
) -> torch.Tensor:
    """Mean over answer positions of KL at ``temperature``, scaled by temperature**2."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}")
    rows = answer_rows(labels)
    s = F.log_softmax(student_logits[:, :-1][rows].float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits[:, :-1][rows].float() / temperature, dim=-1)
    if rows.sum() == 0:
        return student_logits.sum() * 0.0
    p, log_p, log_q = (t.exp(), t, s) if direction == "forward" else (s.exp(), s, t)
    return (p * (log_p - log_q)).sum(-1).mean() * temperature**2


def kd_hidden_loss(
    student_hidden: Sequence[torch.Tensor],
    teacher_hidden: Sequence[torch.Tensor],
    labels: torch.Tensor,
    student_layers: Sequence[int] | None = None,
    layer_map: Sequence[int] | None = None,
    kind: str = "mse",
) -> torch.Tensor:
    """Distance between hidden states at the output of ``student_layers`` (default: the last
    block) and of the teacher blocks ``layer_map`` sends them to, over answer positions.

    ``*_hidden`` are HF ``hidden_states`` tuples: index 0 is the embeddings, index i + 1 the
    output of block i. The last entry is the final representation fed to the LM head (after the
    final norm), so the student's last block is always matched with the teacher's last entry,
    whichever parent block it came from.
    """
    n_student = len(student_hidden) - 1
    layer_map = list(layer_map) if layer_map is not None else list(range(n_student))
    if len(layer_map) != n_student:
        raise ValueError(f"layer_map has {len(layer_map)} entries for a student with {n_student} blocks")
    student_layers = list(student_layers) if student_layers is not None else [n_student - 1]
    if kind not in ("mse", "cosine"):
        raise ValueError(f"kind must be 'mse' or 'cosine', got {kind!r}")
    rows = torch.cat([answer_rows(labels), torch.zeros_like(labels[:, :1], dtype=torch.bool)], dim=1)  # position t feeds token t+1
    losses = []
    for i in student_layers:
        if not 0 <= i < n_student:
            raise ValueError(f"student layer {i} out of range [0, {n_student})")
        s = student_hidden[i + 1][rows].float()
        t = teacher_hidden[-1 if i == n_student - 1 else layer_map[i] + 1][rows].float()
        if kind == "mse":
            losses.append(F.mse_loss(s, t))
        else:
            losses.append((1 - F.cosine_similarity(s, t, dim=-1)).mean())
    return torch.stack(losses).mean()


def loss_weights(parts: Collection[str], kd_alpha: float = 0.5, hidden_weight: float = 1.0) -> dict[str, float]:
    """The weight of each computed loss (``ce``, ``kd_logit``, ``kd_hidden``) for the loss parts
    ``sft``, ``kd_logit``, ``kd_hidden``: ``kd_alpha`` on KD and ``1 - kd_alpha`` on CE when both
    are on (else weight 1 on the one that is), ``hidden_weight`` on the hidden loss."""
    weights: dict[str, float] = {}
    if "kd_logit" in parts and "sft" in parts:
        weights = {"kd_logit": kd_alpha, "ce": 1 - kd_alpha}
    elif "kd_logit" in parts:
        weights = {"kd_logit": 1.0}
    elif "sft" in parts:
        weights = {"ce": 1.0}
    if "kd_hidden" in parts:
        weights["kd_hidden"] = hidden_weight
    return weights


def combine(losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Weighted sum of the named losses, added in the order of ``weights`` (missing weights count
    as 0 and terms of weight 0 are left out; at least one weight must be > 0)."""
    unknown = set(weights) - set(losses)
    if unknown:
        raise ValueError(f"weights for losses that were not computed: {sorted(unknown)}")
    if not any(w > 0 for w in weights.values()):
        raise ValueError(f"at least one loss weight must be > 0, got {weights}")
    return reduce(operator.add, (w * losses[name] for name, w in weights.items() if w))
