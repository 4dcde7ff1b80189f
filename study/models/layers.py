"""The language backbone's decoder layers, and layer surgery (where each family keeps its
backbone: :mod:`study.models.families`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from study.models.device import move_to_model
from study.models.families import attribute, family


def language_model(model: nn.Module) -> nn.Module:
    """The decoder stack (the module holding ``layers``, ``embed_tokens`` and ``norm``) of a
    supported family (:mod:`study.models.families`)."""
    return attribute(model, family(model).backbone)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return language_model(model).layers


def text_config(model: nn.Module):
    config = model.config
    return getattr(config, "text_config", config)


def set_text_config(model: nn.Module, config) -> None:
    """Make ``config`` the backbone config the model saves (the multimodal config's
    ``text_config``, or the model's own config for a text-only model); the attention
    implementation in use carries over. The modules keep the config they were built with."""
    old = text_config(model)
    if config is old:
        return
    config._attn_implementation = old._attn_implementation
    if hasattr(model.config, "text_config"):
        model.config.text_config = config
    else:
        model.config = config


def decoder_layer_params(model: nn.Module) -> int:
    """Parameters of the decoder layers only: the base of a compression level."""
    return sum(p.numel() for p in decoder_layers(model).parameters())


def drop_layers(model: nn.Module, drop: Iterable[int]) -> nn.Module:
    """Remove decoder layers in place and fix what refers to layer positions, so that the model
    saves, reloads and generates with a KV cache: each attention's ``layer_idx``,
    ``num_hidden_layers`` and per-layer config lists such as ``layer_types``."""
    layers = decoder_layers(model)
    drop = sorted(set(drop))
    if any(not 0 <= i < len(layers) for i in drop):
        raise ValueError(f"layer indices must be in [0, {len(layers)}), got {drop}")
    if len(drop) == len(layers):
        raise ValueError(f"cannot drop all {len(layers)} decoder layers")
    keep = [i for i in range(len(layers)) if i not in drop]
    language_model(model).layers = nn.ModuleList(layers[i] for i in keep)
    for new_idx, layer in enumerate(language_model(model).layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    config = text_config(model)
    n_old = config.num_hidden_layers
    config.num_hidden_layers = len(keep)
    for name, value in list(vars(config).items()):
        if isinstance(value, list) and len(value) == n_old and name != "architectures":
            setattr(config, name, [value[i] for i in keep])
    return model


@torch.no_grad()
def block_io_cosine(model: nn.Module, batches: Iterable[dict]) -> torch.Tensor:
    """Mean cosine similarity between each decoder block's input and output hidden states over the
    non-padding tokens of ``batches`` (ShortGPT's Block Influence is one minus this). Each batch
    is moved to the model's device when its turn comes."""
    model.eval()
    layers = decoder_layers(model)
    totals = torch.zeros(len(layers), dtype=torch.float64)
    count = 0
    mask: torch.Tensor | None = None

    def hook(index: int):
        def record(module, args, kwargs, output):
            x = args[0] if args else kwargs["hidden_states"]
            y = output[0] if isinstance(output, tuple) else output
            cos = nn.functional.cosine_similarity(x[mask].float(), y[mask].float(), dim=-1)
            totals[index] += cos.sum().double().cpu()

        return record

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        for batch in batches:
            batch = move_to_model(batch, model)
            mask = batch["attention_mask"].bool()
            model(**{k: v for k, v in batch.items() if k != "labels"})
            count += int(mask.sum())
    finally:
        for handle in handles:
            handle.remove()
    if not count:
        raise ValueError("block_io_cosine needs at least one non-empty batch")
    return (totals / count).float()


def most_similar_layers(cosines: Sequence[float], n: int) -> list[int]:
    """Indices of the ``n`` blocks whose input and output are most alike (highest cosine)."""
    order = sorted(range(len(cosines)), key=lambda i: -float(cosines[i]))
    return sorted(order[:n])
