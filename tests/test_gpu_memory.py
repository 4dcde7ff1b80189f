"""GPU memory estimates: parameter counts of the profiles' models against hand-computed numbers and
the published totals, image tokens per family, and the arithmetic of each stage on hand-checked cases."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from study.config import study_values
from study.gpu_memory import (
    ADAM_STATE_BYTES,
    BF16,
    GB,
    MAX_TILES,
    PUBLISHED_CONFIGS,
    QWEN_PIXELS,
    TEXT_TOKENS,
    estimate_profile,
    evaluation,
    image_tokens,
    lora_parameters,
    markdown_table,
    model_sizes,
    pruning,
    recovery,
    saved_activation_elements,
)
from study.models.families import load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def llava():
    return model_sizes(load_config(PUBLISHED_CONFIGS["llava-1.5-7b"]))


@pytest.fixture(scope="module")
def bunny():
    return model_sizes(load_config(PUBLISHED_CONFIGS["bunny-v1.0-3b"]))


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


@pytest.fixture(scope="module")
def qwen():
    return model_sizes(load_config(PUBLISHED_CONFIGS["qwen2.5-vl-7b"]))


@pytest.fixture(scope="module")
def internvl():
    return model_sizes(load_config(PUBLISHED_CONFIGS["internvl-mini-4b"]))


def test_qwen2_5_vl_7b_counts(qwen):
    h, kv, inter, layers, vocab = 3584, 4 * 128, 18944, 28, 152064
    decoder_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * inter + 2 * h  # q k v with biases, o; gate up down; two RMSNorms
    assert qwen.decoder == layers * decoder_layer
    assert qwen.llm == layers * decoder_layer + 2 * vocab * h + h == 7_615_616_512  # untied LM head
    vh, vi = 1280, 3420
    block = 2 * vh + (vh * 3 * vh + 3 * vh) + (vh * vh + vh) + 2 * (vh * vi + vi) + (vi * vh + vh)  # norms, qkv, proj, gated MLP
    assert qwen.vision == 32 * block + 3 * 2 * 14 * 14 * vh  # + the patch embedding (a bias-free Conv3d over 2 frames)
    assert qwen.projector == vh + (4 * vh * 4 * vh + 4 * vh) + (4 * vh * h + h) == 44_574_464  # the merger: norm, 2x2 patches -> h
    assert qwen.total == 8_292_166_656  # the Hub's count for Qwen/Qwen2.5-VL-7B-Instruct
    # a 640x480 image resized to 644x476 (multiples of 28): 46 x 34 patches of 14 px, merged 2x2
    assert (qwen.image_tokens, qwen.vision_tokens, qwen.kv_dim, qwen.backbone) == (391, 1564, 512, "llama")
    assert saved_activation_elements(qwen) == 7 * h + 2 * kv + 4 * inter


def test_mini_internvl_4b_counts(internvl):
    h, inter, layers, vocab = 3072, 8192, 32, 32020
    phi3_layer = h * 3 * h + h * h + h * 2 * inter + inter * h + 2 * h  # fused qkv_proj, o_proj, fused gate_up_proj, down_proj, norms
    assert internvl.decoder == layers * phi3_layer
    assert internvl.llm == layers * phi3_layer + 2 * vocab * h + h == 3_820_809_216  # untied LM head, as Phi-3's
    vh = 1024
    vit_layer = 3 * (vh * vh + vh) + (vh * vh + vh) + (vh * 4 * vh + 4 * vh) + (4 * vh * vh + vh) + 2 * 2 * vh + 2 * vh  # + layer scales
    vit_embeddings = vh + (3 * 14 * 14 * vh + vh) + 1025 * vh  # class token, patch conv, positions
    assert internvl.vision == 24 * vit_layer + vit_embeddings == 304_012_288  # InternViT-300M
    assert internvl.projector == 2 * 4 * vh + (4 * vh * h + h) + (h * h + h)  # LayerNorm over 2x2 pixel-shuffled features, 2 linears
    assert internvl.total == 4_146_855_936  # 4.15 B, as published for Mini-InternVL-Chat-4B-V1-5
    # a 640x480 image: 4 x 3 tiles of 448 px and a thumbnail, (448 / 14 / 2)^2 = 256 tokens each
    assert (internvl.image_tokens, internvl.vision_tokens, internvl.backbone) == (13 * 256, 13 * 1025, "phi3")
    assert saved_activation_elements(internvl) == 8 * h + 3 * h + 4 * inter  # MHA: kv = h
    assert internvl.linear_shapes == ((h, h), (h, 3 * h), (h, 2 * inter), (inter, h))  # LoRA on the fused linears
    assert lora_parameters(internvl, 128) == layers * 128 * (h + h + h + 3 * h + h + 2 * inter + inter + h)


@pytest.mark.parametrize("image_size", [(480, 640), (768, 1024), (2048, 1536), (300, 1200)])
def test_image_tokens_are_what_the_processors_give(image_size):
    """Qwen2.5-VL's patches and InternVL's tiles for an image are what transformers' image
    processors give with the releases' settings (pixel bounds; 448 px tiles, at most 12)."""
    from transformers import GotOcr2ImageProcessorPil, Qwen2VLImageProcessorPil

    qwen = image_tokens(load_config(PUBLISHED_CONFIGS["qwen2.5-vl-7b"]), image_size)
    processor = Qwen2VLImageProcessorPil(size={"shortest_edge": QWEN_PIXELS[0], "longest_edge": QWEN_PIXELS[1]})
    assert qwen.vision == processor.get_number_of_image_patches(*image_size) == 4 * qwen.llm
    internvl = image_tokens(load_config(PUBLISHED_CONFIGS["internvl-mini-4b"]), image_size)
    processor = GotOcr2ImageProcessorPil(size={"height": 448, "width": 448}, crop_to_patches=True, max_patches=MAX_TILES)
    tiles = processor.get_number_of_image_patches(*image_size)
    assert (internvl.llm, internvl.vision) == (256 * tiles, 1025 * tiles)


def test_every_family_is_sized():
    """Each supported family's tiny config (tests/families.py) gives consistent sizes."""
    from tests.families import KINDS

    for kind, build in KINDS.items():
        config = build()[0]
        sizes = model_sizes(config, (32, 48))
        assert 0 < sizes.decoder < sizes.llm < sizes.total, kind
        assert sizes.projector > 0 and sizes.vision > 0 and sizes.total == sizes.llm + sizes.vision + sizes.projector, kind
        assert sizes.image_tokens > 0 and sizes.vision_tokens > 0 and sizes.image_assumption, kind
        backbone = "phi3" if kind.endswith("phi3") else "phi" if kind.endswith("phi") else "llama"  # llava-phi: Phi-2
        assert sizes.linear_shapes and sizes.backbone == backbone, kind


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


@pytest.mark.parametrize(("name", "image_size"), [("qwen2.5-vl-7b", (768, 1024)), ("internvl-mini-4b", (480, 640))])
def test_the_new_profiles_batch_sizes_are_the_largest_that_fit_80_gb(name, image_size):
    """What the profiles' comments say: every stage fits an 80 GB GPU (recovery sharded over 8, 3 GB
    left for the CUDA context) for images up to ``image_size`` (Qwen2.5-VL: TextVQA's 1024x768;
    InternVL: any 640x480 photo is already the 13 tiles of the most), and twice the calibration batch
    or twice the micro-batch of distillation would not."""
    sizes = model_sizes(load_config(PUBLISHED_CONFIGS[name]), image_size)
    study = study_values(REPO / "configs" / f"{name}.yaml")
    estimates = estimate_profile(study, sizes)
    assert max(e.total for e in estimates if "DDP" not in e.setting) < 77 * GB, markdown_table(estimates)
    calibration, recover = study["prune"].calibration_batch_size, study["recover"].config
    assert pruning(sizes, "taylor", TEXT_TOKENS, 2 * calibration).total > 77 * GB
    level = min(study["prune_runs"].levels)
    kd = recovery(sizes, "projector+llm", "sft+kd_logit", 2 * recover.batch_size, 8, True, level, TEXT_TOKENS, recover.lora_r)
    assert kd.total > 77 * GB
    micro = recover.batch_size // 8
    activations = (1 - level) * sizes.layers * micro * (sizes.image_tokens + TEXT_TOKENS) * saved_activation_elements(sizes) * BF16
    vision = micro * sizes.vision_tokens * sizes.vision_hidden * (sizes.vision_layers + 1) * BF16
    sharded_kd = next(e for e in estimates if e.setting.startswith("projector+llm / sft+kd_logit, FSDP"))
    assert sharded_kd.parts["activations"] == pytest.approx(activations + vision)


@pytest.mark.parametrize(
    ("profile", "printed"),
    [
        ("llava-1.5-7b", ["7.06 B in all", "image tokens per sample: 576 (any image, resized to 336 px"]),
        ("internvl-mini-4b", ["4.15 B in all", "image tokens per sample: 3328 (a 640x480 image in 13 tiles of 448 px"]),
    ],
)
def test_script_prints_a_table(profile, printed, monkeypatch, capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_memory as script
    finally:
        sys.path.pop(0)
    monkeypatch.setattr(
        sys,
        "argv",
        ["gpu_memory.py", str(REPO / f"configs/{profile}.yaml"), "--accelerate", str(REPO / "configs/accelerate/fsdp-8gpu-llava.yaml")],
    )
    script.main()
    out = capsys.readouterr().out
    assert f"published config of {profile}" in out and all(text in out for text in printed)
    assert "| recovery | projector+llm / sft+kd_hidden, FSDP/ZeRO-3 x8" in out
