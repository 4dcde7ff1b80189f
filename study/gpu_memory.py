"""Expected GPU memory of each stage of a profile, computed from the model's architecture.

No GPU is needed: parameter counts come from instantiating the model's ``LlavaConfig`` on the
``meta`` device (exact counts, no memory), the sizes of activations from the config's widths and
the profile's batch sizes. The config is the checkpoint's ``config.json`` when the checkpoint is
present, else the published config of the release (:data:`PUBLISHED_CONFIGS`, clearly labelled).

What is counted, per GPU, in bytes (bf16 = 2, fp32 = 4), and what the code does that sets it:

- **evaluation** (one GPU, ``evaluate.batch_size``): 16-bit weights; the KV cache of a batch of
  prompts (image tokens + ``text_tokens`` + ``max_new_tokens``); the vision tower's hidden states
  (LLaVA asks for all of them to take the penultimate); one decoder layer's working set.
- **pruning** (one GPU; ``prune_checkpoint`` encodes calibration batches of 8): Block Influence
  is a forward pass keeping every layer's hidden state; Taylor (``param_first``) backpropagates
  the LM loss to the decoder's linear weights, so it also holds every decoder layer's saved
  activations, the logits (bf16, the loss's fp32 copy and its gradient) and one weight's
  gradient at a time (each is reduced to its row and column sums and freed as it arrives).
- **recovery** (``recover.config``; ``batch_size`` is split over the processes, so each GPU
  runs micro-batches of ``batch_size / gpus``): trainable parameters with fp32 master weights,
  fp32 gradients and AdamW's two fp32 moments (16 B each), frozen parameters in bf16 (2 B);
  sharded over the GPUs by FSDP / ZeRO-3, or whole on each GPU with DDP (plus DDP's gradient
  buckets). The student is the largest one trained (the smallest pruning level of the profile;
  its decoder shrinks by that fraction). ``recover()`` does not wrap the teacher with
  ``accelerate``: a KD run holds a whole bf16 teacher on every GPU. Activations: every decoder
  layer's saved tensors (no gradient checkpointing in ``recover()``), the logits, and for KD the
  teacher's logits (kd_logit: plus both log-softmaxes) or all its hidden states (kd_hidden).

Saved activations per token and decoder layer, in elements (SDPA attention, no score matrix):
Llama ``9 h + 4 I`` (norm in/out twice, q k v and the attention output, o_proj input; gate, its
activation, up, down's input); Phi ``7 h + 2 I`` (one layer norm shared by the parallel attention
and MLP; fc1's output and its GELU). Not counted: the CUDA context and allocator slack (add 1-3
GB), and transient buffers of the kernels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from study.config import default
from study.config.sections import PruneConfig
from study.config.vocabulary import Method

GB = 1e9
BF16, FP32 = 2, 4
ADAM_STATE_BYTES = FP32 + FP32 + 2 * FP32  # master weight, gradient, two moments
CALIBRATION_BATCH = default(PruneConfig, "calibration_batch_size")

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
}


@dataclass(frozen=True)
class ModelSizes:
    """Parameter counts and the widths that size activations."""

    total: int
    llm: int  # language model + LM head (what ``projector+llm`` trains)
    decoder: int  # decoder layers (what pruning removes)
    vision: int
    projector: int
    largest_layer: int
    family: str  # llama | phi
    hidden: int
    intermediate: int
    layers: int
    kv_dim: int  # KV heads x head dim
    vocab: int
    image_tokens: int
    vision_hidden: int
    vision_layers: int
    vision_tokens: int
    linear_shapes: tuple[tuple[int, int], ...] = field(default=())  # (in, out) of each LoRA target in a layer


def load_llava_config(source: str | Path | dict):
    """A ``LlavaConfig`` from a checkpoint folder, a ``config.json`` or a config dict."""
    from transformers import LlavaConfig

    if isinstance(source, dict):
        return LlavaConfig.from_dict(source)
    path = Path(source)
    return LlavaConfig.from_dict(json.loads((path / "config.json" if path.is_dir() else path).read_text()))


def model_sizes(config) -> ModelSizes:
    """Counts from the model built on the meta device (no memory), widths from the config."""
    import torch
    from transformers import LlavaForConditionalGeneration

    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    text, vision = config.text_config, config.vision_config
    family = "phi" if text.model_type == "phi" else "llama"
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv_dim = (text.num_key_value_heads or text.num_attention_heads) * head_dim
    layers = model.model.language_model.layers
    h, inter = text.hidden_size, text.intermediate_size
    if family == "llama":
        shapes = ((h, h), (h, kv_dim), (h, kv_dim), (h, h), (h, inter), (h, inter), (inter, h))
    else:
        shapes = ((h, h), (h, kv_dim), (h, kv_dim), (h, h), (h, inter), (inter, h))
    patches = (vision.image_size // vision.patch_size) ** 2
    with_cls = vision.model_type == "clip_vision_model"
    vision_tokens = patches + int(with_cls)
    image_tokens = vision_tokens if config.vision_feature_select_strategy == "full" else patches
    head = model.get_output_embeddings()
    llm = count(model.model.language_model) + (count(head) if head.weight is not model.get_input_embeddings().weight else 0)
    return ModelSizes(
        total=count(model),
        llm=llm,
        decoder=count(layers),
        vision=count(model.model.vision_tower),
        projector=count(model.model.multi_modal_projector),
        largest_layer=max(count(layer) for layer in layers),
        family=family,
        hidden=h,
        intermediate=inter,
        layers=text.num_hidden_layers,
        kv_dim=kv_dim,
        vocab=text.vocab_size,
        image_tokens=image_tokens,
        vision_hidden=vision.hidden_size,
        vision_layers=vision.num_hidden_layers,
        vision_tokens=vision_tokens,
        linear_shapes=shapes,
    )


def saved_activation_elements(sizes: ModelSizes, scale: float = 1.0) -> float:
    """Elements autograd saves per token in one decoder layer (see the module docstring)."""
    h, inter = sizes.hidden, sizes.intermediate * scale
    return 9 * h + 4 * inter if sizes.family == "llama" else 7 * h + 2 * inter


def lora_parameters(sizes: ModelSizes, rank: int, layers: int | None = None) -> int:
    """LoRA A and B matrices on every attention and MLP linear of every decoder layer."""
    return (layers or sizes.layers) * sum(rank * (i + o) for i, o in sizes.linear_shapes)


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
            + batch_size * sizes.vision_tokens * sizes.vision_hidden * (sizes.vision_layers + 1) * BF16
            + batch_size * sizes.vocab * FP32,
        },
    )


def pruning(sizes: ModelSizes, metric: str, text_tokens: int, batch: int = CALIBRATION_BATCH) -> Estimate:
    seq = sizes.image_tokens + text_tokens
    vision = batch * sizes.vision_tokens * sizes.vision_hidden * (sizes.vision_layers + 1) * BF16
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
    lora_rank: int = 128,
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
    parts["activations"] += micro * sizes.vision_tokens * sizes.vision_hidden * (sizes.vision_layers + 1) * BF16
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


def estimate_profile(study: dict, sizes: ModelSizes, gpus: int = 8, text_tokens: int = 512, eval_text_tokens: int = 128) -> list[Estimate]:
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
