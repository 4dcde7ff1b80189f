"""Pruning a LLaVA-style model's language backbone to a compression level, in place.

A compression level (``ratio``) is the fraction of decoder-layer parameters removed (vision
tower, projector, embeddings and LM head untouched). Layerwise: ``round(ratio * L)`` whole blocks.
Widthwise (uniform, the same widths in every layer so the result is a stock HF config):
``round(ratio * units)`` attention units (query heads per KV group, or whole KV groups), then as
many MLP channels as bring the layer to the same parameter budget. Hybrid (depth + width): whole
blocks for ``depth_share`` of the budget, then the remaining blocks widthwise for the rest (see
:func:`hybrid_split`), with a metric ``<layer metric>+<width metric>`` such as
``block_influence+taylor``. All report the achieved level. The returned record is what
``pruning.json`` holds.

Matched budgets (``match_budget="layer"``, the default): a layerwise cut can only remove whole
blocks, so at a level it removes ``round(ratio * L) / L`` of the decoder (on 8 blocks, 30% is
25%). Width and hybrid runs then prune to that *budget* instead of the requested level, so that
the paradigms compared at a level have lost the same number of parameters; the record keeps the
requested level (the run's label) beside the budget and the achieved level.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from study.config import default
from study.config.sections import PruneConfig
from study.config.vocabulary import MATCH_BUDGETS, MODES, check_method, check_ratio, split_hybrid_metric
from study.models.architectures import AttentionShape, DecoderSpec, attention_shape, decoder_spec, heads_fixed, stock_text_config
from study.models.families import family, fixed_blocks
from study.models.layers import decoder_layer_params, decoder_layers, drop_layers, set_text_config, text_config
from study.models.width import LayerWidths, prune_layer_width
from study.pruning.importance import layer_scores, width_saliency

DEPTH_SHARE = default(PruneConfig, "depth_share")
MATCH_BUDGET = default(PruneConfig, "match_budget")
ROUND_TO = default(PruneConfig, "round_to")


def prune(
    model: nn.Module,
    paradigm: str,
    ratio: float,
    metric: str,
    batches: Iterable[dict] = (),
    mode: str = "query_heads",
    seed: int = 0,
    spare: tuple[int, int] = (0, 0),
    depth_share: float = DEPTH_SHARE,
    round_to: int = ROUND_TO,
    scores: dict | None = None,
    match_budget: str = MATCH_BUDGET,
) -> dict:
    """Prune ``model`` in place; return the ``pruning.json`` record (without the parent path).

    ``scores``: importance computed beforehand by
    :func:`study.pruning.importance.importance_scores` for this model, method and calibration (one
    pass serves every level); without them they are computed here from ``batches``.

    ``spare=(first, last)`` (widthwise, and hybrid among the blocks it keeps) leaves that many
    first and last layers at full width and prunes the others harder to the same budget, as
    LLM-Pruner does. The widths then
    differ between layers, which no stock config can express: such a folder loads with
    :func:`study.models.io.load_model` (which rebuilds it from ``pruning.json``), not with plain
    ``from_pretrained``. ``depth_share`` (hybrid only): see :func:`hybrid_split`; ``round_to``
    (width and hybrid): see :func:`width_plan`. When the backbone's stock config refuses the kept
    head count, the config becomes an equivalent stock one
    (:func:`study.models.architectures.stock_text_config`); the record names both.
    ``match_budget``: ``layer`` prunes width and hybrid runs to :func:`layer_budget` of ``ratio``,
    ``none`` to ``ratio`` itself; ``budget_ratio`` in the record is what the run pruned to (a
    layerwise run's is always its whole blocks)."""
    check_ratio(ratio)
    if match_budget not in MATCH_BUDGETS:
        raise ValueError(f"unknown match_budget {match_budget!r}; expected one of {MATCH_BUDGETS}")
    check_method(paradigm, metric)
    family(model)  # unsupported families fail before any work, and backbones width cannot slice
    if paradigm != "layer":
        decoder_spec(model)
    before = decoder_layer_params(model)
    n_layers = len(decoder_layers(model))
    budget = layer_budget(ratio, n_layers) if match_budget == "layer" or paradigm == "layer" else ratio
    if budget >= 1 and paradigm != "layer":  # a layerwise cut says it would remove every block
        raise ValueError(
            f"ratio {ratio} matched to a layerwise cut would remove all {n_layers} blocks' parameters "
            f"(round({ratio} * {n_layers}) = {n_layers}): lower it, or set match_budget none"
        )
    record = {
        "paradigm": paradigm,
        "requested_ratio": ratio,
        "match_budget": match_budget,
        "budget_ratio": budget,
        "metric": metric,
        "seed": seed,
        "num_layers_before": n_layers,
    }
    model_type = text_config(model).model_type
    if paradigm != "layer" and mode not in MODES:
        raise ValueError(f"unknown width mode {mode!r}; expected one of {MODES}")
    scores = scores or {}
    if paradigm == "layer":
        record.update(_prune_layers(model, ratio, metric, batches, seed, scores.get("layer")))
    elif paradigm == "width":
        record.update(_prune_width(model, budget, metric, batches, mode, spare, round_to, scores.get("width")))
    else:
        record.update(_prune_hybrid(model, budget, metric, batches, mode, seed, spare, depth_share, round_to, scores.get("layer")))
    after = decoder_layer_params(model)
    record.update(decoder_params_before=before, decoder_params_after=after, achieved_ratio=1 - after / before)
    record["model_type"] = {"original": model_type, "saved": text_config(model).model_type}
    return record


def layer_budget(ratio: float, n_layers: int) -> float:
    """The fraction of ``n_layers`` equal blocks that a layerwise cut at ``ratio`` removes:
    ``round(ratio * n_layers) / n_layers``."""
    return round(ratio * n_layers) / n_layers


def _prune_layers(model: nn.Module, ratio: float, metric: str, batches: Iterable[dict], seed: int, given) -> dict:
    n_layers = len(decoder_layers(model))
    n_remove = round(ratio * n_layers)
    if n_remove >= n_layers:
        raise ValueError(f"ratio {ratio} would remove all {n_layers} decoder layers")
    return _drop_blocks(model, n_remove, metric, batches, seed, given)


def _drop_blocks(model: nn.Module, n_remove: int, metric: str, batches: Iterable[dict], seed: int, given=None) -> dict:
    """Remove the ``n_remove`` least important blocks by ``metric`` (``given``: the scores of
    :func:`~study.pruning.importance.importance_scores`); the layerwise part of a record."""
    n_layers = len(decoder_layers(model))
    if n_remove == 0:
        return {"removed_layers": [], "layer_map": list(range(n_layers)), "scores": []}
    if given is None:
        scores = layer_scores(model, metric, batches, n_remove, seed)
    else:
        scores = given[n_remove] if metric == "angular" else given
    fixed = fixed_blocks(model)
    if n_remove > n_layers - fixed:
        raise ValueError(f"cannot remove {n_remove} of {n_layers} blocks: the first {fixed} receive vision features and stay")
    candidates = range(fixed, n_layers)
    if metric == "angular":  # the contiguous run with the smallest distance
        start = min(candidates, key=lambda i: scores[i])
        removed = list(range(start, start + n_remove))
    else:
        removed = sorted(sorted(candidates, key=lambda i: scores[i])[:n_remove])
    drop_layers(model, removed)
    return {
        "removed_layers": removed,
        "layer_map": [i for i in range(n_layers) if i not in removed],  # student block -> parent block
        "scores": [s if math.isfinite(s) else None for s in scores],
    } | ({"fixed_blocks": fixed} if fixed else {})


def unit_sizes(layer: nn.Module, spec: DecoderSpec, shape: AttentionShape) -> dict[str, int]:
    """Parameters removed with one query head, one key/value group (k and v rows only) and one MLP channel."""

    def rows(path: str) -> int:  # parameters per output row of a linear
        lin = spec.module(layer, path)
        return lin.in_features + (1 if lin.bias is not None else 0)

    o = spec.module(layer, spec.o)
    return {
        "q_head": shape.head_dim * (rows(spec.q) + o.out_features),
        "kv_group": shape.head_dim * (rows(spec.k) + rows(spec.v)),
        "channel": sum(rows(p) for p in spec.mlp_in) + spec.module(layer, spec.mlp_out).out_features,
    }


def effective_mode(mode: str, shape: AttentionShape) -> str:
    """Without GQA (one query head per key/value head, as in Vicuna or Phi-2) a head *is* a group."""
    return "kv_groups" if shape.group_size == 1 else mode


def width_plan(model: nn.Module, ratio: float, mode: str, round_to: int = ROUND_TO) -> dict[str, int]:
    """How many query heads per group / KV groups and MLP channels each layer loses at ``ratio``.

    Attention keeps ``round((1 - ratio) * units)`` of its units (query heads per KV group, or KV
    groups), as LLM-Pruner's block-wise plan removes heads and channels in the same proportion;
    the MLP channels then meet the layer's parameter budget (all of it where the backbone's heads
    are fixed: :func:`~study.models.architectures.heads_fixed`). With ``round_to`` > 1 the kept
    channels, and the kept query (and key/value) width where a multiple of its head width can
    reach it, are multiples of ``round_to``: aligned matrix shapes run faster on GPUs, at the cost
    of an achieved level further from the requested one (the record reports it)."""
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1, got {round_to}")
    spec, shape = decoder_spec(model), attention_shape(model)
    sizes = unit_sizes(decoder_layers(model)[0], spec, shape)
    mode = effective_mode(mode, shape)
    intermediate = text_config(model).intermediate_size
    budget = ratio * sum(p.numel() for p in decoder_layers(model)[0].parameters())
    if mode == "query_heads":  # the same number of query heads from each group
        units, width, what = shape.group_size, shape.num_kv_heads * shape.head_dim, "query heads per KV group"
    else:  # whole groups (with MHA a group is one head)
        units, width, what = shape.num_kv_heads, shape.head_dim, "key/value groups"
    step = round_to // math.gcd(round_to, width)  # kept units whose width is a multiple of round_to
    fixed = heads_fixed(model)
    kept = units if fixed else round((1 - ratio) * units)
    if kept < 1:
        raise ValueError(f"ratio {ratio} would remove every one of the {units} {what} (round((1 - {ratio}) * {units}) = 0)")
    if 1 < step <= units and not fixed:
        kept = max(step, round(kept / step) * step)
    removed = units - kept
    if mode == "query_heads":
        heads_per_group, groups, attention = removed, 0, removed * shape.num_kv_heads * sizes["q_head"]
    else:
        heads_per_group, groups, attention = 0, removed, removed * (sizes["kv_group"] + shape.group_size * sizes["q_head"])
    channels = min(max(0, round((budget - attention) / sizes["channel"])), intermediate)
    if round_to > 1:
        channels = intermediate - max(round_to, round((intermediate - channels) / round_to) * round_to)
    if channels >= intermediate:
        raise ValueError(f"ratio {ratio} would remove every MLP channel ({intermediate})")
    return {"q_heads_per_group": heads_per_group, "kv_groups": groups, "channels": max(channels, 0)}


def unit_scores(lines: dict[str, torch.Tensor], spec: DecoderSpec, shape: AttentionShape) -> dict[str, torch.Tensor]:
    """Saliency summed over each coupled group, from each weight's row or column sums
    (:func:`study.pruning.importance.width_saliency`): per query head, per KV group, per MLP channel."""
    hd = shape.head_dim
    q = lines[spec.q].view(shape.num_heads, hd).sum(1) + lines[spec.o].view(shape.num_heads, hd).sum(1)
    kv = (lines[spec.k] + lines[spec.v]).view(shape.num_kv_heads, hd).sum(1)
    channels = sum(lines[p] for p in spec.mlp_in) + lines[spec.mlp_out]
    return {"q_heads": q, "kv_groups": kv + q.view(shape.num_kv_heads, shape.group_size).sum(1), "channels": channels}


def choose_widths(scores: dict[str, torch.Tensor], shape: AttentionShape, plan: dict[str, int]) -> LayerWidths:
    """Keep the highest-scoring units (indices sorted, so kept heads stay grouped by KV head)."""

    def top(values: torch.Tensor, k: int) -> list[int]:
        return sorted(torch.topk(values, k).indices.tolist())

    kv = top(scores["kv_groups"], shape.num_kv_heads - plan["kv_groups"])
    keep_per_group = shape.group_size - plan["q_heads_per_group"]
    q = []
    for g in kv:
        first = g * shape.group_size
        q += [first + i for i in top(scores["q_heads"][first : first + shape.group_size], keep_per_group)]
    channels = top(scores["channels"], len(scores["channels"]) - plan["channels"])
    return LayerWidths(tuple(q), tuple(kv), tuple(channels))


def _prune_width(
    model: nn.Module,
    ratio: float,
    metric: str,
    batches: Iterable[dict],
    mode: str,
    spare: tuple[int, int],
    round_to: int,
    given: list[dict[str, torch.Tensor]] | None = None,
) -> dict:
    spec, shape = decoder_spec(model), attention_shape(model)
    config = text_config(model)
    mode = effective_mode(mode, shape)
    layers = decoder_layers(model)
    first, last = spare
    pruned = [i for i in range(len(layers)) if first <= i < len(layers) - last]
    if first < 0 or last < 0 or not pruned:
        raise ValueError(f"spare=(first, last) must leave some of the {len(layers)} layers to prune, got {spare}")
    layer_ratio = ratio * len(layers) / len(pruned)
    if layer_ratio >= 1:
        raise ValueError(f"ratio {ratio} with {len(layers) - len(pruned)} spared layers needs more than every parameter of the others")
    plan = width_plan(model, layer_ratio, mode, round_to)
    full = LayerWidths(tuple(range(shape.num_heads)), tuple(range(shape.num_kv_heads)), tuple(range(config.intermediate_size)))
    record = {
        "mode": mode,
        "round_to": round_to,
        "plan": plan,
        "spare": list(spare),
        "nonuniform": bool(first or last) and any(plan.values()),
    }
    if not any(plan.values()):
        return record | {"widths": [full.to_json()] * len(layers)}
    saliency = width_saliency(model, metric, batches) if given is None else given
    widths = [choose_widths(unit_scores(s, spec, shape), shape, plan) if i in pruned else full for i, s in enumerate(saliency)]
    for layer, w in zip(layers, widths):
        prune_layer_width(layer, spec, shape, w, config.intermediate_size)
    config.head_dim = shape.head_dim  # explicit: hidden_size / heads no longer gives it
    if not record["nonuniform"]:  # a stock config describes the model
        config.num_attention_heads = len(widths[0].q_heads)
        config.num_key_value_heads = len(widths[0].kv_heads)
        config.intermediate_size = len(widths[0].channels)
        set_text_config(model, stock_text_config(config))
    return record | {"widths": [w.to_json() for w in widths]}


def hybrid_split(ratio: float, n_layers: int, depth_share: float = DEPTH_SHARE) -> tuple[int, float]:
    """How a hybrid cut of ``ratio`` spends its budget: ``(blocks to drop, width ratio of every
    remaining block)``.

    ``round(depth_share * ratio * n_layers)`` whole blocks go (never more than ``ratio`` of the
    blocks, so the width part is never negative); the remaining blocks then each lose the fraction
    that brings the total to ``ratio`` of the decoder-layer parameters, ``(ratio * L - n) / (L - n)``
    (blocks of equal size). The width part absorbs the rounding to whole blocks, so the achieved
    level is as close to the requested one as widthwise pruning gets (a channel per layer).
    ``depth_share`` 0 is widthwise pruning, 1 as much depth as whole blocks allow."""
    if not 0 <= depth_share <= 1:
        raise ValueError(f"depth_share must be in [0, 1], got {depth_share}")
    n_remove = min(round(depth_share * ratio * n_layers), math.floor(ratio * n_layers + 1e-9))
    return n_remove, max(0.0, (ratio * n_layers - n_remove) / (n_layers - n_remove))


def _prune_hybrid(
    model: nn.Module,
    ratio: float,
    metric: str,
    batches: Iterable[dict],
    mode: str,
    seed: int,
    spare: tuple[int, int],
    depth_share: float,
    round_to: int,
    given_layer=None,
) -> dict:
    layer_metric, width_metric = split_hybrid_metric(metric)
    n_remove, width_ratio = hybrid_split(ratio, len(decoder_layers(model)), depth_share)
    batches = list(batches)  # scored twice: the blocks of the whole model, then the widths of the rest
    depth = _drop_blocks(model, n_remove, layer_metric, batches, seed, given_layer)
    # widths are scored on the model without the dropped blocks: what the kept blocks will see
    width = _prune_width(model, width_ratio, width_metric, batches, mode, spare, round_to)
    split = {"layer_metric": layer_metric, "width_metric": width_metric, "depth_share": depth_share, "width_ratio": width_ratio}
    return split | depth | width  # ``widths[i]`` is student block i, i.e. parent block ``layer_map[i]``
