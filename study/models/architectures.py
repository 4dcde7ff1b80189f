"""Which weights of a decoder layer shrink together, per architecture family: the one place that
knows attribute names. Pruning code asks :func:`decoder_spec`; it never hard-codes a path.

- Llama / Vicuna / Mistral / Qwen2 / Qwen3 / Gemma 1-3 and the Qwen-VL text models:
  ``self_attn.{q,k,v}_proj`` rows and ``o_proj`` columns per head (query heads grouped over
  key/value heads with GQA), ``mlp.{gate,up}_proj`` rows and ``mlp.down_proj`` columns per
  intermediate channel. Qwen2 and Qwen2/2.5-VL have biases on q/k/v. The per-head ``q_norm`` /
  ``k_norm`` of Qwen3, Qwen3-VL and Gemma 3 weigh the ``head_dim`` positions shared by every head,
  so they stay as they are when whole heads go; so do Gemma's extra block norms (on the hidden
  size, never pruned). The Qwen2-VL and Qwen2.5-VL text attention computes ``head_dim`` as
  ``hidden_size / heads`` whatever the config says, so no stock folder can hold fewer heads: their
  width pruning keeps every head and removes MLP channels only (``heads_fixed``).
- Phi (Bunny's Phi-2): ``self_attn.{q,k,v}_proj`` + ``self_attn.dense`` (not ``o_proj``),
  ``mlp.fc1`` rows + ``mlp.fc2`` columns, biases everywhere, partial rotary (unaffected by
  removing whole heads).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import CONFIG_MAPPING

from study.models.families import attribute
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
    heads_fixed: bool = False  # the stock attention derives head_dim from hidden_size / heads: no head can go

    def module(self, layer: nn.Module, path: str) -> nn.Linear:
        return attribute(layer, path)


_LLAMA_LIKE = dict(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.o_proj", mlp_out="mlp.down_proj")
_LLAMA_LIKE_BACKBONES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "qwen3_vl_text")
_FIXED_HEADS = ("qwen2_vl_text", "qwen2_5_vl_text")
SPECS: dict[str, DecoderSpec] = {
    **{name: DecoderSpec(name, mlp_in=("mlp.gate_proj", "mlp.up_proj"), **_LLAMA_LIKE) for name in _LLAMA_LIKE_BACKBONES},
    **{name: DecoderSpec(name, mlp_in=("mlp.gate_proj", "mlp.up_proj"), heads_fixed=True, **_LLAMA_LIKE) for name in _FIXED_HEADS},
    "phi": DecoderSpec(
        "phi", q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.dense", mlp_in=("mlp.fc1",), mlp_out="mlp.fc2"
    ),
}


# A stock config that computes the same function as the key's and accepts any head count: stock
# ``LlamaConfig`` refuses ``hidden_size % num_attention_heads != 0`` even with ``head_dim`` set,
# while ``MistralConfig`` builds the same modules (no biases, RMSNorm, SwiGLU, RoPE) from an
# explicit ``head_dim``, and without a sliding window attends exactly as Llama does.
EQUIVALENT_CONFIG = {"llama": "mistral"}


def stock_text_config(config):
    """``config`` when its own class accepts its values, else the equivalent stock config
    (:data:`EQUIVALENT_CONFIG`) with the same values, which ``from_pretrained`` turns into the same
    computation; an error when there is none or when the config uses something it lacks."""
    try:
        config.validate()
        return config
    except Exception as err:  # huggingface_hub's StrictDataclassClassValidationError, or a ValueError
        refused = err
    target = EQUIVALENT_CONFIG.get(config.model_type)
    if target is None:
        raise ValueError(f"the pruned {config.model_type} config is not valid and has no equivalent stock config: {refused}")
    values = config.to_dict()
    if target == "mistral":
        extras = {k: values.get(k) for k in ("attention_bias", "mlp_bias") if values.get(k)}
        if values.get("pretraining_tp", 1) != 1:
            extras["pretraining_tp"] = values["pretraining_tp"]
        if extras:
            raise ValueError(f"a {config.model_type} config with {extras} has no mistral equivalent; {refused}")
        values["sliding_window"] = None
    cls = CONFIG_MAPPING[target]
    known = set(cls().to_dict())
    converted = cls(**{k: v for k, v in values.items() if k in known and k != "model_type"})
    converted.validate()
    return converted


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
