"""Importance scores from calibration batches, streamed one batch at a time.

Layerwise (one score per decoder block; higher = more important):
- ``block_influence``: ShortGPT's 1 - cos(block input, block output), averaged over tokens;
- ``angular``: Gromov et al.'s angular distance arccos(cos(h_l, h_{l+n})) / pi between the input
  of block l and the input of block l+n; the run of n blocks with the smallest distance goes, so
  each block's score is the distance of the run it starts (blocks that start no run score +inf);
- ``loss``: how much the calibration loss rises when the block is skipped;
- ``last`` / ``random``: baselines (the last blocks, or blocks chosen by seed, score lowest).

Widthwise (a saliency per weight element, kept only as its sums over each weight row or column,
which coupled groups then add up; a fused linear's row sums are cut into its parts', e.g. Phi-3's
``qkv_proj`` into the query, key and value rows):
- ``magnitude_l1`` / ``magnitude_l2``: |w| or w^2;
- ``taylor``: LLM-Pruner's first-order ``param_first``, |w * dL/dw| of the calibration loss, each
  weight's gradient reduced to its sums and freed as soon as backward writes it;
- ``activation``: Wanda-sp, |w| * ||x|| for the input columns of the output projections (o_proj /
  dense and down_proj / fc2), with ||x|| the L2 norm of that input over calibration tokens.

Calibration batches stay on the CPU; each is moved to the model's device (and its floating-point
inputs to the model's dtype) when its turn comes, and the running sums are kept on the CPU in
float64.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

import torch
from torch import nn
from tqdm import tqdm  # text bars: readable in stage logs and executed notebooks

from study.config.vocabulary import LAYER_METRICS, WIDTH_METRICS, split_hybrid_metric
from study.models.architectures import DecoderSpec, attention_shape, decoder_spec
from study.models.device import move_to_model
from study.models.layers import block_io_cosine, decoder_layers, text_config


def _forward_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "labels"}


def layer_scores(model: nn.Module, metric: str, batches: Iterable[dict], n_remove: int, seed: int = 0) -> list[float]:
    """One importance score per decoder block (the ``n_remove`` lowest go)."""
    if metric == "angular":
        return angular_distances(model, batches, n_remove)
    return _layer_scores(model, metric, batches, seed)


def _layer_scores(model: nn.Module, metric: str, batches: Iterable[dict], seed: int) -> list[float]:
    n_layers = len(decoder_layers(model))
    if metric == "block_influence":
        return [1.0 - float(c) for c in block_io_cosine(model, batches)]
    if metric == "loss":
        return skip_loss_increase(model, batches)
    if metric == "last":
        return [float(n_layers - i) for i in range(n_layers)]
    if metric == "random":
        scores = [float(i) for i in range(n_layers)]
        random.Random(f"layer-random-{seed}").shuffle(scores)
        return scores
    raise ValueError(f"unknown layer importance metric {metric!r}; expected one of {LAYER_METRICS}")


@torch.no_grad()
def _block_inputs(model: nn.Module, batch: dict) -> list[torch.Tensor]:
    """Hidden states entering each block, plus the last block's output (L + 1 tensors)."""
    layers = decoder_layers(model)
    states: list[torch.Tensor] = []
    handles = [
        layer.register_forward_pre_hook(lambda m, a, k: states.append(a[0] if a else k["hidden_states"]), with_kwargs=True)
        for layer in layers
    ]

    def last_output(module, args, output):
        states.append(output[0] if isinstance(output, tuple) else output)

    handles.append(layers[-1].register_forward_hook(last_output))
    try:
        model(**_forward_inputs(batch))
    finally:
        for h in handles:
            h.remove()
    return states


def angular_distances(model: nn.Module, batches: Iterable[dict], n: int) -> list[float]:
    """Each block's score for removing a run of ``n`` blocks (see the module docstring)."""
    return all_angular_distances(model, batches, lengths=[n])[n]


def all_angular_distances(model: nn.Module, batches: Iterable[dict], lengths: Iterable[int] | None = None) -> dict[int, list[float]]:
    """:func:`angular_distances` for each run length in ``lengths`` (default: every ``n`` from 1
    to L - 1), in one pass over the batches."""
    model.eval()
    n_layers = len(decoder_layers(model))
    lengths = sorted(set(range(1, n_layers) if lengths is None else lengths))
    if not lengths or not all(1 <= n < n_layers for n in lengths):
        raise ValueError(f"angular distance needs run lengths 1 <= n < {n_layers} blocks, got {lengths}")
    totals, count = torch.zeros(n_layers, n_layers + 1, dtype=torch.float64), 0  # [start, end]
    for batch in batches:
        batch = move_to_model(batch, model)
        states = _block_inputs(model, batch)
        mask = batch["attention_mask"].bool()
        for n in lengths:
            for start in range(n_layers - n + 1):
                cos = nn.functional.cosine_similarity(states[start][mask].float(), states[start + n][mask].float(), dim=-1)
                totals[start, start + n] += (torch.arccos(cos.clamp(-1, 1)) / math.pi).sum().double().cpu()
        count += int(mask.sum())
    if not count:
        raise ValueError("the angular metric needs at least one non-empty batch")
    return {n: [float(totals[s, s + n]) / count for s in range(n_layers - n + 1)] + [math.inf] * (n - 1) for n in lengths}


@torch.no_grad()
def skip_loss_increase(model: nn.Module, batches: Iterable[dict]) -> list[float]:
    """Calibration loss with each block bypassed, minus the full model's loss."""
    model.eval()
    batches = list(batches)
    if not all("labels" in b for b in batches):
        raise ValueError("the loss metric needs calibration batches with labels")

    def mean_loss() -> float:
        return sum(float(model(**move_to_model(b, model)).loss) for b in batches) / len(batches)

    base = mean_loss()
    scores = []
    for layer in decoder_layers(model):
        handle = layer.register_forward_hook(_bypass, with_kwargs=True)
        try:
            scores.append(mean_loss() - base)
        finally:
            handle.remove()
    return scores


def _bypass(module, args, kwargs, output):
    hidden = args[0] if args else kwargs["hidden_states"]
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def importance_scores(model: nn.Module, paradigm: str, metric: str, batches: Iterable[dict], seed: int = 0) -> dict:
    """What one importance pass yields for every compression level of a method: ``layer`` (a score
    per block, or for ``angular`` ``{n: scores}`` for every run length n) and ``width`` (the line
    sums of :func:`width_saliency`). A hybrid's width half is not here: it is scored on the model
    without the blocks its level drops."""
    batches = list(batches)
    layer_metric = split_hybrid_metric(metric)[0] if paradigm == "hybrid" else metric
    scores = {}
    if paradigm in ("layer", "hybrid"):
        scores["layer"] = (
            all_angular_distances(model, batches) if layer_metric == "angular" else _layer_scores(model, layer_metric, batches, seed)
        )
    if paradigm == "width":
        scores["width"] = width_saliency(model, metric, batches)
    return scores


def line_dims(spec: DecoderSpec) -> dict[str, int]:
    """The dimension each prunable linear's saliency is summed over: the inputs of q/k/v and of the
    MLP's input projections (one value per output row: a head's or a channel's rows), the outputs
    of the attention and MLP output projections (one value per input column)."""
    return {**dict.fromkeys(spec.row_stacks(), 1), **dict.fromkeys((spec.o, spec.mlp_out), 0)}


def _by_part(model: nn.Module, lines: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Per layer, each linear's line sums (keyed by its path) as the spec's parts' (keyed by the
    part): a fused linear's row sums cut into its parts' rows, the others as they are."""
    spec = decoder_spec(model)
    rows = spec.part_rows(attention_shape(model), text_config(model).intermediate_size)
    return [
        {
            **{part: layer[spec.linear(part)][where] for part, where in rows.items()},
            spec.o: layer[spec.o],
            spec.mlp_out: layer[spec.mlp_out],
        }
        for layer in lines
    ]


CHUNK_ELEMENTS = 1 << 22  # saliency is computed in float32 blocks of rows this large (16 MB)


def _line_sums(weight: torch.Tensor, dim: int, saliency) -> torch.Tensor:
    """``saliency(rows)`` (a float32 block of the weight's rows) summed over ``dim``, block by
    block: never more than :data:`CHUNK_ELEMENTS` float32 values beside the weight."""
    out = torch.zeros(weight.shape[1 - dim], dtype=torch.float32, device=weight.device)
    step = max(1, CHUNK_ELEMENTS // weight.shape[1])
    for start in range(0, weight.shape[0], step):
        rows = slice(start, start + step)
        if dim == 1:
            out[rows] = saliency(rows).sum(1)
        else:
            out += saliency(rows).sum(0)
    return out


def width_saliency(model: nn.Module, metric: str, batches: Iterable[dict]) -> list[dict[str, torch.Tensor]]:
    """Per decoder layer, ``{part: saliency summed over each output row or input column}``
    (float32, see :func:`line_dims`; a part is a weight path, or a block of a fused weight's rows:
    :class:`~study.models.architectures.DecoderSpec`): all that choosing heads and channels needs,
    and a few MB where the per-element saliency of a 7B model would be twice its weights."""
    spec = decoder_spec(model)
    layers = decoder_layers(model)
    dims = line_dims(spec)
    if metric in ("magnitude_l1", "magnitude_l2"):
        power = 1 if metric == "magnitude_l1" else 2
        with torch.no_grad():
            lines = [
                {
                    p: _line_sums(w := spec.module(layer, p).weight, d, lambda rows, w=w: w[rows].float().abs().pow(power))
                    for p, d in dims.items()
                }
                for layer in layers
            ]
    elif metric == "taylor":
        lines = _taylor(model, batches, dims)
    elif metric == "activation":
        lines = _wanda_sp(model, batches, dims)
    else:
        raise ValueError(f"unknown width importance metric {metric!r}; expected one of {WIDTH_METRICS}")
    return _by_part(model, lines)


def _taylor(model: nn.Module, batches: Iterable[dict], dims: dict[str, int]) -> list[dict[str, torch.Tensor]]:
    """LLM-Pruner's ``param_first``, |w * dL/dw|, summed over the batches. Each weight's gradient
    is turned into its line sums as soon as backward has written it and then freed, so the full
    set of gradients never exists (with one batch this is exactly |w * g|; with several, the sum of
    each batch's |w * g|)."""
    spec = decoder_spec(model)
    layers = decoder_layers(model)
    sums = [{p: None for p in dims} for _ in layers]
    previous = {id(p): p.requires_grad for p in model.parameters()}
    model.eval()
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(False)

    def accumulate(i: int, path: str):
        @torch.no_grad()
        def hook(weight: torch.Tensor) -> None:
            grad = weight.grad
            lines = _line_sums(weight, dims[path], lambda rows: (weight[rows].float() * grad[rows].float()).abs())
            sums[i][path] = lines if sums[i][path] is None else sums[i][path] + lines
            weight.grad = None

        return hook

    handles = []
    for i, layer in enumerate(layers):
        for path in dims:
            weight = spec.module(layer, path).weight
            weight.requires_grad_(True)
            handles.append(weight.register_post_accumulate_grad_hook(accumulate(i, path)))
    try:
        n = 0
        for batch in tqdm(batches, desc="importance (taylor)", unit="batch"):
            if "labels" not in batch:
                raise ValueError("the taylor metric needs calibration batches with labels")
            model(**move_to_model(batch, model)).loss.backward()
            n += 1
        if not n:
            raise ValueError("the taylor metric needs at least one calibration batch")
        return [{p: lines / n for p, lines in layer.items()} for layer in sums]
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        for p in model.parameters():
            p.requires_grad_(previous[id(p)])


@torch.no_grad()
def _wanda_sp(model: nn.Module, batches: Iterable[dict], dims: dict[str, int]) -> list[dict[str, torch.Tensor]]:
    """Wanda-sp: |w| * ||x|| on the output projections' input columns (zero elsewhere)."""
    spec = decoder_spec(model)
    layers = decoder_layers(model)
    targets = [(i, p) for i in range(len(layers)) for p in (spec.o, spec.mlp_out)]
    sums = {t: torch.zeros(spec.module(layers[t[0]], t[1]).in_features, dtype=torch.float64) for t in targets}
    mask: torch.Tensor | None = None

    def hook(key):
        def record(module, args):
            x = args[0][mask] if mask is not None and args[0].shape[:2] == mask.shape else args[0].flatten(0, -2)
            for rows in x.split(max(1, CHUNK_ELEMENTS // x.shape[-1])):  # float64 a block of tokens at a time
                sums[key] += rows.double().pow(2).sum(0).cpu()

        return record

    handles = [spec.module(layers[i], p).register_forward_pre_hook(hook((i, p))) for i, p in targets]
    model.eval()
    try:
        for batch in tqdm(batches, desc="importance (activation)", unit="batch"):
            batch = move_to_model(batch, model)
            mask = batch["attention_mask"].bool()
            model(**_forward_inputs(batch))
    finally:
        for h in handles:
            h.remove()
    out = []
    for i, layer in enumerate(layers):
        lines = {}
        for p, d in dims.items():
            w = spec.module(layer, p).weight
            if (i, p) in sums:  # the column norms scale whole columns: sum |w| down each column, then scale
                lines[p] = _line_sums(w, d, lambda rows, w=w: w[rows].float().abs()) * sums[(i, p)].sqrt().float().to(w.device)
            else:
                lines[p] = torch.zeros(w.shape[0], dtype=torch.float32, device=w.device)
        out.append(lines)
    return out
