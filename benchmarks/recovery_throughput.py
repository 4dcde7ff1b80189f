"""Recovery throughput (samples/s) of SFT, SFT+KD-logit and SFT+KD-hidden, relative to plain SFT
(target: distillation costs <= 1.5x an SFT step), and peak memory above the loaded models.

Each recipe runs in a fresh process (peak RSS on CPU only grows within a process) on the same
student, teacher and samples. Usage:
python benchmarks/recovery_throughput.py --student results/pruned/width-taylor-0.3 [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RECIPES = ("sft", "sft+kd_logit", "sft+kd_hidden")


def measure(args) -> dict:
    from study.models.memory import peak_memory_mb
    from study.recovery.train import RecoveryConfig, recover

    base = peak_memory_mb(torch.device("cpu"))

    def run(steps: int) -> float:
        cfg = RecoveryConfig(loss=args.measure, batch_size=args.batch_size, epochs=1.0, stop_after=steps, warmup_ratio=0.0, lr=1e-4)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            recover(args.student, args.teacher, args.train, args.images, Path(tmp) / "out", cfg)
            return time.perf_counter() - start

    # the difference between 2n and n steps leaves out loading the models and the data
    seconds = run(2 * args.steps) - run(args.steps)
    return {"samples_per_s": args.steps * args.batch_size / seconds, "peak_mb": peak_memory_mb(torch.device("cpu")) - base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--student", default="results/pruned/width-taylor-0.3")
    parser.add_argument("--teacher", default="results/teacher")
    parser.add_argument("--train", default="results/subsets/5pct.json")
    parser.add_argument("--images", default="results/data/images")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one recipe in this process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.measure:
        print(json.dumps(measure(args)))
        return
    results = {}
    for recipe in RECIPES:
        cmd = [sys.executable, __file__, "--measure", recipe, *sys.argv[1:]]
        results[recipe] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    sft = results["sft"]
    print(f"{'recipe':16s} {'samples/s':>10s} {'step cost vs SFT':>17s} {'peak MB':>8s}  (batch {args.batch_size}, steps only)")
    for recipe, r in results.items():
        print(f"{recipe:16s} {r['samples_per_s']:10.1f} {sft['samples_per_s'] / r['samples_per_s']:17.2f} {r['peak_mb']:8.0f}")


if __name__ == "__main__":
    main()
