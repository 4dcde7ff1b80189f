"""Expected GPU memory per stage of a paper profile (no GPU needed; see study/gpu_memory.py).

The model's sizes come from the profile's checkpoint (``teacher.checkpoint``/config.json) when it is
on this machine, else from the published config of the release named by the profile's file name
(``configs/llava-1.5-7b.yaml`` -> ``llava-1.5-7b``). The number of GPUs comes from the accelerate
config (``num_processes``).

Usage: python benchmarks/gpu_memory.py configs/llava-1.5-7b.yaml [--accelerate configs/accelerate/fsdp-8gpu-llava.yaml]
       [--model llava-1.5-7b] [--text-tokens 512] [--eval-text-tokens 128] [--image-size 480 640]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from study.config import study_values
from study.gpu_memory import (
    EVAL_TEXT_TOKENS,
    GB,
    IMAGE_SIZE,
    PUBLISHED_CONFIGS,
    TEXT_TOKENS,
    estimate_profile,
    markdown_table,
    model_sizes,
)
from study.models.families import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", help="params file, e.g. configs/llava-1.5-7b.yaml")
    parser.add_argument(
        "--model", help=f"published config to use without the checkpoint: {sorted(PUBLISHED_CONFIGS)} (default: the profile's file name)"
    )
    parser.add_argument("--accelerate", help="accelerate config giving the number of GPUs (default: 8)")
    parser.add_argument(
        "--text-tokens",
        type=int,
        default=TEXT_TOKENS,
        help=f"text tokens of a padded training/calibration sample besides the image (default {TEXT_TOKENS})",
    )
    parser.add_argument(
        "--eval-text-tokens",
        type=int,
        default=EVAL_TEXT_TOKENS,
        help=f"text tokens of an evaluation prompt besides the image (default {EVAL_TEXT_TOKENS})",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=IMAGE_SIZE,
        metavar=("HEIGHT", "WIDTH"),
        help=f"pixels of a sample's image, for the families whose image tokens depend on it (default {IMAGE_SIZE[0]} {IMAGE_SIZE[1]})",
    )
    args = parser.parse_args()

    study = study_values(args.profile)
    checkpoint = study["teacher"].checkpoint
    if checkpoint and (Path(checkpoint) / "config.json").is_file():
        config, source = load_config(checkpoint), f"{checkpoint}/config.json"
    else:
        name = args.model or Path(args.profile).stem
        if name not in PUBLISHED_CONFIGS:
            raise SystemExit(
                f"no checkpoint at {checkpoint} and no published config named {name!r}; use --model {sorted(PUBLISHED_CONFIGS)}"
            )
        config, source = load_config(PUBLISHED_CONFIGS[name]), f"the published config of {name} (checkpoint not on this machine)"
    gpus = yaml.safe_load(Path(args.accelerate).read_text())["num_processes"] if args.accelerate else 8

    sizes = model_sizes(config, tuple(args.image_size))
    print(f"{args.profile}: sizes from {source}")
    print(
        f"parameters: {sizes.total / GB:.2f} B in all; LLM {sizes.llm / GB:.2f} B (decoder layers {sizes.decoder / GB:.2f} B), "
        f"vision tower {sizes.vision / GB:.3f} B, projector {sizes.projector / GB:.3f} B; {gpus} GPUs for recovery"
    )
    print(f"image tokens per sample: {sizes.image_tokens} ({sizes.image_assumption}); the vision tower encodes {sizes.vision_tokens}\n")
    print(markdown_table(estimate_profile(study, sizes, gpus, args.text_tokens, args.eval_text_tokens)))


if __name__ == "__main__":
    main()
