"""Which weights of a decoder layer shrink together, per architecture family: the one place that
knows attribute names. Pruning code asks :func:`decoder_spec`; it never hard-codes a path.

- Llama / Vicuna / Mistral / Qwen2: ``self_attn.{q,k,v}_proj`` rows and ``o_proj`` columns per
  head (query heads grouped over key/value heads with GQA), ``mlp.{gate,up}_proj`` rows and
  ``mlp.down_proj`` columns per intermediate channel. Qwen2 has biases on q/k/v.
- Phi (Bunny's Phi-2): ``self_attn.{q,k,v}_proj`` + ``self_attn.dense`` (not ``o_proj``),
  ``mlp.fc1`` rows + ``mlp.fc2`` columns, biases everywhere, partial rotary (unaffected by
  removing whole heads).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from study.models.layers import text_config


@dataclass(frozen=True)
class DecoderSpec:
    family: str
    q: str
    k: str
    v: str
    o: str
    mlp_in: tuple[str, ...]  # rows shrink with the intermediate channels
    mlp_out: str  # columns shrink with the intermediate channels

    def module(self, layer: nn.Module, path: str) -> nn.Linear:
        for attr in path.split("."):
            layer = getattr(layer, attr)
        return layer


_LLAMA_LIKE = dict(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.o_proj", mlp_out="mlp.down_proj")
SPECS: dict[str, DecoderSpec] = {
    "llama": DecoderSpec("llama", mlp_in=("mlp.gate_proj", "mlp.up_proj"), **_LLAMA_LIKE),
    "mistral": DecoderSpec("mistral", mlp_in=("mlp.gate_proj", "mlp.up_proj"), **_LLAMA_LIKE),
    "qwen2": DecoderSpec("qwen2", mlp_in=("mlp.gate_proj", "mlp.up_proj"), **_LLAMA_LIKE),
    "phi": DecoderSpec(
        "phi", q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.dense", mlp_in=("mlp.fc1",), mlp_out="mlp.fc2"
    ),
}


def decoder_spec(model: nn.Module) -> DecoderSpec:
    """The spec of ``model``'s language backbone; a clear error for an unsupported one."""
    model_type = getattr(text_config(model), "model_type", None)
    if model_type not in SPECS:
        raise ValueError(f"unsupported language backbone {model_type!r}; supported: {', '.join(sorted(SPECS))}")
    return SPECS[model_type]


@dataclass(frozen=True)
class AttentionShape:
    num_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads


def attention_shape(model: nn.Module) -> AttentionShape:
    config = text_config(model)
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return AttentionShape(heads, kv, head_dim)
