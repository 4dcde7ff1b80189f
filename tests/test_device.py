"""Device and dtype of the prune and evaluate stages: parsing, loading, moving batches, and every
importance metric and the evaluation on a 16-bit model (the CPU stands in for the GPU here)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from study.config.vocabulary import LAYER_METRICS, WIDTH_METRICS
from study.evaluation.efficiency import measure_efficiency
from study.evaluation.generate import encode_prompts, generate_answers
from study.models.device import model_dtype, move_to_model, resolve_device, resolve_dtype, stored_dtype
from study.models.io import load_model, save_model
from study.pruning.prune import prune

from .conftest import fake_batch, tiny_llava


def test_device_auto_is_cuda_when_available_else_cpu():
    assert resolve_device("auto") == resolve_device(None) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # parsed, not opened: profiles are checked off the GPU node
    with pytest.raises(ValueError, match="device must be 'auto' or a torch device.*'gpu'"):
        resolve_device("gpu")


def test_dtype_names():
    assert resolve_dtype("auto") == resolve_dtype(None) == "auto"
    assert (resolve_dtype("float32"), resolve_dtype("bfloat16"), resolve_dtype("float16")) == (torch.float32, torch.bfloat16, torch.float16)
    with pytest.raises(ValueError, match="dtype must be one of .*'fp16'"):
        resolve_dtype("fp16")


def test_auto_dtype_is_the_stored_one_and_a_named_dtype_casts(tiny_model, tiny_processor, tmp_path):
    save_model(tiny_model, tiny_processor, tmp_path / "fp32")
    assert stored_dtype(tmp_path / "fp32") == torch.float32
    assert model_dtype(load_model(tmp_path / "fp32")[0]) == torch.float32
    model, _ = load_model(tmp_path / "fp32", device="auto", dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert next(model.parameters()).device.type == resolve_device("auto").type
    save_model(load_model(tmp_path / "fp32", dtype="bfloat16")[0], tiny_processor, tmp_path / "bf16")
    assert stored_dtype(tmp_path / "bf16") == torch.bfloat16
    assert model_dtype(load_model(tmp_path / "bf16")[0]) == torch.bfloat16  # auto keeps it
    assert model_dtype(load_model(tmp_path / "bf16", dtype="float32")[0]) == torch.float32


def test_stored_dtype_without_a_config_entry_reads_the_weights(tiny_model, tiny_processor, tmp_path):
    save_model(tiny_model.to(torch.float16), tiny_processor, tmp_path / "m")
    config = json.loads((tmp_path / "m/config.json").read_text())
    config.pop("dtype", None)
    (tmp_path / "m/config.json").write_text(json.dumps(config))
    assert stored_dtype(tmp_path / "m") == torch.float16


def test_save_model_in_another_dtype_says_so_in_its_config(tiny_model, tiny_processor, tmp_path):
    save_model(tiny_model, tiny_processor, tmp_path / "m", dtype=torch.bfloat16)
    assert json.loads((tmp_path / "m/config.json").read_text())["dtype"] == "bfloat16"
    loaded, _ = load_model(tmp_path / "m")
    assert model_dtype(loaded) == torch.bfloat16
    assert {p.dtype for p in tiny_model.parameters()} == {torch.float32}  # the saved model itself is untouched


def test_per_layer_width_folders_load_in_the_requested_dtype(tiny_processor, tmp_path):
    model = tiny_llava("llama_gqa")
    record = prune(model, "width", 0.3, "magnitude_l2", [], spare=(1, 1))
    save_model(model, tiny_processor, tmp_path / "m")
    (tmp_path / "m/pruning.json").write_text(json.dumps(record))
    assert model_dtype(load_model(tmp_path / "m")[0]) == torch.float32
    assert {p.dtype for p in load_model(tmp_path / "m", dtype="bfloat16")[0].parameters()} == {torch.bfloat16}


def test_move_to_model_casts_floating_inputs_only():
    model = tiny_llava("llama_gqa").to(torch.bfloat16)
    batch = move_to_model({**fake_batch(model), "note": "kept"}, model)
    assert batch["pixel_values"].dtype == torch.bfloat16
    assert batch["input_ids"].dtype == batch["labels"].dtype == torch.long
    assert batch["note"] == "kept"


@pytest.mark.parametrize(
    "paradigm, metric", [("layer", m) for m in LAYER_METRICS if m not in ("last", "random")] + [("width", m) for m in WIDTH_METRICS]
)
def test_every_importance_metric_runs_on_a_16bit_model_with_float32_batches(paradigm, metric):
    model = tiny_llava("llama_gqa").to(torch.bfloat16)
    batches = [fake_batch(model, seed=s) for s in range(2)]  # as calibration_batches makes them: pixel_values in float32
    record = prune(model, paradigm, 0.3, metric, batches)
    assert record["achieved_ratio"] > 0.1
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_generation_and_efficiency_on_a_16bit_model(tiny_model, tiny_processor, tmp_path):
    Image.new("RGB", (36, 36), (128, 128, 128)).save(tmp_path / "a.png")
    q = {"question_id": "x", "image": "a.png", "text": "Is there a red circle ?"}
    model = tiny_model.to(torch.bfloat16)
    assert len(generate_answers(model, tiny_processor, [q, {**q, "question_id": "y"}], tmp_path, max_new_tokens=3, progress=False)) == 2
    eff = measure_efficiency(model, dict(encode_prompts([q], tiny_processor, tmp_path)), decode_tokens=3, repeats=1)
    assert eff["flops_per_sample"] > 0 and eff["peak_mem_mb"] > 0
