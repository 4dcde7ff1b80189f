"""Tiny random checkpoints of every image-text-to-text family the toolkit supports, built offline.

``build_family(kind, folder)`` writes a standard HF folder (config, safetensors, tokenizer, the
family's image processor and processor files, a chat template) that
``AutoModelForImageTextToText.from_pretrained`` loads. Everything is tiny (text hidden size 64,
2-4 decoder layers, 4 query heads over 2 KV heads where the family allows, a 2-layer vision tower on
16-32 px images), so an image is a handful of tokens and all kinds build in seconds. The tokenizer
is word-level over a few sentences plus the family's own special tokens; each chat template follows
its family's turn markers and image placeholder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForImageTextToText,
    CLIPVisionConfig,
    Gemma2Config,
    Gemma3Config,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    Gemma3TextConfig,
    GemmaConfig,
    GotOcr2ImageProcessorPil,
    Idefics3Config,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    Idefics3VisionConfig,
    InternVLConfig,
    InternVLVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaNextConfig,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionImageProcessorPil,
    Mistral3Config,
    MistralConfig,
    Phi3Config,
    PhiConfig,
    PixtralImageProcessorPil,
    PixtralVisionConfig,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLTextConfig,
    Qwen2_5_VLVisionConfig,
    Qwen2Config,
    Qwen2VLConfig,
    Qwen2VLImageProcessorPil,
    Qwen2VLTextConfig,
    Qwen2VLVisionConfig,
    Qwen3Config,
    Qwen3VLConfig,
    Qwen3VLTextConfig,
    Qwen3VLVisionConfig,
    SiglipVisionConfig,
    SmolVLMConfig,
    SmolVLMImageProcessorPil,
    SmolVLMVisionConfig,
)

from study.models.processing import image_only_processor_class
from study.models.teacher import build_processor
from tests.conftest import TINY

WORDS = "What colour is the circle in the image ? It is red . Describe the picture : a blue square left of a green triangle . yes no"
PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
# M-RoPE splits head_dim / 2 = 8 rotary frequencies over (time, height, width)
MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
QWEN_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
}


def build_family(kind: str, folder: Path, seed: int = 0) -> Path:
    """Write a tiny random checkpoint of ``kind`` (one of :data:`KINDS`) to ``folder``."""
    if kind not in KINDS:
        raise ValueError(f"unknown family kind {kind!r}; known: {', '.join(KINDS)}")
    config, processor, video_processor = KINDS[kind]()
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    tok = processor.tokenizer
    gen = model.generation_config
    gen.pad_token_id, gen.bos_token_id, gen.eos_token_id, gen.do_sample = tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, False
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    if video_processor is not None:  # what the family's full processor would also write
        file = folder / "processor_config.json"
        file.write_text(json.dumps({**json.loads(file.read_text()), "video_processor": video_processor}, indent=2))
    return folder


def word_tokenizer(special: dict[str, str] | None = None, extra: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over :data:`WORDS`; ``special`` (attribute -> token, e.g.
    ``{"image_token": "<image>"}``) and ``extra`` are added as special tokens, so each stays one
    token and ``tokenizer.<attribute>`` / ``<attribute>_id`` name them as processors expect."""
    special = special or {}
    specials = [PAD, BOS, EOS, UNK, *special.values(), *extra]
    pre = pre_tokenizers.Whitespace()
    words = sorted({w for w, _ in pre.pre_tokenize_str(WORDS + " user assistant model system User Assistant")})
    vocab = {tok: i for i, tok in enumerate([*dict.fromkeys(specials), *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre
    tok.add_special_tokens(list(dict.fromkeys(specials)))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK, padding_side="left", extra_special_tokens=special
    )


def chat_template(user: str, assistant: str, end: str, image: str, start: str = "") -> str:
    """A chat template in a family's format: ``start``, then each turn as its role marker (``user``
    or ``assistant``), its content (``image`` for each image item) and ``end``."""
    markers = dict(start=start, user=user, assistant=assistant, end=end, image=image)
    return "".join(f"{{%- set {name} = {json.dumps(value)} -%}}" for name, value in markers.items()) + TEMPLATE_BODY


TEMPLATE_BODY = (
    "{{ start }}"
    "{%- for message in messages -%}"
    "{{ assistant if message['role'] == 'assistant' else user }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for item in message['content'] -%}{{ image if item['type'] == 'image' else item['text'] }}{%- endfor -%}"
    "{%- endif -%}"
    "{{ end }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ assistant }}{%- endif -%}"
)


def text_config(cls, tok: PreTrainedTokenizerFast, **overrides):
    """A tiny decoder config of class ``cls`` over ``tok``'s vocabulary."""
    ids = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return cls(vocab_size=len(tok), **ids, **{"max_position_embeddings": 512, **TEXT, **overrides})


# LLaVA: the embedded teacher's processor (CLIP at 16 px, 4 px patches: 16 image tokens), the
# test teacher's towers with the text width of the other kinds
LLAVA_ARCH = replace(TINY, hidden_size=64, intermediate_size=128, num_hidden_layers=2, image_size=16, patch_size=4)


def llava(text_cls, **text_overrides) -> Callable[[], tuple]:
    """LLaVA-1.5 over a ``text_cls`` backbone."""

    def build():
        processor = build_processor([WORDS], LLAVA_ARCH)
        config = LlavaConfig(
            vision_config=CLIPVisionConfig(**VISION, image_size=16, patch_size=4),
            text_config=text_config(text_cls, processor.tokenizer, **text_overrides),
            image_token_index=processor.image_token_id,
            vision_feature_select_strategy="default",
            vision_feature_layer=-1,
            image_seq_length=16,
        )
        return config, processor, None

    return build


def llava_next():
    """LLaVA-NeXT (Llama): CLIP at 16 px plus anyres tiles of a 32 px grid."""
    tok = word_tokenizer({"image_token": "<image>"})
    pinpoints = [[16, 32], [32, 16], [32, 32]]
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}, image_grid_pinpoints=pinpoints
    )
    processor = LlavaNextProcessor(
        image_processor,
        tok,
        patch_size=4,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=chat_template("USER: ", " ASSISTANT:", "", "<image>\n"),
    )
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**VISION, image_size=16, patch_size=4),
        text_config=text_config(LlamaConfig, tok),
        image_token_index=tok.image_token_id,
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1,
        image_seq_length=16,
    )
    return config, processor, None


def llava_onevision():
    """LLaVA-OneVision (Qwen2): SigLIP at 16 px, anyres tiles of a 32 px grid."""
    tok = word_tokenizer({"image_token": "<image>", "video_token": "<video>"}, ("<|im_start|>", "<|im_end|>"))
    pinpoints = [[16, 16], [16, 32], [32, 16], [32, 32]]
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": 16, "width": 16}, image_grid_pinpoints=pinpoints)
    cls = image_only_processor_class("LlavaOnevisionProcessor")
    processor = cls(
        image_processor,
        tok,
        num_image_tokens=16,
        vision_feature_select_strategy="full",
        chat_template=chat_template("<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>\n", "<image>\n"),
    )
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**VISION, image_size=16, patch_size=4),
        text_config=text_config(Qwen2Config, tok),
        image_token_index=tok.image_token_id,
        video_token_index=tok.video_token_id,
        image_grid_pinpoints=pinpoints,
    )
    video = {"video_processor_type": "LlavaOnevisionVideoProcessor", "size": {"height": 16, "width": 16}}
    return config, processor, video


def qwen_vl(version: str):
    """Qwen2-VL, Qwen2.5-VL or Qwen3-VL: 4 px patches merged 2x2, images resized to at most 16x16
    pixels (4 image tokens)."""

    def build():
        tok = word_tokenizer(QWEN_TOKENS, ("<|im_start|>", "<|im_end|>"))
        image_processor = Qwen2VLImageProcessorPil(
            patch_size=4, merge_size=2, temporal_patch_size=2, size={"shortest_edge": 64, "longest_edge": 1024}
        )
        processor = image_only_processor_class(PROCESSORS[version])(
            image_processor,
            tok,
            chat_template=chat_template(
                "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>\n", "<|vision_start|><|image_pad|><|vision_end|>"
            ),
        )
        patches = dict(patch_size=4, spatial_merge_size=2, temporal_patch_size=2)
        tower = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, **patches)  # 2.5 and 3
        if version == "qwen2_vl":
            vision = Qwen2VLVisionConfig(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, **patches)
            text = text_config(Qwen2VLTextConfig, tok, rope_parameters=MROPE)
            cls = Qwen2VLConfig
        elif version == "qwen2_5_vl":
            vision = Qwen2_5_VLVisionConfig(window_size=16, fullatt_block_indexes=[1], **tower)
            text = text_config(Qwen2_5_VLTextConfig, tok, rope_parameters=MROPE)
            cls = Qwen2_5_VLConfig
        else:
            vision = Qwen3VLVisionConfig(num_position_embeddings=16, deepstack_visual_indexes=[0], **tower)
            text = text_config(Qwen3VLTextConfig, tok, rope_parameters={**MROPE, "mrope_interleaved": True})
            cls = Qwen3VLConfig
        ids = {f"{k}_id": tok.convert_tokens_to_ids(v) for k, v in QWEN_TOKENS.items()}
        config = cls(vision_config=vision, text_config=text, **ids)
        video = {"video_processor_type": VIDEO_PROCESSORS[version], "patch_size": 4, "merge_size": 2, "temporal_patch_size": 2}
        return config, processor, video

    return build


PROCESSORS = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen3_vl": "Qwen3VLProcessor"}
VIDEO_PROCESSORS = {"qwen2_vl": "Qwen2VLVideoProcessor", "qwen2_5_vl": "Qwen2VLVideoProcessor", "qwen3_vl": "Qwen3VLVideoProcessor"}


CHATML = ("<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>\n")


def internvl(text_cls, turns: tuple[str, str, str] = CHATML, markers: tuple[str, ...] = ("<|im_start|>", "<|im_end|>"), **text_overrides):
    """InternVL over a ``text_cls`` backbone: 16 px tiles of 4 px patches, pixel-shuffled 2x2 (4
    tokens per tile), up to 2 tiles plus a thumbnail; chat turns as ``turns`` (user, assistant,
    end) with the special tokens ``markers``."""

    def build():
        special = {
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        }
        tok = word_tokenizer(special, markers)
        image_processor = GotOcr2ImageProcessorPil(size={"height": 16, "width": 16}, crop_to_patches=True, max_patches=2)
        processor = image_only_processor_class("InternVLProcessor")(
            image_processor,
            tok,
            image_seq_length=4,
            chat_template=chat_template(*turns, "<IMG_CONTEXT>\n"),
        )
        config = InternVLConfig(
            vision_config=InternVLVisionConfig(**VISION, image_size=[16, 16], patch_size=[4, 4]),
            text_config=text_config(text_cls, tok, **text_overrides),
            image_token_id=tok.context_image_token_id,
            image_seq_length=4,
        )
        video = {"video_processor_type": "InternVLVideoProcessor", "size": {"height": 16, "width": 16}}
        return config, processor, video

    return build


def gemma3():
    """Gemma 3: SigLIP at 16 px (16 patches) average-pooled to 4 image tokens; 4 decoder layers,
    3 sliding-window (8 tokens) then 1 global."""
    special = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tok = word_tokenizer(special, ("<start_of_turn>", "<end_of_turn>"))
    processor = Gemma3Processor(
        Gemma3ImageProcessorPil(size={"height": 16, "width": 16}),
        tok,
        image_seq_length=4,
        chat_template=chat_template("<start_of_turn>user\n", "<start_of_turn>model\n", "<end_of_turn>\n", "<start_of_image>", start=BOS),
    )
    text = text_config(
        Gemma3TextConfig,
        tok,
        num_hidden_layers=4,
        layer_types=["sliding_attention"] * 3 + ["full_attention"],
        sliding_window=8,
        query_pre_attn_scalar=16,
    )
    config = Gemma3Config(
        vision_config=SiglipVisionConfig(**VISION, image_size=16, patch_size=4),
        text_config=text,
        mm_tokens_per_image=4,
        boi_token_index=tok.boi_token_id,
        eoi_token_index=tok.eoi_token_id,
        image_token_index=tok.image_token_id,
    )
    return config, processor, None


# what Idefics3 and SmolVLM wrap image tiles in: the tile's row and column, the global image
IDEFICS_TOKENS = (
    "<fake_token_around_image>",
    "<global-img>",
    "<end_of_utterance>",
    *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)),
)


def idefics3():
    """Idefics3 (Llama): 16 px tiles of 4 px patches, pixel-shuffled 2x2 (4 tokens per tile); a
    32 px image is split into 2x2 tiles plus the global image."""
    tok = word_tokenizer({"image_token": "<image>"}, IDEFICS_TOKENS)
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 32}, max_image_size={"longest_edge": 16})
    processor = Idefics3Processor(
        image_processor,
        tok,
        image_seq_len=4,
        chat_template=chat_template("User:", "Assistant:", "<end_of_utterance>\n", "<image>", start=BOS),
    )
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(**VISION, image_size=16, patch_size=4),
        text_config=text_config(LlamaConfig, tok),
        image_token_id=tok.image_token_id,
        scale_factor=2,
    )
    return config, processor, None


def smolvlm():
    """SmolVLM (SmolLM2, a Llama): Idefics3's tiling (16 px tiles of 4 px patches, pixel-shuffled
    2x2; a 32 px image is 2x2 tiles plus the global image) with its own processor and chat template."""
    tok = word_tokenizer({"image_token": "<image>"}, ("<|im_start|>", *IDEFICS_TOKENS))
    image_processor = SmolVLMImageProcessorPil(size={"longest_edge": 32}, max_image_size={"longest_edge": 16})
    processor = image_only_processor_class("SmolVLMProcessor")(
        image_processor,
        tok,
        video_processor=None,  # the class requires the argument; the image-only variant holds none
        image_seq_len=4,
        chat_template=chat_template("User:", "Assistant:", "<end_of_utterance>\n", "<image>", start="<|im_start|>"),
    )
    config = SmolVLMConfig(
        vision_config=SmolVLMVisionConfig(**VISION, image_size=16, patch_size=4),
        text_config=text_config(LlamaConfig, tok),
        image_token_id=tok.image_token_id,
        scale_factor=2,
    )
    video = {"video_processor_type": "SmolVLMVideoProcessor", "size": {"longest_edge": 32}, "max_image_size": {"longest_edge": 16}}
    return config, processor, video


def mistral3():
    """Mistral 3: Pixtral vision (4 px patches) merged 2x2, images resized to at most 16 px: a row of
    2 ``[IMG]`` tokens per 8 px, rows closed by ``[IMG_BREAK]`` / ``[IMG_END]``."""
    tok = word_tokenizer({"image_token": "[IMG]"}, ("[IMG_BREAK]", "[IMG_END]", "[INST]", "[/INST]"))
    cls = image_only_processor_class("PixtralProcessor")
    processor = cls(
        PixtralImageProcessorPil(size={"longest_edge": 16}, patch_size=4),
        tok,
        patch_size=4,
        spatial_merge_size=2,
        chat_template=chat_template("[INST]", "[/INST]", "", "[IMG]", start=BOS),
    )
    config = Mistral3Config(
        vision_config=PixtralVisionConfig(**VISION, head_dim=16, image_size=16, patch_size=4),
        text_config=text_config(MistralConfig, tok, sliding_window=None),
        image_token_index=tok.image_token_id,
        spatial_merge_size=2,
    )
    return config, processor, None


PHI3_TURNS = ("<|user|>\n", "<|assistant|>\n", "<|end|>\n")
# Mini-InternVL-4B's Phi-3-mini-128k in tiny: every query head its own key/value head, longrope
# (short factors up to the original 4096 positions, here 256; 32 times as many positions in all)
MINI_INTERNVL_4B = dict(
    num_key_value_heads=4,
    original_max_position_embeddings=256,
    max_position_embeddings=8192,
    rope_parameters={
        "rope_type": "longrope",
        "rope_theta": 10000.0,
        "short_factor": [1.0, 1.0, 1.05, 1.1, 1.2, 1.4, 1.7, 2.0],
        "long_factor": [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0],
    },
)

KINDS: dict[str, Callable[[], tuple]] = {
    "llava-llama": llava(LlamaConfig),
    "llava-mistral": llava(MistralConfig, sliding_window=None),
    "llava-qwen2": llava(Qwen2Config),
    "llava-phi": llava(PhiConfig, partial_rotary_factor=0.5),
    "llava-gemma": llava(GemmaConfig, num_key_value_heads=1),
    "llava-gemma2": llava(Gemma2Config, sliding_window=8, query_pre_attn_scalar=16),
    "llava-qwen3": llava(Qwen3Config),
    "llava-phi3": llava(Phi3Config),  # fused qkv_proj / gate_up_proj over GQA, default rope: width cuts heads
    "llava_next": llava_next,
    "llava_onevision": llava_onevision,
    "qwen2_vl": qwen_vl("qwen2_vl"),
    "qwen2_5_vl": qwen_vl("qwen2_5_vl"),
    "qwen3_vl": qwen_vl("qwen3_vl"),
    "internvl": internvl(Qwen2Config),
    "internvl-llama": internvl(LlamaConfig),
    "internvl-phi3": internvl(Phi3Config, PHI3_TURNS, ("<|user|>", "<|assistant|>", "<|end|>"), **MINI_INTERNVL_4B),
    "gemma3": gemma3,
    "idefics3": idefics3,
    "smolvlm": smolvlm,
    "mistral3": mistral3,
}
