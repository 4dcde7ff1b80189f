"""The embedded teacher: a tiny stock ``LlavaForConditionalGeneration`` built offline.

CLIP vision tower, LLaVA-1.5's 2-layer GELU projector and a Llama backbone with GQA, plus a local
word-level tokenizer, a CLIP image processor and a ``LlavaProcessor`` with a LLaVA-1.5-style chat
template (``USER: <image>\\n... ASSISTANT: ...</s>``). Saved, it is an ordinary HF folder.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from study.config.sections import TeacherArchitecture
from study.models.tokenizer import build_word_tokenizer

# LLaVA-1.5's conversation format. Each assistant turn ends with the EOS token so the model learns
# to stop; messages may carry a plain string or HF's list of {"type": "image"|"text"} items.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}{{ ' ASSISTANT:' }}"
    "{%- elif message['role'] == 'user' -%}{{ 'USER:' }}"
    "{%- else -%}{{ message['role'] | upper ~ ':' }}{%- endif -%}"
    "{%- if message['content'] is string -%}{{ ' ' ~ message['content'] }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ ' <image>\n' }}{%- else -%}{{ ' ' ~ item['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{{ eos_token }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ ' ASSISTANT:' }}{%- endif -%}"
)
# the template's role markers are one token each: shorter sequences, cheaper training
ROLE_TOKENS = ("USER:", "ASSISTANT:", "SYSTEM:")


def build_processor(texts: Iterable[str], arch: TeacherArchitecture, phrases: Iterable[str] = ()) -> LlavaProcessor:
    """Tokenizer over the words of ``texts`` (``phrases`` kept as single tokens), CLIP image
    processor and LLaVA processor. The image processor is CLIP's PIL backend, named explicitly:
    the same pixels with or without torchvision installed."""
    tokenizer = build_word_tokenizer(texts, whole_tokens=[*ROLE_TOKENS, *phrases])
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": arch.image_size},
        crop_size={"height": arch.image_size, "width": arch.image_size},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=arch.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS, dropped by the "default" strategy
        chat_template=CHAT_TEMPLATE,
    )


def build_teacher(arch: TeacherArchitecture, processor: LlavaProcessor, seed: int) -> LlavaForConditionalGeneration:
    """A randomly initialised teacher whose vocabulary and special ids match ``processor``."""
    tok = processor.tokenizer
    vision = CLIPVisionConfig(
        hidden_size=arch.vision_hidden_size,
        intermediate_size=arch.vision_intermediate_size,
        num_hidden_layers=arch.vision_layers,
        num_attention_heads=arch.vision_heads,
        image_size=arch.image_size,
        patch_size=arch.patch_size,
    )
    text = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        head_dim=arch.hidden_size // arch.num_attention_heads,
        max_position_embeddings=arch.max_position_embeddings,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=processor.image_token_id,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        # the last layer: with -2 (the default) a 2-layer tower would leave its last layer unused
        vision_feature_layer=-1,
        image_seq_length=(arch.image_size // arch.patch_size) ** 2,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    gen = model.generation_config
    gen.pad_token_id, gen.bos_token_id, gen.eos_token_id = tok.pad_token_id, tok.bos_token_id, tok.eos_token_id
    gen.do_sample = False
    return model
