"""Expected GPU memory of each stage of a profile, computed from the model's architecture.

No GPU is needed: parameter counts come from building the model of its family (any family of
:mod:`study.models.families`) from its config with ``AutoModelForImageTextToText`` on the ``meta``
device (exact counts, no memory); the language backbone, its decoder layers and the projector are
found where the families registry says. The sizes of activations come from the config's widths, the
image tokens of one sample (:func:`image_tokens`) and the profile's batch sizes. The config is the
checkpoint's ``config.json`` when the checkpoint is present, else the published config of the
release (:data:`PUBLISHED_CONFIGS`, clearly labelled).

What is counted, per GPU, in bytes (bf16 = 2, fp32 = 4), and what the code does that sets it:

- **evaluation** (one GPU, ``evaluate.batch_size``): 16-bit weights; the KV cache of a batch of
  prompts (image tokens + ``text_tokens`` + ``max_new_tokens``); the vision tower's hidden states
  (all of them, as LLaVA-1.5 asks for to take the penultimate: an upper bound for towers read at
  their last layer); one decoder layer's working set.
- **pruning** (one GPU; ``prune_checkpoint`` encodes calibration batches of
  ``prune.calibration_batch_size``): Block Influence is a forward pass keeping every layer's hidden
  state; Taylor (``param_first``) backpropagates the LM loss to the decoder's linear weights, so it
  also holds every decoder layer's saved activations, the logits (bf16, the loss's fp32 copy and its
  gradient) and one weight's gradient at a time (each is reduced to its row and column sums and
  freed as it arrives).
- **recovery** (``recover.config``; ``batch_size`` is split over the processes, so each GPU
  runs micro-batches of ``batch_size / gpus``): trainable parameters with fp32 master weights,
  fp32 gradients and AdamW's two fp32 moments (16 B each), frozen parameters in bf16 (2 B);
  sharded over the GPUs by FSDP / ZeRO-3, or whole on each GPU with DDP (plus DDP's gradient
  buckets). The student is the largest one trained (the smallest pruning level of the profile;
  its decoder shrinks by that fraction). ``recover()`` does not wrap the teacher with
  ``accelerate``: a KD run holds a whole bf16 teacher on every GPU. Activations: every decoder
  layer's saved tensors (no gradient checkpointing in ``recover()``), the logits, and for KD the
  teacher's logits (kd_logit: plus both log-softmaxes) or all its hidden states (kd_hidden).

Image tokens of a sample: one image of :data:`IMAGE_SIZE` pixels, counted as the family's processor
would with the releases' settings (:func:`image_tokens` states the assumption): LLaVA one
tower-sized image; LLaVA-NeXT / OneVision the base image and the unpadded tiles of the best grid
pinpoint; Qwen2/2.5/3-VL the image resized to multiples of patch x merge (within
:data:`QWEN_PIXELS`), its patches merged; InternVL pixel-shuffled tiles (at most :data:`MAX_TILES`
plus a thumbnail); Idefics3 / SmolVLM tiles of the image resized to 4 tiles on its longest side plus
the global image; Gemma 3 its fixed ``mm_tokens_per_image``; Mistral 3 Pixtral's patches merged,
with a break token per row.

Saved activations per token and decoder layer, in elements (SDPA attention, no score matrix), with
``h`` the hidden size, ``kv`` the key/value width, ``I`` the MLP width: Llama-like ``7 h + 2 kv + 4 I``
(norm in/out twice, q k v and the attention output, o_proj input; gate, its activation, up, down's
input; Mistral, Qwen2, the Qwen-VL and Gemma text models alike, Gemma's extra norms not counted);
Phi ``5 h + 2 kv + 2 I`` (one layer norm shared by the parallel attention and MLP; fc1's output and
its GELU); Phi-3 ``8 h + 3 kv + 4 I`` (the fused ``qkv_proj`` output stays whole because v, a view of
it, is saved, besides the rotated q and k; ``gate_up_proj``'s output likewise, besides the
activation and the product). Not counted: the CUDA context and allocator slack (add 1-3 GB), and
transient buffers of the kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from study.config import default
from study.config.sections import PruneConfig, RecoveryConfig
from study.config.vocabulary import Method
from study.models.families import attribute, family, projector_parameters

GB = 1e9
BF16, FP32 = 2, 4
ADAM_STATE_BYTES = FP32 + FP32 + 2 * FP32  # master weight, gradient, two moments
CALIBRATION_BATCH = default(PruneConfig, "calibration_batch_size")
TEXT_TOKENS = 512  # text tokens of a padded training or calibration sample besides the image
EVAL_TEXT_TOKENS = 128  # text tokens of an evaluation prompt besides the image
IMAGE_SIZE = (480, 640)  # (height, width) of a sample's image: a COCO photo, most of LLaVA-665K's images
QWEN_PIXELS = (56 * 56, 12_845_056)  # the Qwen2-VL and Qwen2.5-VL releases' processors resize into these bounds (min, max pixels)
MAX_TILES = 12  # InternVL's tiles per image besides the thumbnail: the processor's max_patches, Mini-InternVL's max_dynamic_patch
BACKBONE_KINDS = {"phi": "phi", "phi3": "phi3"}  # text model_type -> how a decoder layer saves activations; any other: llama

# Published configs, used when the checkpoint is not on this machine.
PUBLISHED_CONFIGS: dict[str, dict] = {
    # llava-hf/llava-1.5-7b-hf config.json (Vicuna-7B + CLIP ViT-L/14-336 + 2-layer GELU MLP);
    # text_config lists only what differs from LlamaConfig's defaults (hidden 4096, MLP 11008, 32 layers, 32 heads)
    "llava-1.5-7b": {
        "model_type": "llava",
        "architectures": ["LlavaForConditionalGeneration"],
        "image_token_index": 32000,
        "pad_token_id": 32001,
        "projector_hidden_act": "gelu",
        "tie_word_embeddings": False,
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "text_config": {"model_type": "llama", "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "vocab_size": 32064},
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_attention_heads": 16,
            "num_hidden_layers": 24,
            "image_size": 336,
            "patch_size": 14,
            "projection_dim": 768,
        },
    },
    # BAAI/Bunny-v1_0-3B as `python -m study convert-bunny` writes it (study/convert/bunny.py):
    # microsoft/phi-2 (no LM-head bias in Bunny) + google/siglip-so400m-patch14-384 without its last
    # layer and pooling head (Bunny's feature layer is the tower's output, every patch) + mlp2x_gelu
    "bunny-v1.0-3b": {
        "model_type": "llava",
        "architectures": ["LlavaForConditionalGeneration"],
        "projector_hidden_act": "gelu",
        "tie_word_embeddings": False,
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "full",
        "image_seq_length": 729,
        "text_config": {
            "model_type": "phi",
            "hidden_size": 2560,
            "intermediate_size": 10240,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "partial_rotary_factor": 0.4,
            "max_position_embeddings": 2048,
            "vocab_size": 51200,
        },
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_attention_heads": 16,
            "num_hidden_layers": 26,
            "image_size": 384,
            "patch_size": 14,
            "vision_use_head": False,
        },
    },
    # Qwen/Qwen2.5-VL-7B-Instruct config.json as published (checked against public copies of it and
    # the Hub's count of 8,292,166,656 parameters): the flat layout of transformers 4.49, whose text
    # settings Qwen2_5_VLConfig moves into text_config; Qwen2.5-7B (GQA: 28 query, 4 KV heads) + a
    # 32-layer ViT with window attention, 2x2 patch merger into 3584
    "qwen2.5-vl-7b": {
        "model_type": "qwen2_5_vl",
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
        "vision_token_id": 151654,
        "image_token_id": 151655,
        "video_token_id": 151656,
        "hidden_act": "silu",
        "hidden_size": 3584,
        "initializer_range": 0.02,
        "intermediate_size": 18944,
        "max_position_embeddings": 128000,
        "max_window_layers": 28,
        "num_attention_heads": 28,
        "num_hidden_layers": 28,
        "num_key_value_heads": 4,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 32768,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "vision_config": {
            "depth": 32,
            "hidden_act": "silu",
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "in_chans": 3,
            "out_hidden_size": 3584,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
            "tokens_per_second": 2,
            "temporal_patch_size": 2,
        },
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "vocab_size": 152064,
    },
    # OpenGVLab/Mini-InternVL-Chat-4B-V1-5 in transformers' internvl format. No such config is
    # published (the release is remote code, InternVLChatModel), so this one is composed: the
    # vision_config is InternViT-300M-448px as OpenGVLab's converter to the HF format writes it
    # (internvl_chat/tools/internvl_custom2hf.py); the text_config is microsoft/Phi-3-mini-128k-instruct's
    # config.json (without its long-context RoPE factors, which change no size) with the vocabulary
    # InternVL's fine-tuning resizes it to, len(tokenizer) = Phi-3's 32,011 + 9 InternVL tokens
    # (<img>, </img>, <IMG_CONTEXT> = 32013, quad/ref/box); the top level is the converter's, with the
    # LM head untied as in Phi-3 (InternVLConfig ties by default). 4,146,855,936 parameters (4.15 B).
    "internvl-mini-4b": {
        "model_type": "internvl",
        "architectures": ["InternVLForConditionalGeneration"],
        "downsample_ratio": 0.5,
        "image_seq_length": 256,
        "image_token_id": 32013,
        "projector_hidden_act": "gelu",
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "default",
        "tie_word_embeddings": False,
        "text_config": {
            "model_type": "phi3",
            "architectures": ["Phi3ForCausalLM"],
            "attention_dropout": 0.0,
            "bos_token_id": 1,
            "eos_token_id": 32000,
            "pad_token_id": 32000,
            "hidden_act": "silu",
            "hidden_size": 3072,
            "intermediate_size": 8192,
            "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096,
            "num_attention_heads": 32,
            "num_hidden_layers": 32,
            "num_key_value_heads": 32,
            "rms_norm_eps": 1e-05,
            "rope_theta": 10000.0,
            "sliding_window": 262144,
            "tie_word_embeddings": False,
            "vocab_size": 32020,
        },
        "vision_config": {
            "model_type": "internvl_vision",
            "attention_bias": True,
            "hidden_act": "gelu",
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_attention_heads": 16,
            "num_hidden_layers": 24,
            "image_size": [448, 448],
            "patch_size": [14, 14],
            "norm_type": "layer_norm",
            "layer_norm_eps": 1e-06,
            "layer_scale_init_value": 0.1,
            "use_absolute_position_embeddings": True,
            "use_mask_token": False,
            "use_mean_pooling": True,
            "use_qk_norm": False,
        },
    },
}


@dataclass(frozen=True)
class ModelSizes:
    """Parameter counts and the widths that size activations."""

    total: int
    llm: int  # language model + LM head (what ``projector+llm`` trains)
    decoder: int  # decoder layers (what pruning removes)
    vision: int  # everything else: the vision tower
    projector: int  # the family's projector (``trainable: projector``)
    largest_layer: int
    backbone: str  # llama | phi | phi3: how a decoder layer saves activations (BACKBONE_KINDS)
    hidden: int
    intermediate: int
    layers: int
    kv_dim: int  # KV heads x head dim
    vocab: int
    image_tokens: int  # LLM tokens of one sample's image
    vision_hidden: int
    vision_layers: int
    vision_tokens: int  # tokens the vision tower encodes for that image (every tile, class tokens included)
    linear_shapes: tuple[tuple[int, int], ...] = field(default=())  # (in, out) of each linear of a decoder layer: the LoRA targets
    image_assumption: str = ""  # how image_tokens was counted


@dataclass(frozen=True)
class ImageTokens:
    llm: int  # tokens the image adds to the LLM's sequence
    vision: int  # tokens the vision tower encodes (every tile, class tokens included)
    assumption: str


def image_tokens(config, image_size: tuple[int, int] = IMAGE_SIZE) -> ImageTokens:
    """The tokens one image of ``image_size`` (height, width) pixels gives in the family of
    ``config``, counted as its processor does with the releases' settings (module docstring)."""
    from transformers.image_processing_utils import select_best_resolution
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    kind, vision = config.model_type, config.vision_config
    height, width = image_size
    image = f"a {width}x{height} image"
    if kind in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        patch, merge = vision.patch_size, vision.spatial_merge_size
        h, w = smart_resize(height, width, patch * merge, *QWEN_PIXELS)
        patches = (h // patch) * (w // patch)
        return ImageTokens(
            patches // merge**2, patches, f"{image} resized to {w}x{h}: {patches} patches of {patch} px, merged {merge}x{merge}"
        )
    if kind == "internvl":
        side, patch = vision.image_size[0], vision.patch_size[0]
        columns, rows = get_optimal_tiled_canvas((height, width), (side, side), 1, MAX_TILES)
        tiles = columns * rows + (columns * rows > 1)  # and the thumbnail
        per_tile = round((side // patch) ** 2 * config.downsample_ratio**2)
        return ImageTokens(
            tiles * per_tile,
            tiles * ((side // patch) ** 2 + 1),
            f"{image} in {tiles} tiles of {side} px ({columns}x{rows} of at most {MAX_TILES}, and a thumbnail), {per_tile} pixel-shuffled tokens each",
        )
    if kind in ("idefics3", "smolvlm"):
        tile, patch = vision.image_size, vision.patch_size
        scale = 4 * tile / max(height, width)  # the processor resizes the longest side to 4 tiles
        tiles = math.ceil(height * scale / tile) * math.ceil(width * scale / tile) + 1  # and the global image
        per_tile = (tile // patch) ** 2 // config.scale_factor**2
        return ImageTokens(
            tiles * per_tile,
            tiles * (tile // patch) ** 2,
            f"{image} in {tiles - 1} tiles of {tile} px and the global image, {per_tile} tokens each",
        )
    if kind == "gemma3":
        patches = (vision.image_size // vision.patch_size) ** 2
        return ImageTokens(
            config.mm_tokens_per_image, patches, f"any image: {patches} patches pooled to {config.mm_tokens_per_image} tokens"
        )
    if kind == "mistral3":
        patch, merge = vision.patch_size, config.spatial_merge_size
        scale = min(1.0, vision.image_size / max(height, width))  # the longest side at most the tower's size
        rows, columns = math.ceil(height * scale / patch), math.ceil(width * scale / patch)
        merged_rows, merged_columns = rows // merge, columns // merge  # as the processor counts them
        return ImageTokens(
            merged_rows * (merged_columns + 1),
            rows * columns,
            f"{image}: {rows}x{columns} patches of {patch} px merged {merge}x{merge}, a break token per row",
        )
    side, patch = vision.image_size, vision.patch_size
    patches = (side // patch) ** 2
    extra = int(vision.model_type == "clip_vision_model")  # CLIP's class token
    base = patches + extra if config.vision_feature_select_strategy == "full" else patches
    if kind in ("llava_next", "llava_onevision"):
        best_height, best_width = select_best_resolution((height, width), config.image_grid_pinpoints)
        rows, columns = best_height // side * (side // patch), best_width // side * (side // patch)
        if width / height > columns / rows:  # the padding rows and columns are dropped
            rows -= (rows - int(round(height * columns / width, 7))) // 2 * 2
        else:
            columns -= (columns - int(round(width * rows / height, 7))) // 2 * 2
        tiles = (best_height // side) * (best_width // side)
        return ImageTokens(
            base + rows * (columns + 1),
            (tiles + 1) * (patches + extra),
            f"{image}: the base image and {tiles} tiles of {side} px unpadded to {rows}x{columns} patches, a newline per row"
            + (" (OneVision's pooling above 9 tiles not applied: an upper bound)" if kind == "llava_onevision" else ""),
        )
    return ImageTokens(base, patches + extra, f"any image, resized to {side} px: {patches} patches of {patch} px")


def model_sizes(config, image_size: tuple[int, int] = IMAGE_SIZE) -> ModelSizes:
    """Counts from the model built on the meta device (no memory), widths from the config."""
    import torch
    from torch import nn
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    text, vision = config.get_text_config(), config.vision_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv_dim = (getattr(text, "num_key_value_heads", None) or text.num_attention_heads) * head_dim
    backbone = attribute(model, family(model).backbone)
    layers = backbone.layers
    head = model.get_output_embeddings()
    llm = count(backbone) + (count(head) if head.weight is not model.get_input_embeddings().weight else 0)
    projector = sum(p.numel() for p in projector_parameters(model))
    total = count(model)
    tokens = image_tokens(config, image_size)
    return ModelSizes(
        total=total,
        llm=llm,
        decoder=count(layers),
        vision=total - llm - projector,
        projector=projector,
        largest_layer=max(count(layer) for layer in layers),
        backbone=BACKBONE_KINDS.get(text.model_type, "llama"),
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        layers=text.num_hidden_layers,
        kv_dim=kv_dim,
        vocab=text.vocab_size,
        image_tokens=tokens.llm,
        vision_hidden=getattr(vision, "embed_dim", None) or vision.hidden_size,  # Qwen2-VL's tower width is embed_dim
        vision_layers=getattr(vision, "num_hidden_layers", None) or vision.depth,
        vision_tokens=tokens.vision,
        linear_shapes=tuple((m.in_features, m.out_features) for m in layers[0].modules() if isinstance(m, nn.Linear)),
        image_assumption=tokens.assumption,
    )


def saved_activation_elements(sizes: ModelSizes, scale: float = 1.0) -> float:
    """Elements autograd saves per token in one decoder layer (see the module docstring)."""
    h, kv, inter = sizes.hidden, sizes.kv_dim, sizes.intermediate * scale
    if sizes.backbone == "phi":
        return 5 * h + 2 * kv + 2 * inter
    if sizes.backbone == "phi3":
        return 8 * h + 3 * kv + 4 * inter
    return 7 * h + 2 * kv + 4 * inter


def lora_parameters(sizes: ModelSizes, rank: int, layers: int | None = None) -> int:
    """LoRA A and B matrices on every attention and MLP linear of every decoder layer."""
    return (layers or sizes.layers) * sum(rank * (i + o) for i, o in sizes.linear_shapes)


def vision_activations(sizes: ModelSizes, batch: int) -> float:
    """Every hidden state of the vision tower for ``batch`` samples' images, in bf16 (module docstring)."""
    return batch * sizes.vision_tokens * sizes.vision_hidden * (sizes.vision_layers + 1) * BF16


@dataclass
class Estimate:
    stage: str
    setting: str
    parts: dict[str, float]  # bytes per GPU

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def evaluation(sizes: ModelSizes, batch_size: int, max_new_tokens: int, text_tokens: int) -> Estimate:
    seq = sizes.image_tokens + text_tokens + max_new_tokens
    return Estimate(
        "evaluation",
        f"1 GPU, batch {batch_size}, {seq} tokens",
        {
            "weights": BF16 * sizes.total,
            "kv_cache": 2 * sizes.layers * batch_size * seq * sizes.kv_dim * BF16,
            "activations": batch_size * seq * (4 * sizes.hidden + 2 * sizes.intermediate) * BF16
            + vision_activations(sizes, batch_size)
            + batch_size * sizes.vocab * FP32,
        },
    )


def pruning(sizes: ModelSizes, metric: str, text_tokens: int, batch: int = CALIBRATION_BATCH) -> Estimate:
    seq = sizes.image_tokens + text_tokens
    vision = vision_activations(sizes, batch)
    parts = {"weights": BF16 * sizes.total}
    if metric == "taylor":
        from study.pruning.importance import CHUNK_ELEMENTS

        # each weight's gradient is reduced to row/column sums and freed as backward writes it
        # (study.pruning.importance): one matrix's gradient and a float32 block at a time
        parts["gradients"] = BF16 * max(i * o for i, o in sizes.linear_shapes) + FP32 * CHUNK_ELEMENTS
        parts["activations"] = sizes.layers * batch * seq * saved_activation_elements(sizes) * BF16 + vision
        parts["logits"] = batch * seq * sizes.vocab * (BF16 + FP32 + FP32)
    else:  # a forward pass that keeps every layer's hidden state
        parts["activations"] = (sizes.layers + 1) * batch * seq * sizes.hidden * BF16 + vision
        parts["activations"] += batch * seq * (4 * sizes.hidden + 2 * sizes.intermediate) * BF16
        parts["logits"] = batch * seq * sizes.vocab * BF16
    return Estimate("pruning", f"{metric}, 1 GPU, calibration batch {batch}, {seq} tokens", parts)


def recovery(
    sizes: ModelSizes,
    trainable: str,
    loss: str,
    batch_size: int,
    gpus: int,
    sharded: bool,
    level: float,
    text_tokens: int,
    lora_rank: int = default(RecoveryConfig, "lora_r"),
) -> Estimate:
    """One recovery run of the student pruned at ``level`` (its decoder shrinks by that fraction)."""
    seq = sizes.image_tokens + text_tokens
    micro = max(1, batch_size // gpus)
    removed = round(level * sizes.decoder)
    student_total, student_llm = sizes.total - removed, sizes.llm - removed
    layers = sizes.layers  # activations scale with the kept fraction below (fewer layers or narrower ones)
    if trainable == "projector":
        train = sizes.projector
    elif trainable == "llm":
        train = student_llm
    elif trainable == "projector+llm":
        train = student_llm + sizes.projector
    elif trainable == "lora":
        train = sizes.projector + round(lora_parameters(sizes, lora_rank) * (1 - level))
    else:
        raise ValueError(f"unknown trainable {trainable!r}")
    frozen = student_total - (train if trainable != "lora" else sizes.projector)
    states = ADAM_STATE_BYTES * train + BF16 * frozen
    parts: dict[str, float] = {}
    if sharded:
        parts["weights+optimizer"] = states / gpus + 2 * BF16 * sizes.largest_layer  # + the gathered units in flight
    else:
        parts["weights+optimizer"] = states + FP32 * train  # DDP's gradient buckets
    parts["activations"] = (1 - level) * layers * micro * seq * saved_activation_elements(sizes) * BF16
    parts["activations"] += vision_activations(sizes, micro)
    parts["logits"] = micro * seq * sizes.vocab * (BF16 + FP32 + FP32)
    kinds = set(loss.split("+"))
    if kinds & {"kd_logit", "kd_hidden"}:
        parts["teacher"] = BF16 * sizes.total + micro * seq * sizes.vocab * BF16
        if "kd_logit" in kinds:
            parts["teacher"] += micro * seq * sizes.vocab * (FP32 + FP32 + FP32)
        if "kd_hidden" in kinds:
            parts["teacher"] += (sizes.layers + 1) * micro * seq * sizes.hidden * BF16
    strategy = f"FSDP/ZeRO-3 x{gpus}" if sharded else f"DDP x{gpus}"
    return Estimate("recovery", f"{trainable} / {loss}, {strategy}, micro-batch {micro}, student at {level:g}", parts)


RECOVERY_RECIPES = (
    ("projector", "sft"),
    ("lora", "sft"),
    ("projector+llm", "sft"),
    ("projector+llm", "sft+kd_logit"),
    ("projector+llm", "sft+kd_hidden"),
)


def estimate_profile(
    study: dict, sizes: ModelSizes, gpus: int = 8, text_tokens: int = TEXT_TOKENS, eval_text_tokens: int = EVAL_TEXT_TOKENS
) -> list[Estimate]:
    """Every stage of a profile (``study.config.study_values``): evaluation, pruning by each
    method's metric, and the recovery recipes sharded and with DDP."""
    evaluate, recover = study["evaluate"], study["recover"].config
    estimates = [evaluation(sizes, evaluate.batch_size, evaluate.max_new_tokens, eval_text_tokens)]
    # a hybrid's metric (block_influence+taylor) runs its two halves one after the other
    metrics = (part for m in study["prune_runs"].methods for part in Method.parse(m).metric.split("+"))
    for metric in dict.fromkeys(metrics):
        estimates.append(pruning(sizes, metric, text_tokens, study["prune"].calibration_batch_size))
    level = min(study["prune_runs"].levels)
    batch_size, rank = recover.batch_size, recover.lora_r
    for sharded in (True, False):
        for trainable, loss in RECOVERY_RECIPES:
            estimates.append(recovery(sizes, trainable, loss, batch_size, gpus, sharded, level, text_tokens, rank))
    return estimates


def markdown_table(estimates: list[Estimate]) -> str:
    keys = list(dict.fromkeys(k for e in estimates for k in e.parts))
    lines = [
        "| stage | setting | GB per GPU | " + " | ".join(keys) + " |",
        "|---|---|---:|" + "---:|" * len(keys),
    ]
    for e in estimates:
        cells = [f"{e.parts[k] / GB:.1f}" if k in e.parts else "" for k in keys]
        lines.append(f"| {e.stage} | {e.setting} | **{e.total / GB:.1f}** | " + " | ".join(cells) + " |")
    return "\n".join(lines)
