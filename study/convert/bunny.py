"""Bunny-v1.0-3B (BAAI, hub id ``BAAI/Bunny-v1_0-3B``) rewritten as a stock ``LlavaForConditionalGeneration`` folder.

Bunny's release is a custom-code checkpoint (``architectures: ["BunnyPhiForCausalLM"]``,
``model_type: "bunny-phi"``, loaded upstream with ``trust_remote_code``). Its parts are stock
modules, so a plain HF folder can hold it: SigLIP vision tower, LLaVA's ``mlp2x_gelu`` projector
(``Linear, GELU, Linear``), Phi-2 backbone. :func:`convert_bunny` reads the release's
``config.json`` as JSON and its tensors from safetensors (a ``.bin`` only through
``torch.load(weights_only=True)``), never runs its code, and writes ``SiglipVisionConfig`` +
``PhiConfig`` in a ``LlavaConfig`` with the tokenizer, an image processor and a ``LlavaProcessor``
carrying Bunny's chat template. Every later stage then treats it like any HF folder.

Facts taken from Bunny's public code (github.com/BAAI-DCAI/Bunny, read, not copied):

- ``bunny/model/language_model/bunny_phi.py``: ``BunnyPhiForCausalLM`` = Phi's decoder under
  ``model.`` plus ``lm_head = Linear(hidden, vocab, bias=False)`` (stock Phi's head has a bias;
  Bunny's has none, and neither has LLaVA's, so the head maps one to one).
- ``bunny/model/bunny_arch.py``: ``model.vision_tower`` (a wrapper holding the SigLIP model as
  ``.vision_tower``) and ``model.mm_projector``; config fields ``mm_vision_tower`` (a hub name or
  path, e.g. ``google/siglip-so400m-patch14-384``), ``mm_hidden_size``, ``mm_projector_type``,
  ``use_mm_proj``, ``image_aspect_ratio``, ``tokenizer_model_max_length``. The image features
  replace the one image placeholder of the prompt (``IMAGE_TOKEN_INDEX = -200``, not a vocabulary
  id): exactly what LLaVA does with ``image_seq_length`` copies of an ``<image>`` token.
- ``bunny/model/multimodal_projector/builder.py``: ``mlp2x_gelu`` =
  ``Sequential(Linear(mm_hidden, hidden), GELU(), Linear(hidden, hidden))`` (indices 0 and 2).
- ``bunny/model/multimodal_encoder/siglip/siglip_encoder.py`` at the v1.0 commits (adapted from
  Imp; the same code is in the release's ``modeling_bunny_phi.py``): the SigLIP tower
  (SO400M-patch14-384 by default: width 1152, MLP 4304, 27 layers, 16 heads,
  ``gelu_pytorch_tanh``, eps 1e-6) is loaded, its **last encoder layer deleted** and its pooling
  **head replaced by Identity**; the features are ``hidden_states[-1]`` of that 26-layer tower,
  i.e. the full tower's ``hidden_states[-2]``, every patch (27 x 27 = 729), no CLS, before
  ``post_layernorm``. A state dict saved from it has 26 layers and no head. The repository's
  later ``siglip_encoder.py`` keeps the stock ``SiglipVisionModel`` (all layers, head included)
  and selects ``hidden_states[-2]``. The converter tells the two apart by the head's presence.
- ``bunny/conversation.py`` (``conv_bunny``): system prompt, then ``USER: <msg> ASSISTANT:
  <answer><|endoftext|>``, with the image first in the first user turn (``<image>\\n...``).
- ``bunny/train/train.py``: a tokenizer without a pad token pads with its unk token.
- The image processor: Bunny resizes to ``size x size`` (crop = size), mean = std = 0.5, bicubic,
  after padding the image to a square with the mean colour when ``image_aspect_ratio == "pad"``.

Key mapping (Bunny release → this folder's model, whose ``save_pretrained`` writes its usual names):

- ``model.embed_tokens.weight`` → ``model.language_model.embed_tokens.weight``
- ``model.layers.N.{self_attn.{q_proj,k_proj,v_proj,dense},mlp.{fc1,fc2},input_layernorm}.*``
  → ``model.language_model.layers.N.…`` (same suffixes: Phi uses ``dense``, not ``o_proj``)
- ``model.final_layernorm.*`` → ``model.language_model.final_layernorm.*``
- ``lm_head.weight`` → ``lm_head.weight`` (no bias on either side)
- ``model.mm_projector.0.*`` / ``model.mm_projector.2.*`` → ``model.multi_modal_projector.linear_1.*`` / ``linear_2.*``
- ``model.vision_tower.vision_tower.vision_model.embeddings.*`` → ``model.vision_tower.embeddings.*``
- ``model.vision_tower.vision_tower.vision_model.encoder.layers.N.*`` → ``model.vision_tower.encoder.layers.N.*``
- ``model.vision_tower.vision_tower.vision_model.post_layernorm.*`` → ``model.vision_tower.post_layernorm.*``
- dropped: ``….vision_model.head.*`` (the pooling head never feeds the features) and the buffers
  derived from the config (``*.rotary_emb.inv_freq``, ``*.embeddings.position_ids``).

The tower keeps exactly the layers whose output is the feature: the release's 26 (no head in the
checkpoint), or all but the last for a stock-tower checkpoint (its head present; the last layer
only feeds the head, so it is dropped with it). Features are then the **last** hidden state of the
converted tower, so the folder says ``vision_feature_layer = -1`` (not -2): the same tensor as
SO400M's ``hidden_states[-2]``, without a 27th layer that Bunny's release does not contain.
``post_layernorm`` is kept (identity if absent): transformers builds it, LLaVA never applies it to
the selected hidden state. ``vision_feature_select_strategy = "full"`` (every patch; SigLIP has
no CLS).
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import (
    AddedToken,
    AutoTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaImageProcessor,
    LlavaProcessor,
    PhiConfig,
    SiglipImageProcessor,
    SiglipVisionConfig,
)
from transformers.image_utils import PILImageResampling

from study.models.io import require_model_folder
from study.outputs import atomic_folder, check_output

ARCHITECTURES = ("BunnyPhiForCausalLM",)
IMAGE_TOKEN = "<image>"
SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
# Bunny's conv_bunny: "<system> USER: <image>\n<q> ASSISTANT: <a><|endoftext|>USER: ..." (eos ends a turn)
CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}"
    "{%- for item in content if item['type'] == 'image' -%}{{ '<image>\n' }}{%- endfor -%}"
    "{{ content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') }}"
    "{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{{ render(messages[0]['content']) }}{%- set turns = messages[1:] -%}"
    '{%- else -%}{{ "' + SYSTEM_PROMPT + '" }}{%- set turns = messages -%}'
    "{%- endif -%}"
    "{{ ' ' }}"
    "{%- for message in turns -%}"
    "{%- if message['role'] == 'assistant' -%}{{ 'ASSISTANT: ' }}{{ render(message['content']) }}{{ eos_token }}"
    "{%- else -%}{{ 'USER: ' }}{{ render(message['content']) }}{{ ' ' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)
# the tower Bunny's code assumes when the checkpoint names a hub id (its SigLipVisionConfig defaults)
SIGLIP_SO400M = dict(
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=27,
    num_attention_heads=16,
    image_size=384,
    patch_size=14,
    hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6,
)
PHI_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "resid_pdrop",
    "embd_pdrop",
    "attention_dropout",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "layer_norm_eps",
    "rope_theta",
    "partial_rotary_factor",
    "qk_layernorm",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)

VISION = "model.vision_tower.vision_tower.vision_model."
_RENAMES = [
    (re.compile(r"model\.embed_tokens\.weight"), "model.language_model.embed_tokens.weight"),
    (re.compile(r"model\.layers\.(\d+)\.(.+)"), r"model.language_model.layers.\1.\2"),
    (re.compile(r"model\.final_layernorm\.(weight|bias)"), r"model.language_model.final_layernorm.\1"),
    (re.compile(r"lm_head\.weight"), "lm_head.weight"),
    (re.compile(r"model\.mm_projector\.0\.(weight|bias)"), r"model.multi_modal_projector.linear_1.\1"),
    (re.compile(r"model\.mm_projector\.2\.(weight|bias)"), r"model.multi_modal_projector.linear_2.\1"),
    (re.compile(re.escape(VISION) + r"embeddings\.(.+)"), r"model.vision_tower.embeddings.\1"),
    (re.compile(re.escape(VISION) + r"encoder\.layers\.(\d+)\.(.+)"), r"model.vision_tower.encoder.layers.\1.\2"),
    (re.compile(re.escape(VISION) + r"post_layernorm\.(weight|bias)"), r"model.vision_tower.post_layernorm.\1"),
]
_INVERSE = [
    (re.compile(r"model\.language_model\.(.+)"), r"model.\1"),
    (re.compile(r"model\.multi_modal_projector\.linear_1\.(.+)"), r"model.mm_projector.0.\1"),
    (re.compile(r"model\.multi_modal_projector\.linear_2\.(.+)"), r"model.mm_projector.2.\1"),
    (re.compile(r"model\.vision_tower\.(.+)"), VISION + r"\1"),
]
_DERIVED = re.compile(r".*(rotary_emb\.inv_freq|embeddings\.position_ids)")
_HEAD = re.compile(re.escape(VISION) + r"head\..+")
_VISION_LAYER = re.compile(re.escape(VISION) + r"encoder\.layers\.(\d+)\.")


class BunnyFormatError(ValueError):
    """The checkpoint is not laid out as a Bunny (Phi) release; the message names what is off."""


class UnsafeCheckpointError(ValueError):
    """A ``.bin`` file holds more than tensors: unpickling it could run code, so it is refused."""


def read_state_dict(src: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder: safetensors where present, else ``.bin`` shards read
    with ``torch.load(weights_only=True)`` (a pickle that would build anything but tensors is
    refused with :class:`UnsafeCheckpointError`)."""
    from safetensors.torch import load_file

    src = Path(src)
    shards = _shards(src, "model.safetensors")
    if shards:
        tensors: dict[str, torch.Tensor] = {}
        for shard in shards:
            tensors.update(load_file(shard))
        return tensors
    shards = _shards(src, "pytorch_model.bin")
    if not shards:
        raise FileNotFoundError(f"no weights in {src}: expected model.safetensors, pytorch_model.bin or a sharded index of either")
    tensors = {}
    for shard in shards:
        tensors.update(_load_bin(shard))
    return tensors


def _shards(src: Path, name: str) -> list[Path]:
    index = src / f"{name}.index.json"
    if index.is_file():
        return [src / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return [src / name] if (src / name).is_file() else []


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message leads with advice to retry with weights_only=False; keep only what it found
        found = [line for line in str(err).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        reason = f": {found[0].strip()}" if found else ""
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it holds objects other than tensors, and unpickling them could run code "
            f"(rejected by torch.load(weights_only=True){reason}). Convert it to safetensors with a tool you trust."
        ) from err
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise BunnyFormatError(f"{path}: expected a flat state dict of tensors, got {type(state).__name__}")
    return state


def convert_bunny(src: str | Path, dst: str | Path, vision_config: str | Path | dict | None = None, overwrite: bool = False) -> dict:
    """Rewrite the Bunny checkpoint ``src`` as a stock LLaVA folder ``dst``; return the record
    written to ``dst/conversion.json``. ``dst`` must not be, hold or lie inside ``src`` and must be
    empty unless ``overwrite``; it is written atomically (:mod:`study.outputs`).

    ``vision_config``: the SigLIP tower's config (a dict, a ``config.json`` or a folder holding one,
    a full ``SiglipConfig`` or its ``vision_config``) when it is not SigLIP-SO400M-patch14-384; its
    ``num_hidden_layers`` counts the full tower, as Bunny's code does before dropping the last layer.
    """
    src, dst = require_model_folder(src), Path(dst)
    check_output(dst, [src], overwrite)
    bunny = json.loads((src / "config.json").read_text())
    check_bunny_config(bunny, src)
    tensors = read_state_dict(src)

    vision, kept, layout = siglip_config(tensors, _vision_fields(vision_config))
    if bunny.get("mm_hidden_size", vision.hidden_size) != vision.hidden_size:
        raise BunnyFormatError(
            f"mm_hidden_size is {bunny['mm_hidden_size']} but the vision tower is {vision.hidden_size} wide; "
            "multi-scale (S2) towers concatenate several resolutions and are not supported"
        )
    processor = bunny_processor(src, bunny, vision)
    image_token_id = processor.image_token_id
    if image_token_id >= bunny["vocab_size"]:
        raise BunnyFormatError(f"the {IMAGE_TOKEN} token got id {image_token_id}, beyond the embedding table ({bunny['vocab_size']} rows)")
    dtype = tensors["lm_head.weight"].dtype if "lm_head.weight" in tensors else None
    config = llava_config(bunny, vision, processor.tokenizer, image_token_id, dtype=dtype)

    with torch.device("meta"):  # shapes only: the checkpoint's tensors are assigned, none allocated twice
        model = LlavaForConditionalGeneration(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapped, dropped = map_state_dict(tensors, kept, expected)
    model.load_state_dict(mapped, strict=True, assign=True)
    gen = model.generation_config
    tok = processor.tokenizer
    gen.pad_token_id, gen.bos_token_id, gen.eos_token_id = tok.pad_token_id, tok.bos_token_id, tok.eos_token_id
    gen.do_sample = False

    record = {
        "source": str(src),
        "architecture": bunny["architectures"][0],
        "vision_tower": bunny.get("mm_vision_tower"),
        "vision_layout": layout,
        "vision_layers": kept,
        "vision_feature_layer": config.vision_feature_layer,
        "image_token_id": image_token_id,
        "image_processor": type(processor.image_processor).__name__,
        "dtype": str(config.dtype).removeprefix("torch."),
        "dropped": dropped,
    }
    with atomic_folder(dst, [src], overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / "conversion.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def check_bunny_config(bunny: dict, src: Path | str = "") -> None:
    archs = bunny.get("architectures") or []
    if not set(archs) & set(ARCHITECTURES):
        raise BunnyFormatError(f"{src}: architectures {archs} is not a Bunny Phi checkpoint; supported: {', '.join(ARCHITECTURES)}")
    if "mm_vision_tower" not in bunny:
        raise BunnyFormatError(f"{src}: config.json has no mm_vision_tower: a language model without Bunny's vision tower")
    projector = bunny.get("mm_projector_type", "mlp2x_gelu")
    if projector != "mlp2x_gelu":
        raise BunnyFormatError(
            f"{src}: mm_projector_type {projector!r}: only 'mlp2x_gelu' (LLaVA's 2-layer GELU projector) maps onto LLaVA"
        )
    if bunny.get("rope_scaling"):
        raise BunnyFormatError(f"{src}: rope_scaling {bunny['rope_scaling']} is not supported (Bunny-v1.0-3B has none)")


def _vision_fields(vision_config: str | Path | dict | None) -> dict:
    if vision_config is None:
        return dict(SIGLIP_SO400M)
    if isinstance(vision_config, dict):
        fields = dict(vision_config)
    else:
        path = Path(vision_config)
        path = path / "config.json" if path.is_dir() else path
        fields = json.loads(path.read_text())
    if fields.get("model_type") == "siglip":
        fields = fields.get("vision_config", {})
    return {**SIGLIP_SO400M, **{k: v for k, v in fields.items() if k in SIGLIP_SO400M}}


def siglip_config(tensors: dict[str, torch.Tensor], fields: dict) -> tuple[SiglipVisionConfig, int, str]:
    """The converted tower's config, the number of layers it keeps and the checkpoint's layout
    (``"bunny_v1.0"``: last layer and head already dropped; ``"stock"``: the full tower with head)."""
    try:
        patch = tensors[VISION + "embeddings.patch_embedding.weight"]
        positions = tensors[VISION + "embeddings.position_embedding.weight"]
        fc1 = tensors[VISION + "encoder.layers.0.mlp.fc1.weight"]
    except KeyError as err:
        raise BunnyFormatError(f"the checkpoint has no SigLIP vision tower under {VISION!r} (missing {err.args[0]})") from None
    shapes = {"hidden_size": patch.shape[0], "patch_size": patch.shape[-1], "intermediate_size": fc1.shape[0]}
    wrong = {k: (v, fields[k]) for k, v in shapes.items() if fields[k] != v}
    if wrong:
        said = ", ".join(f"{k} {theirs} in the checkpoint vs {ours} in the config" for k, (theirs, ours) in wrong.items())
        raise BunnyFormatError(f"the vision tower is not the configured SigLIP ({said}); pass the tower's SigLIP config (--vision-config)")
    saved = 1 + max(int(m.group(1)) for k in tensors if (m := _VISION_LAYER.match(k)))
    has_head = any(_HEAD.match(k) for k in tensors)
    full = fields["num_hidden_layers"]
    layout, kept = ("stock", saved - 1) if has_head else ("bunny_v1.0", saved)
    if (has_head and saved != full) or (not has_head and saved != full - 1):
        raise BunnyFormatError(
            f"the checkpoint's vision tower has {saved} layers {'with' if has_head else 'without'} a pooling head; a {full}-layer SigLIP "
            f"should leave {full if has_head else full - 1} (Bunny drops the last layer and the head); pass the tower's config"
        )
    grid = fields["image_size"] // fields["patch_size"]
    if grid * grid != positions.shape[0]:
        raise BunnyFormatError(
            f"image_size {fields['image_size']} / patch {fields['patch_size']} gives {grid * grid} patches, "
            f"the checkpoint has {positions.shape[0]} position embeddings"
        )
    if fields["hidden_size"] % fields["num_attention_heads"]:
        raise BunnyFormatError(
            f"vision hidden_size {fields['hidden_size']} is not a multiple of num_attention_heads {fields['num_attention_heads']}"
        )
    config = SiglipVisionConfig(**{**fields, "num_hidden_layers": kept}, vision_use_head=False)
    return config, kept, layout


def llava_config(bunny: dict, vision: SiglipVisionConfig, tokenizer, image_token_id: int, dtype: torch.dtype | None = None) -> LlavaConfig:
    text = PhiConfig(**{k: bunny[k] for k in PHI_FIELDS if bunny.get(k) is not None}, pad_token_id=tokenizer.pad_token_id)
    grid = vision.image_size // vision.patch_size
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        projector_hidden_act="gelu",  # nn.GELU() in Bunny's mlp2x_gelu: the exact (erf) GELU
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,  # the converted tower ends at Bunny's feature layer (see module docstring)
        image_seq_length=grid * grid,
        multimodal_projector_bias=True,
        tie_word_embeddings=bool(bunny.get("tie_word_embeddings", False)),
        pad_token_id=tokenizer.pad_token_id,
    )
    if dtype is not None:
        config.dtype = dtype
    return config


def bunny_processor(src: Path, bunny: dict, vision: SiglipVisionConfig) -> LlavaProcessor:
    """The release's tokenizer with an ``<image>`` token, Bunny's image preprocessing and chat template."""
    tokenizer = _load_tokenizer(src)
    if tokenizer.pad_token is None:  # Bunny's train.py: pad with unk (eos for Phi-2's tokenizer)
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    if bunny.get("tokenizer_model_max_length"):
        tokenizer.model_max_length = bunny["tokenizer_model_max_length"]
    return LlavaProcessor(
        image_processor=image_processor(bunny, vision),
        tokenizer=tokenizer,
        patch_size=vision.patch_size,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,  # no CLS
        image_token=IMAGE_TOKEN,
        chat_template=CHAT_TEMPLATE,
    )


def image_processor(bunny: dict, vision: SiglipVisionConfig):
    """Bunny's preprocessing: (pad to a square with the mean colour when ``image_aspect_ratio`` is
    ``"pad"``,) resize to ``image_size`` squared, bicubic, rescale, normalise with mean = std = 0.5."""
    size = {"height": vision.image_size, "width": vision.image_size}
    common = dict(
        size=size,
        resample=PILImageResampling.BICUBIC,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        do_rescale=True,
        do_normalize=True,
        do_convert_rgb=True,
    )
    if bunny.get("image_aspect_ratio") == "pad":
        return LlavaImageProcessor(do_pad=True, do_center_crop=False, crop_size=size, **common)
    return SiglipImageProcessor(**common)


def _load_tokenizer(src: Path):
    # only the tokenizer files, away from config.json, whose model_type ("bunny-phi") the auto
    # classes do not know; no code from the checkpoint is run (trust_remote_code stays off)
    files = [src / f for f in TOKENIZER_FILES if (src / f).is_file()]
    if not files:
        raise FileNotFoundError(f"no tokenizer in {src}: expected some of {', '.join(TOKENIZER_FILES)}")
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            shutil.copy2(f, tmp)
        return AutoTokenizer.from_pretrained(tmp, trust_remote_code=False)


def map_state_dict(tensors: dict[str, torch.Tensor], vision_layers: int, expected: dict[str, tuple]) -> tuple[dict, list[str]]:
    """Bunny tensors under the converted model's names, and the source keys deliberately dropped.

    Raises :class:`BunnyFormatError` listing unknown keys, missing tensors or wrong shapes."""
    mapped: dict[str, torch.Tensor] = {}
    source_of: dict[str, str] = {}
    dropped, unknown = [], []
    for key in sorted(tensors):
        layer = _VISION_LAYER.match(key)
        if _DERIVED.match(key) or _HEAD.match(key) or (layer and int(layer.group(1)) >= vision_layers):
            dropped.append(key)
            continue
        target = next((rule.sub(repl, key) for rule, repl in _RENAMES if rule.fullmatch(key)), None)
        if target is None or target not in expected:
            unknown.append(key)
            continue
        mapped[target], source_of[target] = tensors[key], key
    dtype = next((v.dtype for v in mapped.values()), torch.float32)
    for norm in ("weight", "bias"):  # unused by the features (LLaVA selects a hidden state before it)
        key = f"model.vision_tower.post_layernorm.{norm}"
        if key not in mapped and key in expected:
            mapped[key] = (torch.ones if norm == "weight" else torch.zeros)(expected[key], dtype=dtype)
    missing = sorted(bunny_name(k) for k in expected if k not in mapped)
    wrong = [f"{source_of[k]} {tuple(v.shape)} (expected {expected[k]})" for k, v in mapped.items() if tuple(v.shape) != expected[k]]
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} unknown key(s) in the checkpoint: {_listing(unknown)}")
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing for the converted model: {_listing(missing)}")
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) with the wrong shape for the config: {_listing(wrong)}")
    if problems:
        raise BunnyFormatError("not a Bunny (Phi + SigLIP + mlp2x_gelu) checkpoint as expected:\n" + "\n".join(problems))
    return mapped, dropped


def bunny_name(key: str) -> str:
    """The Bunny checkpoint's name for a converted model's key (the inverse of the mapping)."""
    for rule, repl in _INVERSE:
        if rule.fullmatch(key):
            return rule.sub(repl, key)
    return key


def _listing(items: list[str], limit: int = 40) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")
