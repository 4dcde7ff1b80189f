"""Widthwise surgery: remove attention heads and MLP channels, keeping ``hidden_size``.

(Surgery lives with the architecture table in ``study.models`` so that loading a model with
per-layer widths, which must redo the slicing, needs nothing from ``study.pruning``.)

Heads go as coupled groups (q/k/v rows with the output projection's columns). With GQA either
whole key/value groups go (``mode="kv_groups"``: the group's query heads with it) or the same
number of query heads from every group (``mode="query_heads"``), so the model stays a valid
config. MLP channels go as intermediate rows of the input projections with the matching columns
of the output projection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from study.models.architectures import AttentionShape, DecoderSpec


@dataclass(frozen=True)
class LayerWidths:
    """What one decoder layer keeps: query heads, key/value heads, intermediate channels (sorted)."""

    q_heads: tuple[int, ...]
    kv_heads: tuple[int, ...]
    channels: tuple[int, ...]

    def to_json(self) -> dict:
        return {"q_heads": list(self.q_heads), "kv_heads": list(self.kv_heads), "channels": list(self.channels)}


def head_rows(heads: Sequence[int], head_dim: int) -> list[int]:
    return [h * head_dim + i for h in heads for i in range(head_dim)]


@torch.no_grad()
def slice_linear(linear: nn.Linear, rows: Sequence[int] | None = None, cols: Sequence[int] | None = None) -> nn.Linear:
    """A new ``nn.Linear`` holding only the given output rows and input columns: the kept values
    are copied once (no random initialisation, no second copy), and the old weight goes when the
    caller replaces the module."""
    weight, bias = linear.weight, linear.bias
    if rows is not None:
        index = torch.tensor(rows, device=weight.device)
        weight = weight.index_select(0, index)
        bias = bias.index_select(0, index) if bias is not None else None
    if cols is not None:
        weight = weight.index_select(1, torch.tensor(cols, device=weight.device))
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    out.weight = nn.Parameter(weight, requires_grad=linear.weight.requires_grad)
    if bias is not None:
        out.bias = nn.Parameter(bias, requires_grad=linear.bias.requires_grad)
    return out


def _set(layer: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = layer
    for attr in parent_path.split(".") if parent_path else []:
        parent = getattr(parent, attr)
    setattr(parent, name, module)


def check_widths(widths: LayerWidths, shape: AttentionShape, intermediate_size: int) -> None:
    """Raise if the kept heads do not form a valid (G)QA layout or nothing would be left."""
    if not widths.q_heads or not widths.kv_heads or not widths.channels:
        raise ValueError(f"a layer must keep at least one query head, one key/value head and one channel, got {widths}")
    per_group: dict[int, int] = {}
    for h in widths.q_heads:
        if not 0 <= h < shape.num_heads:
            raise ValueError(f"query head {h} out of range [0, {shape.num_heads})")
        per_group[h // shape.group_size] = per_group.get(h // shape.group_size, 0) + 1
    if sorted(per_group) != sorted(widths.kv_heads) or len(set(per_group.values())) != 1:
        raise ValueError(
            f"kept query heads {widths.q_heads} must keep the same number of heads in each kept key/value group {widths.kv_heads}"
        )
    if any(not 0 <= c < intermediate_size for c in widths.channels):
        raise ValueError(f"channel indices must be in [0, {intermediate_size})")


def prune_layer_width(layer: nn.Module, spec: DecoderSpec, shape: AttentionShape, widths: LayerWidths, intermediate_size: int) -> None:
    """Slice one decoder layer of ``shape`` with ``intermediate_size`` channels in place to
    ``widths``. A fused linear is sliced once, with the kept rows of each of its parts."""
    check_widths(widths, shape, intermediate_size)
    q_rows = head_rows(widths.q_heads, shape.head_dim)
    kv_rows = head_rows(widths.kv_heads, shape.head_dim)
    kept = {spec.q: q_rows, spec.k: kv_rows, spec.v: kv_rows, **dict.fromkeys(spec.mlp_in, widths.channels)}
    where = spec.part_rows(shape, intermediate_size)
    for path, parts in spec.row_stacks().items():
        rows = [where[part].start + r for part in parts for r in kept[part]]
        _set(layer, path, slice_linear(spec.module(layer, path), rows, None))
    _set(layer, spec.o, slice_linear(spec.module(layer, spec.o), None, q_rows))
    _set(layer, spec.mlp_out, slice_linear(spec.module(layer, spec.mlp_out), None, widths.channels))
    attention_path = spec.linear(spec.q).rpartition(".")[0]
    attention = spec.module(layer, attention_path) if attention_path else layer
    attention.num_key_value_groups = len(widths.q_heads) // len(widths.kv_heads)
    for name, value in (("num_heads", len(widths.q_heads)), ("num_key_value_heads", len(widths.kv_heads))):
        if hasattr(attention, name):
            setattr(attention, name, value)
    if spec.heads_from_config:
        shared = attention.config.shared if isinstance(attention.config, LayerHeads) else attention.config
        attention.config = LayerHeads(shared, len(widths.q_heads), len(widths.kv_heads))


class LayerHeads:
    """One layer's view of the shared backbone config, with the layer's own head counts and
    everything else read through (so the attention implementation in use stays the model's).
    Phi-3's attention splits ``qkv_proj`` by ``config.num_attention_heads`` at every forward: a
    layer with fewer heads than the config (per-layer widths, or before the config is updated)
    needs its own count."""

    def __init__(self, shared, num_attention_heads: int, num_key_value_heads: int):
        vars(self).update(shared=shared, num_attention_heads=num_attention_heads, num_key_value_heads=num_key_value_heads)

    def __getattr__(self, name: str):  # only what the instance itself does not hold
        if name == "shared" or name.startswith("__"):  # while copy / pickle rebuild the instance
            raise AttributeError(name)
        return getattr(self.shared, name)
