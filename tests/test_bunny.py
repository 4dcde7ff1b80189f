"""Bunny-v1.0 → stock LLaVA conversion: exact logits against an independent forward pass, plain
loading in a fresh process, Bunny's prompt and preprocessing, clear errors, no checkpoint code run."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    PhiConfig,
    PhiModel,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from study.__main__ import main
from study.convert.bunny import SYSTEM_PROMPT, VISION, BunnyFormatError, UnsafeCheckpointError, convert_bunny, image_processor
from study.data.llava import encode_sample
from study.models.io import load_model, save_model
from study.models.layers import decoder_layers
from study.pruning.prune import prune

from .conftest import fake_batch

EOT = "<|endoftext|>"
# the tiny tower's full SigLIP config, as a local copy of google/siglip-* would hold it
SIGLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=24, patch_size=8)
PHI = dict(
    vocab_size=320,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    partial_rotary_factor=0.5,
    resid_pdrop=0.1,
)
CORPUS = [SYSTEM_PROMPT, "USER: What is in the image? ASSISTANT: A red circle and a blue square.", "Is there a cat? yes no"]
# the files Bunny's release ships for trust_remote_code: running either would leave a marker
REMOTE_CODE = "import pathlib; pathlib.Path(__file__).with_name('REMOTE_CODE_RAN').touch()\n"


def phi_tokenizer() -> PreTrainedTokenizerFast:
    """A tiny byte-level BPE in the layout of Phi-2's (CodeGen) tokenizer: <|endoftext|> is bos,
    eos and unk, no pad, no BOS added."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[EOT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT)


def jitter(module: torch.nn.Module, scale: float = 0.05) -> torch.nn.Module:
    """Non-trivial biases and norms, so that a dropped or swapped tensor shows in the logits."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)
    return module.eval()


@pytest.fixture(scope="module")
def parts():
    """The raw modules a Bunny checkpoint is made of: a full SigLIP tower (head included), the
    mlp2x_gelu projector and Phi, plus its tokenizer."""
    torch.manual_seed(0)
    siglip = jitter(SiglipVisionModel(SiglipVisionConfig(**SIGLIP)))
    projector = jitter(torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.GELU(), torch.nn.Linear(32, 32)))
    tokenizer = phi_tokenizer()
    phi = jitter(PhiModel(PhiConfig(**PHI, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)))
    lm_head = torch.randn(PHI["vocab_size"], 32) * 0.2  # Bunny's lm_head has no bias
    return {"siglip": siglip, "projector": projector, "phi": phi, "lm_head": lm_head, "tokenizer": tokenizer}


def bunny_tensors(parts: dict, layout: str = "bunny_v1.0") -> dict[str, torch.Tensor]:
    """The state dict under Bunny's names. ``bunny_v1.0``: the release, whose tower lost its last
    layer and its head before saving; ``stock``: later Bunny code, full tower with head."""
    last = SIGLIP["num_hidden_layers"] - 1
    tensors = {}
    for k, v in parts["siglip"].state_dict().items():
        if layout == "bunny_v1.0" and (k.startswith("head.") or k.startswith(f"encoder.layers.{last}.")):
            continue
        tensors[VISION + k] = v
    tensors.update({f"model.mm_projector.{k}": v for k, v in parts["projector"].state_dict().items()})
    tensors.update({f"model.{k}": v for k, v in parts["phi"].state_dict().items()})
    tensors["lm_head.weight"] = parts["lm_head"]
    return {k: v.clone().contiguous() for k, v in tensors.items()}


def write_release(folder: Path, parts: dict, tensors: dict | None = None, weights: str = "safetensors") -> Path:
    """A folder laid out as BAAI/Bunny-v1_0-3B: custom-code config, remote-code files, tokenizer, weights."""
    folder.mkdir(parents=True)
    tok = parts["tokenizer"]
    config = {
        "architectures": ["BunnyPhiForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_bunny_phi.BunnyPhiConfig",
            "AutoModelForCausalLM": "modeling_bunny_phi.BunnyPhiForCausalLM",
        },
        "model_type": "bunny-phi",
        **PHI,
        "num_key_value_heads": PHI["num_attention_heads"],
        "attention_dropout": 0.0,
        "embd_pdrop": 0.0,
        "hidden_act": "gelu_new",
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 2048,
        "qk_layernorm": False,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "bos_token_id": tok.eos_token_id,
        "eos_token_id": tok.eos_token_id,
        "mm_vision_tower": "google/siglip-so400m-patch14-384",
        "mm_hidden_size": SIGLIP["hidden_size"],
        "mm_projector_type": "mlp2x_gelu",
        "mm_projector_lr": None,
        "use_mm_proj": True,
        "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": False,
        "image_aspect_ratio": "pad",
        "tokenizer_model_max_length": 2048,
        "tokenizer_padding_side": "right",
        "torch_dtype": "float32",
        "transformers_version": "4.36.2",
        "use_cache": True,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("configuration_bunny_phi.py", "modeling_bunny_phi.py"):
        (folder / name).write_text(REMOTE_CODE)
    tok.save_pretrained(folder)
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**tok_config, "tokenizer_class": "CodeGenTokenizer"}))
    tensors = bunny_tensors(parts) if tensors is None else tensors
    if weights == "safetensors":
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    elif weights == "sharded":
        names = sorted(tensors)
        shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
        for shard, keys in shards.items():
            save_file({k: tensors[k] for k in keys}, folder / shard, metadata={"format": "pt"})
        index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    else:
        torch.save(tensors, folder / "pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def siglip_config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("siglip") / "config.json"
    path.write_text(json.dumps({"model_type": "siglip", "vision_config": {**SIGLIP, "model_type": "siglip_vision_model"}}))
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory, parts, siglip_config_file) -> Path:
    root = tmp_path_factory.mktemp("bunny")
    src = write_release(root / "release", parts)
    convert_bunny(src, root / "llava", vision_config=siglip_config_file)
    return root / "llava"


def inputs(image_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Bunny-style ids (one image placeholder), the LLaVA ids (placeholder expanded) and pixels."""
    g = torch.Generator().manual_seed(1)
    text = torch.randint(1, 290, (7,), generator=g)
    at, n_image = 3, (SIGLIP["image_size"] // SIGLIP["patch_size"]) ** 2
    llava_ids = torch.cat([text[:at], torch.full((n_image,), image_token_id), text[at:]])[None]
    pixels = torch.randn(1, 3, SIGLIP["image_size"], SIGLIP["image_size"], generator=g)
    return text, llava_ids, pixels, at


@torch.no_grad()
def bunny_logits(parts: dict, text: torch.Tensor, pixels: torch.Tensor, at: int) -> torch.Tensor:
    """Bunny's forward written out from the raw modules: the full SigLIP tower's hidden_states[-2],
    every patch → Linear, GELU, Linear → spliced into Phi's embeddings at the placeholder → Phi →
    bias-free lm_head."""
    features = parts["siglip"](pixels, output_hidden_states=True).hidden_states[-2][0]
    p = parts["projector"]
    image = F.linear(F.gelu(F.linear(features, p[0].weight, p[0].bias)), p[2].weight, p[2].bias)
    embed = parts["phi"].embed_tokens.weight
    spliced = torch.cat([F.embedding(text[:at], embed), image, F.embedding(text[at:], embed)])[None]
    hidden = parts["phi"](inputs_embeds=spliced).last_hidden_state
    return hidden @ parts["lm_head"].T


def llava_logits(model, llava_ids: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=llava_ids, pixel_values=pixels).logits


def test_converted_model_has_the_logits_of_bunnys_forward(converted, parts):
    model = AutoModelForImageTextToText.from_pretrained(converted)
    text, llava_ids, pixels, at = inputs(model.config.image_token_index)
    torch.testing.assert_close(llava_logits(model, llava_ids, pixels), bunny_logits(parts, text, pixels, at), rtol=1e-4, atol=1e-5)
    config = model.config
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert (config.vision_config.model_type, config.text_config.model_type) == ("siglip_vision_model", "phi")
    assert config.vision_feature_select_strategy == "full" and config.image_seq_length == 9
    # the release's tower already ends at the feature layer: its last hidden state is SigLIP's [-2]
    assert config.vision_config.num_hidden_layers == SIGLIP["num_hidden_layers"] - 1 and config.vision_feature_layer == -1
    assert not config.vision_config.vision_use_head
    assert not (converted.parent / "release" / "REMOTE_CODE_RAN").exists()


def test_a_stock_tower_checkpoint_converts_to_the_same_model(tmp_path, parts, siglip_config_file, converted):
    """Later Bunny code saves the whole SigLIP tower (head, last layer) and selects hidden_states[-2]."""
    src = write_release(tmp_path / "release", parts, bunny_tensors(parts, layout="stock"))
    record = convert_bunny(src, tmp_path / "llava", vision_config=siglip_config_file)
    assert record["vision_layout"] == "stock"
    assert any(".head." in k for k in record["dropped"]) and any("encoder.layers.2." in k for k in record["dropped"])
    assert load_file(tmp_path / "llava/model.safetensors").keys() == load_file(converted / "model.safetensors").keys()
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "llava")
    text, llava_ids, pixels, at = inputs(model.config.image_token_index)
    torch.testing.assert_close(llava_logits(model, llava_ids, pixels), bunny_logits(parts, text, pixels, at), rtol=1e-4, atol=1e-5)


def test_fresh_process_loads_it_with_plain_from_pretrained(converted, parts, tmp_path):
    script = f"""
import sys, torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageTextToText, AutoProcessor
model = AutoModelForImageTextToText.from_pretrained({str(converted)!r}, trust_remote_code=False).eval()
processor = AutoProcessor.from_pretrained({str(converted)!r}, trust_remote_code=False)
x = load_file({str(tmp_path / "inputs.safetensors")!r})
with torch.no_grad():
    logits = model(input_ids=x["ids"], pixel_values=x["pixels"]).logits
save_file({{"logits": logits.contiguous()}}, {str(tmp_path / "out.safetensors")!r})
assert processor.image_token_id == model.config.image_token_index
assert not any(m == "study" or m.startswith("study.") for m in sys.modules), "project code was imported"
"""
    image_token_id = json.loads((converted / "config.json").read_text())["image_token_index"]
    text, llava_ids, pixels, at = inputs(image_token_id)
    save_file({"ids": llava_ids, "pixels": pixels}, tmp_path / "inputs.safetensors")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, env=env, capture_output=True, text=True)
    logits = load_file(tmp_path / "out.safetensors")["logits"]
    torch.testing.assert_close(logits, bunny_logits(parts, text, pixels, at), rtol=1e-4, atol=1e-5)


def test_processor_renders_bunnys_prompt_and_preprocessing(converted):
    processor = AutoProcessor.from_pretrained(converted)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A red circle."}]},
        {"role": "user", "content": [{"type": "text", "text": "Is there a cat?"}]},
    ]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, "
        "and polite answers to the user's questions. USER: <image>\nWhat is in the image? ASSISTANT: A red circle."
        f"{EOT}USER: Is there a cat? ASSISTANT:"
    )
    # Bunny pads a non-square image to a square with the mean colour, then resizes (bicubic)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (20, 40, 3), dtype=np.uint8))
    square = Image.new("RGB", (40, 40), (127, 127, 127))
    square.paste(image, (0, 10))
    size = SIGLIP["image_size"]
    expected = (np.asarray(square.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255 - 0.5) / 0.5
    enc = processor(text=[prompt], images=[image], return_tensors="pt")
    np.testing.assert_allclose(enc["pixel_values"][0].numpy(), expected.transpose(2, 0, 1), atol=1e-5)
    assert int((enc["input_ids"] == processor.image_token_id).sum()) == 9
    assert processor.tokenizer.pad_token == EOT  # Bunny pads with unk, which is Phi-2's <|endoftext|>


def test_without_padding_the_image_is_resized_as_siglips_processor_does():
    processor = image_processor({"image_aspect_ratio": "square"}, SiglipVisionConfig(**SIGLIP))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 40, 3), dtype=np.uint8))
    size = SIGLIP["image_size"]
    expected = (np.asarray(image.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255 - 0.5) / 0.5
    np.testing.assert_allclose(processor(image, return_tensors="pt")["pixel_values"][0].numpy(), expected.transpose(2, 0, 1), atol=1e-5)


def test_training_samples_label_the_answer_and_the_end_of_turn(converted):
    _, processor = load_model(converted)
    sample = {
        "id": "s",
        "image": "x.png",
        "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}],
    }
    enc = encode_sample(sample, processor, Image.new("RGB", (24, 24)))
    answer = processor.tokenizer.decode(enc["input_ids"][enc["labels"] != -100])
    assert answer.strip() == f"A cat.{EOT}"


@pytest.mark.parametrize("weights", ["bin", "sharded"])
def test_bin_and_sharded_checkpoints_convert_the_same(tmp_path, parts, siglip_config_file, converted, weights):
    src = write_release(tmp_path / "release", parts, weights=weights)
    convert_bunny(src, tmp_path / "llava", vision_config=siglip_config_file)
    a, b = load_file(tmp_path / "llava/model.safetensors"), load_file(converted / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_keys_are_listed(tmp_path, parts, siglip_config_file):
    tensors = bunny_tensors(parts)
    tensors["model.layers.0.self_attn.rotary_scale"] = torch.ones(4)
    tensors["model.mm_projector.4.weight"] = torch.ones(2, 2)
    src = write_release(tmp_path / "release", parts, tensors)
    with pytest.raises(BunnyFormatError, match=r"2 unknown key\(s\).*model\.layers\.0\.self_attn\.rotary_scale.*") as err:
        convert_bunny(src, tmp_path / "llava", vision_config=siglip_config_file)
    assert "model.mm_projector.4.weight" in str(err.value)
    assert not (tmp_path / "llava").exists()


def test_missing_tensors_are_listed_under_bunnys_names(tmp_path, parts, siglip_config_file):
    tensors = bunny_tensors(parts)
    del tensors["model.layers.1.mlp.fc2.bias"], tensors["model.mm_projector.2.weight"]
    src = write_release(tmp_path / "release", parts, tensors)
    with pytest.raises(BunnyFormatError, match=r"2 tensor\(s\) missing") as err:
        convert_bunny(src, tmp_path / "llava", vision_config=siglip_config_file)
    assert "model.layers.1.mlp.fc2.bias" in str(err.value) and "model.mm_projector.2.weight" in str(err.value)


def test_a_wrong_vision_config_is_named(tmp_path, parts):
    src = write_release(tmp_path / "release", parts)
    with pytest.raises(BunnyFormatError, match="hidden_size 32 in the checkpoint vs 1152"):
        convert_bunny(src, tmp_path / "llava")  # the SO400M default does not fit the tiny tower


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path, parts):
    src = write_release(tmp_path / "release", parts)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "architectures": ["LlavaLlamaForCausalLM"]}))
    with pytest.raises(BunnyFormatError, match="LlavaLlamaForCausalLM"):
        convert_bunny(src, tmp_path / "llava")


class RunsCode:
    """A pickle payload that runs a shell command when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_pickle_that_would_run_code_is_refused(tmp_path, parts, siglip_config_file, writer):
    src = write_release(tmp_path / "release", parts, weights="bin")
    marker = tmp_path / "PWNED"
    payload = {"model.embed_tokens.weight": RunsCode(marker)}
    with open(src / "pytorch_model.bin", "wb") as f:
        torch.save(payload, f) if writer == "torch.save" else pickle.dump(payload, f)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load .*pytorch_model.bin"):
        convert_bunny(src, tmp_path / "llava", vision_config=siglip_config_file)
    assert not marker.exists()
    assert not (tmp_path / "llava").exists()


def test_cli_converts(tmp_path, parts, siglip_config_file, capsys):
    src = write_release(tmp_path / "release", parts)
    assert main(["convert-bunny", str(src), str(tmp_path / "llava"), "--vision-config", str(siglip_config_file)]) == 0
    assert "image token id" in capsys.readouterr().out
    assert json.loads((tmp_path / "llava/conversion.json").read_text())["vision_layout"] == "bunny_v1.0"
    assert (tmp_path / "llava/config.json").is_file() and (tmp_path / "llava/processor_config.json").is_file()


@pytest.mark.parametrize("paradigm, metric", [("layer", "block_influence"), ("width", "taylor")])
def test_converted_model_prunes_and_reloads(converted, tmp_path, paradigm, metric):
    model, processor = load_model(converted)
    batch = fake_batch(model)
    record = prune(model, paradigm, 0.5, metric, [batch])
    assert record["achieved_ratio"] > 0.3
    save_model(model, processor, tmp_path / "pruned")
    reloaded, _ = load_model(tmp_path / "pruned")
    inputs_only = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs_only).logits, model(**inputs_only).logits)
    if paradigm == "layer":
        assert len(decoder_layers(reloaded)) == 1
