"""Batched greedy generation over a JSONL question file (LLaVA's evaluation format).

A question is ``{"question_id", "image"?, "text", "answer"?, "category"?, "type"?}``; the image is
relative to an image folder. The prompt is the processor's chat template applied to one user turn
(the image first, as LLaVA's ``model_vqa`` scripts do), then ``generate`` with the KV cache. Each
batch is encoded on the CPU and moved to the model's device and dtype.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm  # text bars: readable in stage logs and executed notebooks

from study.data.llava import load_image
from study.models.device import move_to_model


def read_questions(path: str | Path) -> list[dict]:
    rows = []
    for line_no, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if "question_id" not in row or "text" not in row:
            raise ValueError(f"{path}:{line_no}: a question needs 'question_id' and 'text', got keys {sorted(row)}")
        rows.append(row)
    return rows


def prompt_messages(question: dict) -> list[dict]:
    content = [{"type": "image"}] if question.get("image") else []
    content.append({"type": "text", "text": question["text"]})
    return [{"role": "user", "content": content}]


def encode_prompts(questions: Sequence[dict], processor, image_folder: str | Path | None) -> dict:
    """Left-padded prompts (and images) for a batch of questions, ready for ``generate``."""
    prompts = [processor.apply_chat_template(prompt_messages(q), tokenize=False, add_generation_prompt=True) for q in questions]
    images = [load_image({"id": q["question_id"], "image": q["image"]}, image_folder) for q in questions if q.get("image")]
    tokenizer = processor.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # generation appends on the right
    try:
        return processor(text=prompts, images=images or None, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side


@torch.no_grad()
def generate_answers(
    model,
    processor,
    questions: Sequence[dict],
    image_folder: str | Path | None = None,
    batch_size: int = 64,
    max_new_tokens: int = 16,
    progress: bool = True,
) -> list[str]:
    """Greedy answers, in the order of ``questions``."""
    model.eval()
    answers: list[str] = []
    starts = range(0, len(questions), batch_size)
    for start in tqdm(starts, desc="generate", disable=not progress):
        enc = move_to_model(encode_prompts(questions[start : start + batch_size], processor, image_folder), model)
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=processor.tokenizer.pad_token_id,
        )
        answers += processor.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return [a.strip() for a in answers]
