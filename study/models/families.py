"""The image-text-to-text families the toolkit supports (transformers' ``model_type`` of the whole
model): where each keeps its language backbone and its projector. The one place that knows these
paths; the backbone's insides (which weights shrink together) are in
:mod:`study.models.architectures`.

- **backbone**: the text model holding the decoder blocks (``layers``), ``embed_tokens`` and
  ``norm``. Layerwise pruning needs nothing else: it works for every family here, whatever the
  blocks hold.
- **projector**: whatever maps the vision features into the LLM's hidden size (LLaVA's MLP, the
  Qwen-VL mergers, InternVL's MLP after pixel shuffle, Idefics3's connector, ...), plus a learned
  separator that lives in that space (LLaVA-NeXT's ``image_newline``). ``trainable: projector``
  trains these; the hidden size is never pruned, since the projector's output shares it.
- **vision_fed_blocks**: the config key (under ``vision_config``) listing vision layers whose
  features are added to the first decoder blocks' hidden states (Qwen3-VL's DeepStack). Those
  first blocks are where the features go, so layerwise pruning never removes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from transformers import CONFIG_MAPPING


@dataclass(frozen=True)
class Family:
    backbone: str
    projector: tuple[str, ...]
    vision_fed_blocks: str | None = None


_LLAVA = Family("model.language_model", ("model.multi_modal_projector",))
_ANYRES = Family("model.language_model", ("model.multi_modal_projector", "model.image_newline"))
_QWEN_VL = Family("model.language_model", ("model.visual.merger",))
_IDEFICS = Family("model.text_model", ("model.connector",))

FAMILIES: dict[str, Family] = {
    "llava": _LLAVA,
    "llava_next": _ANYRES,
    "llava_onevision": _ANYRES,
    "qwen2_vl": _QWEN_VL,
    "qwen2_5_vl": _QWEN_VL,
    "qwen3_vl": Family(
        "model.language_model", ("model.visual.merger", "model.visual.deepstack_merger_list"), vision_fed_blocks="deepstack_visual_indexes"
    ),
    "internvl": _LLAVA,
    "gemma3": _LLAVA,
    "mistral3": _LLAVA,
    "idefics3": _IDEFICS,
    "smolvlm": _IDEFICS,
}


def family(model: nn.Module) -> Family:
    """The family of ``model`` (by its config's ``model_type``); a clear error for another."""
    return _registered(model.config.model_type)


def _registered(model_type: str | None) -> Family:
    if model_type not in FAMILIES:
        raise ValueError(f"unsupported model family {model_type!r}; supported: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[model_type]


def load_config(source: str | Path | dict):
    """The config (transformers' class of its ``model_type``) of a model folder, a ``config.json``
    or a config dict, without its weights; a clear error for an unsupported family."""
    if not isinstance(source, dict):
        path = Path(source)
        source = json.loads((path / "config.json" if path.is_dir() else path).read_text())
    _registered(source.get("model_type"))
    return CONFIG_MAPPING[source["model_type"]].from_dict(source)


def attribute(model: nn.Module, path: str):
    """The module or parameter at the dotted ``path`` of ``model``."""
    for name in path.split("."):
        model = getattr(model, name)
    return model


def projector_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the family's projector (see the module docstring)."""
    params = []
    for path in family(model).projector:
        part = attribute(model, path)
        params += [part] if isinstance(part, nn.Parameter) else list(part.parameters())
    return params


def fixed_blocks(model: nn.Module) -> int:
    """How many first decoder blocks receive vision features directly and must stay (0 for most)."""
    key = family(model).vision_fed_blocks
    return len(getattr(model.config.vision_config, key)) if key else 0
