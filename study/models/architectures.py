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
- Phi-3 (Mini-InternVL-4B's Phi-3-mini): *fused* projections. ``self_attn.qkv_proj`` stacks the
  rows of every query head, then every key head, then every value head; ``mlp.gate_up_proj`` the
  gate channels, then the up channels (``o_proj`` and ``down_proj`` as in Llama). The spec names
  each block of rows as a part of its linear (:attr:`DecoderSpec.fused`): saliencies are split
  into the parts, and the fused linear is sliced once with the kept rows of all its parts. Its
  attention takes ``head_dim`` from the config, but splits ``qkv_proj`` by the *config's* query
  head count at every forward, so a layer narrower than the config gets its own view of it
  (:attr:`DecoderSpec.heads_from_config`). With ``longrope`` (Phi-3-mini-128k) the stock config
  checks the rope factors against ``hidden_size / heads`` and refuses any other head count: every
  head stays and only MLP channels go (:attr:`DecoderSpec.heads_fixed_by_rope`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import CONFIG_MAPPING

from study.models.families import attribute
from study.models.layers import text_config


@dataclass(frozen=True)
class DecoderSpec:
    """Where the coupled weights of a decoder layer live. ``q``, ``k``, ``v`` and ``mlp_in`` name
    *parts*: the rows of a linear that shrink with the heads or the channels. A part is its own
    linear (its path), or a block of rows of a fused linear (``fused`` maps it to that linear's
    path); a fused linear stacks its parts' rows in the order ``q, k, v, *mlp_in`` lists them."""

    family: str
    q: str
    k: str
    v: str
    o: str
    mlp_in: tuple[str, ...]  # rows shrink with the intermediate channels
    mlp_out: str  # columns shrink with the intermediate channels
    heads_fixed: bool = False  # the stock attention derives head_dim from hidden_size / heads: no head can go
    fused: tuple[tuple[str, str], ...] = ()  # (part, path of the linear whose rows it is a block of)
    heads_from_config: bool = False  # the attention reads the query head count from its config at every forward
    heads_fixed_by_rope: tuple[str, ...] = ()  # rope types whose stock config refuses any other head count

    def linear(self, part: str) -> str:
        """The path of the linear holding ``part`` (a path names itself)."""
        return dict(self.fused).get(part, part)

    def module(self, layer: nn.Module, part: str) -> nn.Linear:
        return attribute(layer, self.linear(part))

    def row_stacks(self) -> dict[str, tuple[str, ...]]:
        """Each linear whose rows shrink (q, k, v, the MLP's input projections) -> its parts, in row order."""
        stacks: dict[str, tuple[str, ...]] = {}
        for part in (self.q, self.k, self.v, *self.mlp_in):
            stacks[self.linear(part)] = (*stacks.get(self.linear(part), ()), part)
        return stacks

    def linears(self) -> tuple[str, ...]:
        """The path of every linear that width pruning slices."""
        return (*self.row_stacks(), self.o, self.mlp_out)

    def part_rows(self, shape: AttentionShape, intermediate_size: int) -> dict[str, slice]:
        """Where each part's rows lie in its linear's weight, for a layer of ``shape`` with
        ``intermediate_size`` channels (all its rows for an unfused linear)."""
        heads, kv = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
        sizes = {self.q: heads, self.k: kv, self.v: kv, **dict.fromkeys(self.mlp_in, intermediate_size)}
        rows, ends = {}, dict.fromkeys(self.row_stacks(), 0)
        for part, size in sizes.items():
            start = ends[self.linear(part)]
            rows[part] = slice(start, start + size)
            ends[self.linear(part)] = start + size
        return rows


_LLAMA_LIKE = dict(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.o_proj", mlp_out="mlp.down_proj")
_LLAMA_LIKE_BACKBONES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "qwen3_vl_text")
_FIXED_HEADS = ("qwen2_vl_text", "qwen2_5_vl_text")
_PHI3_QKV = {part: "self_attn.qkv_proj" for part in ("self_attn.qkv_proj[q]", "self_attn.qkv_proj[k]", "self_attn.qkv_proj[v]")}
_PHI3_GATE_UP = {part: "mlp.gate_up_proj" for part in ("mlp.gate_up_proj[gate]", "mlp.gate_up_proj[up]")}
SPECS: dict[str, DecoderSpec] = {
    **{name: DecoderSpec(name, mlp_in=("mlp.gate_proj", "mlp.up_proj"), **_LLAMA_LIKE) for name in _LLAMA_LIKE_BACKBONES},
    **{name: DecoderSpec(name, mlp_in=("mlp.gate_proj", "mlp.up_proj"), heads_fixed=True, **_LLAMA_LIKE) for name in _FIXED_HEADS},
    "phi": DecoderSpec(
        "phi", q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.dense", mlp_in=("mlp.fc1",), mlp_out="mlp.fc2"
    ),
    "phi3": DecoderSpec(
        "phi3",
        *_PHI3_QKV,  # q, k, v
        o="self_attn.o_proj",
        mlp_in=tuple(_PHI3_GATE_UP),
        mlp_out="mlp.down_proj",
        fused=(*_PHI3_QKV.items(), *_PHI3_GATE_UP.items()),
        heads_from_config=True,
        heads_fixed_by_rope=("longrope",),
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


def heads_fixed(model: nn.Module) -> bool:
    """Whether width pruning must keep every attention head of ``model``: its stock attention
    derives ``head_dim`` from the hidden size (:attr:`DecoderSpec.heads_fixed`), or its rope type
    is one the stock config checks against ``hidden_size / heads`` (:attr:`DecoderSpec.heads_fixed_by_rope`)."""
    spec = decoder_spec(model)
    rope = getattr(text_config(model), "rope_parameters", None) or {}
    return spec.heads_fixed or rope.get("rope_type") in spec.heads_fixed_by_rope


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
