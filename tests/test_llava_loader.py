"""Reading, validating, encoding and batching LLaVA conversation samples."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from study.config.sections import TeacherArchitecture
from study.data.llava import IGNORE_INDEX, LlavaDataset, LlavaFormatError, collate, encode_sample, read_samples, validate_sample
from study.models.teacher import build_processor

QUESTION_1 = "What colour is the object at the top left?"
ANSWER_1 = "dark red"
QUESTION_2 = "Where is the blue ring?"
ANSWER_2 = "bottom"


def turns(*values: str) -> list[dict]:
    return [{"from": ("human", "gpt")[i % 2], "value": v} for i, v in enumerate(values)]


def image_sample(sample_id: str = "two-turns") -> dict:
    return {"id": sample_id, "image": "scene.png", "conversations": turns(f"<image>\n{QUESTION_1}", ANSWER_1, QUESTION_2, ANSWER_2)}


def text_sample(sample_id: str = "text-only") -> dict:
    return {"id": sample_id, "conversations": turns("What is two plus three?", "five")}


@pytest.fixture(scope="module")
def processor():
    texts = [QUESTION_1, ANSWER_1, QUESTION_2, ANSWER_2, "What is two plus three? five"]
    return build_processor(texts, TeacherArchitecture())


@pytest.fixture
def image_folder(tmp_path):
    Image.new("RGB", (36, 36), (200, 30, 30)).save(tmp_path / "scene.png")
    return tmp_path


def tokens(processor, ids) -> list[str]:
    return processor.tokenizer.convert_ids_to_tokens([int(i) for i in ids])


# the chat template's role markers, whether the tokenizer keeps "USER:" whole or splits it
ROLE_MARKERS = {"USER", "USER:", "ASSISTANT", "ASSISTANT:", ":"}


def expected_labels(names: list[str], ids: torch.Tensor) -> torch.Tensor:
    """Label every token after ``ASSISTANT:`` up to and including ``</s>``; nothing else."""
    labels = torch.full_like(ids, IGNORE_INDEX)
    inside = False
    for t, name in enumerate(names):
        if inside:
            labels[t] = ids[t]
            inside = name != "</s>"
        elif name == "ASSISTANT:" or (name == ":" and names[t - 1] == "ASSISTANT"):
            inside = True
    return labels


# --- encoding ------------------------------------------------------------------------------------


def test_labels_cover_exactly_the_answers(processor, image_folder):
    item = LlavaDataset([image_sample()], image_folder, processor)[0]
    ids, labels = item["input_ids"], item["labels"]
    names = tokens(processor, ids)
    labelled = labels != IGNORE_INDEX

    assert tokens(processor, labels[labelled]) == [*ANSWER_1.split(), "</s>", *ANSWER_2.split(), "</s>"]
    assert torch.equal(labels[labelled], ids[labelled])
    assert torch.equal(labels, expected_labels(names, ids))
    # the prompt side is masked: BOS, role words, colons, the image tokens and the questions
    for group in ({"<s>"}, ROLE_MARKERS, {"<image>"}, {"What"}, {"?"}):
        positions = [t for t, n in enumerate(names) if n in group]
        assert positions, group
        assert all(labels[t] == IGNORE_INDEX for t in positions), group
    assert sum(n in ("ASSISTANT", "ASSISTANT:") for n in names) == 2
    assert torch.equal(item["attention_mask"], torch.ones_like(ids))


def test_image_is_expanded_to_one_token_per_patch(processor, image_folder):
    item = LlavaDataset([image_sample()], image_folder, processor)[0]
    arch = TeacherArchitecture()
    n_patches = (arch.image_size // arch.patch_size) ** 2
    assert n_patches == 9
    is_image = (item["input_ids"] == processor.image_token_id).tolist()
    assert sum(is_image) == n_patches
    first = is_image.index(True)
    assert is_image[first : first + n_patches] == [True] * n_patches  # one contiguous run
    names = tokens(processor, item["input_ids"])
    assert names[0] == "<s>" and set(names[1:first]) <= ROLE_MARKERS  # right after "USER:"
    assert names[first + n_patches] == "What"
    assert item["pixel_values"].shape == (1, 3, arch.image_size, arch.image_size)  # as the processor returns one image


def test_text_only_sample_has_no_pixel_values(processor):
    item = LlavaDataset([text_sample()], "/nonexistent", processor)[0]
    assert "pixel_values" not in item
    assert processor.image_token_id not in item["input_ids"]
    labels = item["labels"]
    assert tokens(processor, labels[labels != IGNORE_INDEX]) == ["five", "</s>"]
    names = tokens(processor, item["input_ids"])
    assert names[0] == "<s>" and names[-2:] == ["five", "</s>"]


def test_max_length_truncates_but_never_cuts_the_image(processor, image_folder):
    image = Image.open(image_folder / "scene.png").convert("RGB")
    full = encode_sample(image_sample(), processor, image)
    cut = encode_sample(image_sample(), processor, image, max_length=20)
    assert torch.equal(cut["input_ids"], full["input_ids"][:20])
    assert torch.equal(cut["labels"], full["labels"][:20])
    with pytest.raises(ValueError, match="two-turns"):
        encode_sample(image_sample(), processor, image, max_length=5)


def test_dataset_cache_returns_the_same_item(processor, image_folder):
    dataset = LlavaDataset([image_sample(), text_sample()], image_folder, processor, cache=True)
    assert len(dataset) == 2
    assert dataset[0] is dataset[0]


# --- bad inputs ----------------------------------------------------------------------------------


def test_missing_image_file_names_the_sample(processor, tmp_path):
    sample = {**image_sample("lost-image"), "image": "nowhere/missing.png"}
    with pytest.raises(FileNotFoundError, match="lost-image") as err:
        LlavaDataset([sample], tmp_path, processor)[0]
    assert "missing.png" in str(err.value)


def test_unreadable_image_names_the_sample(processor, tmp_path):
    (tmp_path / "scene.png").write_bytes(b"this is not a png \x00\x01\x02" * 10)
    with pytest.raises(LlavaFormatError, match="garbage-image"):
        LlavaDataset([image_sample("garbage-image")], tmp_path, processor)[0]


BAD_SAMPLES = {
    "two human turns": {"id": "bad-1", "conversations": [{"from": "human", "value": "Hello?"}, *turns("Again?", "hi")]},
    "image token without image": {"id": "bad-2", "conversations": turns("<image>\nWhat is this?", "red")},
    "image without image token": {"id": "bad-3", "image": "x.png", "conversations": turns("What is this?", "red")},
    "ends with a human turn": {"id": "bad-4", "conversations": turns("What is this?", "red", "And that?")},
    "two image tokens": {"id": "bad-5", "image": "x.png", "conversations": turns("<image>\nThis?", "red", "<image>\nThat?", "blue")},
    "image token in an answer": {"id": "bad-6", "image": "x.png", "conversations": turns("<image>\nThis?", "<image>")},
    "empty conversation": {"id": "bad-7", "conversations": []},
    "gpt speaks first": {"id": "bad-8", "conversations": turns("", "x")[::-1]},
}


@pytest.mark.parametrize("case", sorted(BAD_SAMPLES))
def test_malformed_sample_is_rejected_with_its_id(tmp_path, case):
    bad = BAD_SAMPLES[case]
    path = tmp_path / "train.json"
    path.write_text(json.dumps([text_sample("good"), bad]))
    with pytest.raises(LlavaFormatError) as err:
        read_samples(path)
    assert repr(bad["id"]) in str(err.value)
    assert "index 1" in str(err.value)
    with pytest.raises(LlavaFormatError, match=bad["id"]):
        validate_sample(bad)


def test_valid_samples_pass_validation(tmp_path):
    system = {"id": "sys", "conversations": [{"from": "system", "value": "Be brief."}, *turns("Hi?", "hello")]}
    samples = [image_sample(), text_sample(), system]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(samples))
    assert read_samples(path) == samples


def test_read_samples_rejects_a_non_list(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"id": "x", "conversations": []}))
    with pytest.raises(LlavaFormatError, match="list"):
        read_samples(path)


# --- batching ------------------------------------------------------------------------------------


def item(ids: list[int], labels: list[int], image: torch.Tensor | None = None) -> dict:
    out = {"input_ids": torch.tensor(ids), "attention_mask": torch.ones(len(ids), dtype=torch.long), "labels": torch.tensor(labels)}
    if image is not None:
        out["pixel_values"] = image
    return out


def test_collate_left_pads_and_stacks_only_existing_images():
    image_a, image_c = torch.rand(1, 3, 36, 36), torch.rand(1, 3, 36, 36)  # as the processor returns one image
    batch = [item([5, 6, 7, 8], [-100, -100, 7, 8], image_a), item([9, 10], [-100, 10]), item([11, 12, 13], [-100, 12, 13], image_c)]
    out = collate(batch, pad_token_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 7, 8], [0, 0, 9, 10], [0, 11, 12, 13]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1]]
    assert out["labels"].tolist() == [[-100, -100, 7, 8], [-100, -100, -100, 10], [-100, -100, 12, 13]]
    assert out["pixel_values"].shape == (2, 3, 36, 36)
    assert torch.equal(out["pixel_values"], torch.cat([image_a, image_c]))
    assert out["input_ids"].dtype == torch.long


def test_collate_pads_every_per_token_input_and_joins_image_inputs_of_any_layout():
    """Gemma 3's token_type_ids are per token; LLaVA-NeXT's tiles differ in number between images
    (zero-padded); Qwen-VL's pixel_values are rows of patches, with one image_grid_thw row per image."""
    a = item([5, 6, 7], [-100, 6, 7]) | {
        "token_type_ids": torch.tensor([0, 1, 0]),
        "pixel_values": torch.ones(1, 2, 3),
        "grid": torch.tensor([[1, 2, 2]]),
    }
    b = item([9], [9]) | {"token_type_ids": torch.tensor([1])}
    c = item([4, 4], [4, 4]) | {
        "token_type_ids": torch.tensor([1, 1]),
        "pixel_values": torch.full((1, 3, 3), 2.0),
        "grid": torch.tensor([[1, 2, 4]]),
    }
    out = collate([a, b, c], pad_token_id=0)
    assert out["token_type_ids"].tolist() == [[0, 1, 0], [0, 0, 1], [0, 1, 1]]  # left-padded with 0, as input_ids
    assert out["pixel_values"].shape == (2, 3, 3) and out["pixel_values"][0, 2].tolist() == [0, 0, 0]  # a's missing tile
    assert out["pixel_values"][1].eq(2).all()
    assert out["grid"].tolist() == [[1, 2, 2], [1, 2, 4]]
    rows = collate([item([1], [1]) | {"pixel_values": torch.ones(4, 6)}, item([2], [2]) | {"pixel_values": torch.zeros(8, 6)}], 0)
    assert rows["pixel_values"].shape == (12, 6)  # patches of both images, in order


def test_collate_right_padding_and_text_only_batch():
    out = collate([item([5, 6, 7], [-100, 6, 7]), item([9], [9])], pad_token_id=3, padding_side="right")
    assert out["input_ids"].tolist() == [[5, 6, 7], [9, 3, 3]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["labels"].tolist() == [[-100, 6, 7], [9, -100, -100]]
    assert "pixel_values" not in out


def test_collate_of_encoded_samples_keeps_answers_aligned(processor, image_folder):
    dataset = LlavaDataset([image_sample(), text_sample()], image_folder, processor)
    out = collate([dataset[0], dataset[1]], processor.tokenizer.pad_token_id)
    text_labels = out["labels"][1]
    assert tokens(processor, text_labels[text_labels != IGNORE_INDEX]) == ["five", "</s>"]
    assert tokens(processor, out["input_ids"][1][-2:]) == ["five", "</s>"]
    assert out["pixel_values"].shape[0] == 1
