"""GPU memory estimates: parameter counts of the two paper models against hand-computed numbers,
and the arithmetic of each stage on a small hand-checked case."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from study.config import study_values
from study.gpu_memory import (
    ADAM_STATE_BYTES,
    BF16,
    PUBLISHED_CONFIGS,
    estimate_profile,
    evaluation,
    load_llava_config,
    lora_parameters,
    model_sizes,
    recovery,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def llava():
    return model_sizes(load_llava_config(PUBLISHED_CONFIGS["llava-1.5-7b"]))


@pytest.fixture(scope="module")
def bunny():
    return model_sizes(load_llava_config(PUBLISHED_CONFIGS["bunny-v1.0-3b"]))


def test_llava_1_5_7b_counts(llava):
    h, inter, layers, vocab = 4096, 11008, 32, 32064
    decoder_layer = 4 * h * h + 3 * h * inter + 2 * h  # q k v o, gate up down, two RMSNorms
    assert llava.decoder == layers * decoder_layer == 6_476_267_520
    assert llava.llm == layers * decoder_layer + 2 * vocab * h + h  # + embeddings, LM head (untied), final norm
    clip_layer = 4 * (1024 * 1024 + 1024) + (1024 * 4096 + 4096) + (4096 * 1024 + 1024) + 4 * 1024
    clip_embeddings = 3 * 14 * 14 * 1024 + 577 * 1024 + 1024  # patch conv (no bias), positions, class embedding
    assert llava.vision == 24 * clip_layer + clip_embeddings + 2 * 2 * 1024 == 303_507_456  # + pre and post layer norms
    assert llava.projector == (1024 * h + h) + (h * h + h) == 20_979_712
    assert llava.total == llava.llm + llava.vision + llava.projector == 7_063_427_072
    assert (llava.image_tokens, llava.vision_tokens) == (576, 577)  # "default" drops CLIP's class token
    assert lora_parameters(llava, 128) == layers * 128 * (4 * 2 * h + 3 * (h + inter))


def test_bunny_v1_0_3b_counts(bunny):
    h, inter, layers, vocab = 2560, 10240, 32, 51200
    phi_layer = 4 * (h * h + h) + (h * inter + inter) + (inter * h + h) + 2 * h  # biases everywhere, one LayerNorm
    assert bunny.decoder == layers * phi_layer == 2_517_483_520
    assert bunny.llm == layers * phi_layer + 2 * vocab * h + 2 * h == 2_779_632_640  # Bunny's LM head has no bias
    siglip_layer = 4 * (1152 * 1152 + 1152) + (1152 * 4304 + 4304) + (4304 * 1152 + 1152) + 4 * 1152
    assert bunny.vision == 26 * siglip_layer + (3 * 14 * 14 * 1152 + 1152) + 729 * 1152 + 2 * 1152 == 397_747_744
    assert bunny.projector == (1152 * h + h) + (h * h + h)
    assert bunny.image_tokens == 729  # every patch, no class token


def test_evaluation_arithmetic(llava):
    e = evaluation(llava, batch_size=2, max_new_tokens=16, text_tokens=48)
    seq = 576 + 48 + 16
    assert e.parts["weights"] == 2 * llava.total
    assert e.parts["kv_cache"] == 2 * 32 * 2 * seq * 4096 * 2  # K and V, 32 layers, batch 2, 32 heads x 128, bf16


def test_recovery_arithmetic(llava):
    sharded = recovery(llava, "projector", "sft", batch_size=16, gpus=8, sharded=True, level=0.0, text_tokens=0)
    frozen = llava.total - llava.projector
    assert sharded.parts["weights+optimizer"] == pytest.approx(
        (ADAM_STATE_BYTES * llava.projector + BF16 * frozen) / 8 + 4 * llava.largest_layer
    )
    per_token = 9 * 4096 + 4 * 11008
    assert sharded.parts["activations"] == pytest.approx(32 * 2 * 576 * per_token * 2 + 2 * 577 * 1024 * 25 * 2)  # micro-batch 16 / 8
    assert "teacher" not in sharded.parts
    kd = recovery(llava, "projector+llm", "sft+kd_hidden", batch_size=16, gpus=8, sharded=False, level=0.3, text_tokens=0)
    trained = llava.llm - round(0.3 * llava.decoder) + llava.projector
    assert kd.parts["weights+optimizer"] == pytest.approx(ADAM_STATE_BYTES * trained + BF16 * llava.vision + 4 * trained)
    assert kd.parts["teacher"] == pytest.approx(2 * llava.total + 2 * 576 * 32064 * 2 + 33 * 2 * 576 * 4096 * 2)


def test_estimates_of_the_paper_profiles(llava, bunny):
    for config, sizes in (("configs/llava-1.5-7b.yaml", llava), ("configs/bunny-v1.0-3b.yaml", bunny)):
        estimates = estimate_profile(study_values(REPO / config), sizes)
        stages = [e.stage for e in estimates]
        assert stages.count("evaluation") == 1 and stages.count("pruning") == 2 and stages.count("recovery") == 10
        by_setting = {e.setting: e.total for e in estimates}
        sft_sharded = next(v for k, v in by_setting.items() if k.startswith("projector+llm / sft, FSDP"))
        sft_ddp = next(v for k, v in by_setting.items() if k.startswith("projector+llm / sft, DDP"))
        assert sft_sharded < sft_ddp


def test_script_prints_a_table(monkeypatch, capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_memory as script
    finally:
        sys.path.pop(0)
    monkeypatch.setattr(
        sys,
        "argv",
        ["gpu_memory.py", str(REPO / "configs/llava-1.5-7b.yaml"), "--accelerate", str(REPO / "configs/accelerate/fsdp-8gpu-llava.yaml")],
    )
    script.main()
    out = capsys.readouterr().out
    assert "published config of llava-1.5-7b" in out and "7.06 B in all" in out
    assert "| recovery | projector+llm / sft+kd_hidden, FSDP/ZeRO-3 x8" in out
