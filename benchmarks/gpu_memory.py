"""Expected GPU memory per stage of a paper profile (no GPU needed; see study/gpu_memory.py).

The model's sizes come from the profile's checkpoint (``teacher.checkpoint``/config.json) when it is
on this machine, else from the published config of the release named by the profile's file name
(``configs/llava-1.5-7b.yaml`` -> ``llava-1.5-7b``). The number of GPUs comes from the accelerate
config (``num_processes``).

Usage: python benchmarks/gpu_memory.py configs/llava-1.5-7b.yaml [--accelerate configs/accelerate/fsdp-8gpu-llava.yaml]
       [--model llava-1.5-7b] [--text-tokens 512] [--eval-text-tokens 128]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from study.config import study_values
from study.gpu_memory import GB, PUBLISHED_CONFIGS, estimate_profile, load_llava_config, markdown_table, model_sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", help="params file, e.g. configs/llava-1.5-7b.yaml")
    parser.add_argument(
        "--model", help=f"published config to use without the checkpoint: {sorted(PUBLISHED_CONFIGS)} (default: the profile's file name)"
    )
    parser.add_argument("--accelerate", help="accelerate config giving the number of GPUs (default: 8)")
    parser.add_argument(
        "--text-tokens", type=int, default=512, help="text tokens of a padded training/calibration sample besides the image (default 512)"
    )
    parser.add_argument(
        "--eval-text-tokens", type=int, default=128, help="text tokens of an evaluation prompt besides the image (default 128)"
    )
    args = parser.parse_args()

    study = study_values(args.profile)
    checkpoint = study["teacher"].checkpoint
    if checkpoint and (Path(checkpoint) / "config.json").is_file():
        config, source = load_llava_config(checkpoint), f"{checkpoint}/config.json"
    else:
        name = args.model or Path(args.profile).stem
        if name not in PUBLISHED_CONFIGS:
            raise SystemExit(
                f"no checkpoint at {checkpoint} and no published config named {name!r}; use --model {sorted(PUBLISHED_CONFIGS)}"
            )
        config, source = load_llava_config(PUBLISHED_CONFIGS[name]), f"the published config of {name} (checkpoint not on this machine)"
    gpus = yaml.safe_load(Path(args.accelerate).read_text())["num_processes"] if args.accelerate else 8

    sizes = model_sizes(config)
    print(f"{args.profile}: sizes from {source}")
    print(
        f"parameters: {sizes.total / GB:.2f} B in all; LLM {sizes.llm / GB:.2f} B (decoder layers {sizes.decoder / GB:.2f} B), "
        f"vision tower {sizes.vision / GB:.3f} B, projector {sizes.projector / GB:.3f} B; "
        f"{sizes.image_tokens} image tokens; {gpus} GPUs for recovery\n"
    )
    print(markdown_table(estimate_profile(study, sizes, gpus, args.text_tokens, args.eval_text_tokens)))


if __name__ == "__main__":
    main()
