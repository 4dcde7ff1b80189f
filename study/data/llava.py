"""Reading LLaVA conversation data (``llava_v1_5_mix665k.json`` and the like) for training.

A sample is ``{"id", "image"?, "conversations": [{"from": "human"|"gpt", "value": ...}, ...]}``;
``image`` is relative to an image folder and absent for text-only samples, and the ``<image>``
placeholder sits in a human turn (usually ``"<image>\\n"`` at the start of the first).

Each sample is rendered with the processor's own chat template, tokenised with the image
placeholder expanded to the vision tower's token count, and labelled so that only the assistant's
answers (including the end-of-turn token the template emits) count in the loss. The answer spans
are found by rendering the conversation prefix by prefix, so any template that renders a prefix of
the conversation as a prefix of the whole works: no per-template token arithmetic.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

IMAGE_PLACEHOLDER = "<image>"
IGNORE_INDEX = -100
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


class LlavaFormatError(ValueError):
    """A sample that does not follow the LLaVA conversation format; the message names it."""


def read_samples(path: str | Path) -> list[dict]:
    """Load and validate a LLaVA conversation JSON (a list of samples)."""
    path = Path(path)
    samples = json.loads(path.read_text())
    if not isinstance(samples, list):
        raise LlavaFormatError(f"{path}: expected a JSON list of samples, got {type(samples).__name__}")
    for index, sample in enumerate(samples):
        validate_sample(sample, index)
    return samples


def sample_name(sample: dict, index: int | None = None) -> str:
    where = f" (index {index})" if index is not None else ""
    return f"sample {sample.get('id', '?')!r}{where}"


def validate_sample(sample: dict, index: int | None = None) -> None:
    """Raise :class:`LlavaFormatError` naming the sample if its conversation is malformed."""
    name = sample_name(sample, index)
    turns = sample.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise LlavaFormatError(f"{name}: 'conversations' must be a non-empty list")
    if turns[0].get("from") == "system":
        turns = turns[1:]
    for i, turn in enumerate(turns):
        expected = ("human", "gpt")[i % 2]
        if not isinstance(turn, dict) or turn.get("from") != expected or not isinstance(turn.get("value"), str):
            got = turn.get("from") if isinstance(turn, dict) else turn
            raise LlavaFormatError(
                f"{name}: turn {i} must be from {expected!r} with a string 'value' (turns must alternate human/gpt), got {got!r}"
            )
    if len(turns) % 2:
        raise LlavaFormatError(f"{name}: the conversation ends with a human turn that has no answer")
    n_placeholders = sum(t["value"].count(IMAGE_PLACEHOLDER) for t in turns)
    if any(IMAGE_PLACEHOLDER in t["value"] for t in turns if t["from"] == "gpt"):
        raise LlavaFormatError(f"{name}: {IMAGE_PLACEHOLDER} appears in an assistant turn")
    if "image" in sample and n_placeholders != 1:
        raise LlavaFormatError(f"{name}: has image {sample['image']!r} but {n_placeholders} {IMAGE_PLACEHOLDER} tokens (expected 1)")
    if "image" not in sample and n_placeholders:
        raise LlavaFormatError(f"{name}: has an {IMAGE_PLACEHOLDER} token but no 'image'")


def to_messages(sample: dict) -> list[dict]:
    """LLaVA turns as HF chat messages; the placeholder becomes an image item where it stood."""
    messages = []
    for turn in sample["conversations"]:
        role = ROLES[turn["from"]]
        text = turn["value"]
        if IMAGE_PLACEHOLDER not in text:
            messages.append({"role": role, "content": [{"type": "text", "text": text}]})
            continue
        before, after = (part.strip() for part in text.split(IMAGE_PLACEHOLDER, 1))
        content = [{"type": "text", "text": before}] if before else []
        content.append({"type": "image"})
        if after:
            content.append({"type": "text", "text": after})
        messages.append({"role": role, "content": content})
    return messages


def without_image(sample: dict) -> dict:
    """The sample as text only: no image, no placeholder."""
    turns = [{**t, "value": t["value"].replace(IMAGE_PLACEHOLDER, "").strip()} for t in sample["conversations"]]
    return {k: v for k, v in sample.items() if k != "image"} | {"conversations": turns}


def load_image(sample: dict, image_folder: str | Path) -> Image.Image:
    path = Path(image_folder) / sample["image"]
    if not path.is_file():
        raise FileNotFoundError(f"{sample_name(sample)}: image file not found: {path}")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise LlavaFormatError(f"{sample_name(sample)}: cannot read image {path}: {err}") from err


def answer_spans(messages: list[dict], processor) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns."""
    render = processor.apply_chat_template
    full = render(messages, tokenize=False)
    spans = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(messages[:k], tokenize=False, add_generation_prompt=True)
        upto = render(messages[: k + 1], tokenize=False)
        if not (upto.startswith(prompt) and full.startswith(upto)):
            raise ValueError("the chat template does not render a conversation prefix as a prefix of the whole; cannot locate the answers")
        spans.append((len(prompt), len(upto)))
    return full, spans


def encode_sample(sample: dict, processor, image: Image.Image | None, max_length: int | None = None) -> dict:
    """``input_ids``, ``attention_mask``, ``labels`` (answers only) and whatever else the
    processor returns for the sample (``pixel_values`` and the family's image inputs, e.g.
    ``image_grid_thw``, ``image_sizes``, ``token_type_ids``), each as :func:`collate` takes it:
    per-token inputs as 1-D tensors, image inputs with the processor's leading dimension."""
    text, spans = answer_spans(to_messages(sample), processor)
    enc = processor(text=[text], images=[image] if image is not None else None, return_tensors="pt")
    ids = enc["input_ids"][0]
    labels = torch.full_like(ids, IGNORE_INDEX)
    for t in _answer_tokens(text, spans, processor.tokenizer, ids):
        labels[t] = ids[t]
    if max_length is not None and len(ids) > max_length:
        if bool(torch.isin(ids[max_length:], torch.tensor(_image_token_ids(processor))).any()):
            raise ValueError(f"{sample_name(sample)}: max_length {max_length} would cut the image tokens ({len(ids)} tokens)")
        ids, labels = ids[:max_length], labels[:max_length]
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    for key, value in enc.items():
        if key in out or not isinstance(value, torch.Tensor):
            continue
        out[key] = value[0, : len(ids)] if value.shape == enc["input_ids"].shape else value  # per token, or image inputs
    return out


def _answer_tokens(text: str, spans: list[tuple[int, int]], tokenizer, ids: torch.Tensor) -> list[int]:
    """Positions in ``ids`` (the processor's tokens, image placeholder expanded) of the tokens
    inside the character ``spans`` of ``text``. The text is tokenised alone for its offsets; the
    two token sequences agree before and after the image, whatever the family's expansion (image
    tokens, tile separators, wrappers), so tokens after it move by the expansion's length."""
    plain = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    plain_ids, offsets, full = plain["input_ids"], plain["offset_mapping"], ids.tolist()
    n, m = len(plain_ids), len(full)
    head = 0  # tokens the two sequences share at the start
    while head < min(n, m) and plain_ids[head] == full[head]:
        head += 1
    tail = 0  # and at the end, not overlapping the start
    while tail < min(n, m) - head and plain_ids[n - 1 - tail] == full[m - 1 - tail]:
        tail += 1
    tokens = []
    for t, (s, e) in enumerate(offsets):
        if not (e > s and any(a <= s and e <= b for a, b in spans)):
            continue
        if head <= t < n - tail:
            raise ValueError("an answer overlaps the image placeholder's tokens; cannot label it")
        tokens.append(t if t < head else t + m - n)
    return tokens


def _image_token_ids(processor) -> list[int]:
    """The token ids that stand for image content in the processor's output."""
    ids = getattr(processor, "image_token_ids", None) or [processor.image_token_id]
    return [int(i) for i in ids]


class LlavaDataset(torch.utils.data.Dataset):
    """Samples of a LLaVA conversation file, encoded on access (optionally memoised)."""

    def __init__(self, samples: Sequence[dict], image_folder: str | Path, processor, max_length: int | None = None, cache: bool = False):
        self.samples, self.image_folder, self.processor = samples, Path(image_folder), processor
        self.max_length = max_length
        self._cache: dict[int, dict] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        sample = self.samples[index]
        image = load_image(sample, self.image_folder) if "image" in sample else None
        item = encode_sample(sample, self.processor, image, self.max_length)
        if self._cache is not None:
            self._cache[index] = item
        return item


def collate(batch: list[dict], pad_token_id: int, padding_side: str = "left") -> dict:
    """Pad the per-token tensors to the longest sample (``input_ids`` with the pad token,
    ``labels`` with -100, the others with 0); join the image inputs of the samples that have them
    along their first dimension, zero-padded where their other sizes differ (LLaVA-NeXT's tiles)."""
    width = max(len(item["input_ids"]) for item in batch)
    fills = {"input_ids": pad_token_id, "labels": IGNORE_INDEX}
    out = {}
    for key in dict.fromkeys(k for item in batch for k in item):
        values = [item[key] for item in batch if key in item]
        if all(item[key].shape == item["input_ids"].shape for item in batch if key in item):  # per token
            rows = []
            for value in values:
                pad = torch.full((width - len(value),), fills.get(key, 0), dtype=value.dtype)
                rows.append(torch.cat([pad, value] if padding_side == "left" else [value, pad]))
            out[key] = torch.stack(rows)
        else:
            out[key] = _join(values)
    return out


def _join(values: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along the first dimension, zero-padding the other dimensions to the largest."""
    shape = [max(v.shape[d] for v in values) for d in range(1, values[0].dim())]
    padded = []
    for value in values:
        grow = [x for d in reversed(range(1, value.dim())) for x in (0, shape[d - 1] - value.shape[d])]
        padded.append(torch.nn.functional.pad(value, grow) if any(grow) else value)
    return torch.cat(padded)


def calibration_samples(train_json: str | Path, image_folder: str | Path, n_samples: int, seed: int, text_only: bool = False) -> list[dict]:
    """``n_samples`` samples of ``train_json`` drawn by seed (text only with ``text_only``: images
    and their placeholders dropped), each checked to be usable: a well-formed conversation and, for
    a sample with an image, an image file that exists. Needs no model, so a pruning run can refuse
    bad calibration data before loading a checkpoint; a file with fewer samples than asked is an
    error rather than a silently smaller calibration set."""
    import random

    if n_samples < 1:
        raise ValueError(f"calibration samples must be >= 1, got {n_samples}")
    samples = read_samples(train_json)
    if len(samples) < n_samples:
        raise ValueError(f"{train_json} holds {len(samples)} samples, fewer than the {n_samples} calibration samples asked for")
    chosen = random.Random(f"calibration-{seed}").sample(samples, n_samples)
    if text_only:
        return [without_image(s) for s in chosen]
    if any("image" in s for s in chosen) and not Path(image_folder).is_dir():
        raise FileNotFoundError(f"image folder not found: {image_folder}")
    for sample in chosen:
        if "image" in sample and not (Path(image_folder) / sample["image"]).is_file():
            raise FileNotFoundError(f"{sample_name(sample)}: image file not found: {Path(image_folder) / sample['image']}")
    return chosen


def encode_batches(samples: Sequence[dict], image_folder: str | Path, processor, batch_size: int = 16) -> list[dict]:
    """``samples`` encoded and collated in batches of ``batch_size``, as the model sees them in use."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    dataset = LlavaDataset(samples, image_folder, processor)
    pad = processor.tokenizer.pad_token_id
    items = [dataset[i] for i in range(len(dataset))]
    return [collate(items[i : i + batch_size], pad) for i in range(0, len(items), batch_size)]


def calibration_batches(
    train_json: str | Path, image_folder: str | Path, processor, n_samples: int, seed: int, batch_size: int = 16, text_only: bool = False
) -> list[dict]:
    """Calibration batches for importance scores and ablations: :func:`calibration_samples`, then
    :func:`encode_batches` (images through the vision tower, as in use)."""
    chosen = calibration_samples(train_json, image_folder, n_samples, seed, text_only)
    return encode_batches(chosen, image_folder, processor, batch_size)
