"""Speed-ups of pruned models and the cost of importance estimation, relative to the teacher.

1. For the teacher and every folder under results/pruned/: LLM parameters, FLOPs per sample,
   prefill latency and decode tokens/s on one evaluation prompt, as ratios to the teacher.
2. For each importance metric: wall time and peak memory above the loaded model, relative to one
   forward+backward pass over the same calibration set. Each measurement runs in a fresh process
   (peak RSS on CPU only grows within a process).

Usage: python benchmarks/pruning_speed.py [--teacher results/teacher] [--samples 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from study.data.llava import calibration_batches
from study.evaluation.efficiency import measure_efficiency
from study.evaluation.generate import encode_prompts, read_questions
from study.models.io import load_model
from study.models.memory import peak_memory_mb

METRICS = ("block_influence", "angular", "loss", "magnitude_l1", "taylor", "activation")


def measure_cost(teacher: str, data: str, samples: int, what: str) -> dict:
    """In this process: time and peak memory (above the loaded model) of ``what``."""
    from study.config.vocabulary import LAYER_METRICS
    from study.pruning.importance import layer_scores, width_saliency

    model, processor = load_model(teacher)
    batches = calibration_batches(Path(data) / "train.json", Path(data) / "images", processor, samples, seed=0, batch_size=8)
    base = reset_peak_rss_mb()
    start = time.perf_counter()
    if what == "forward_backward":
        for batch in batches:
            model(**batch).loss.backward()
    elif what in LAYER_METRICS:
        layer_scores(model, what, batches, n_remove=2)
    else:
        width_saliency(model, what, batches)
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    return {"seconds": time.perf_counter() - start, "peak_mb": peak_memory_mb(torch.device("cpu")) - base, "weights_mb": weights_mb}


def reset_peak_rss_mb() -> float:
    """Reset this process's peak RSS to its current RSS (Linux: /proc/self/clear_refs) and return
    it, so that the peak measured next belongs to the work that follows, not to loading."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(status["VmRSS"].split()[0]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", default="results/teacher")
    parser.add_argument("--data", default="results/data")
    parser.add_argument("--pruned", default="results/pruned")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one cost measurement
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.measure:
        print(json.dumps(measure_cost(args.teacher, args.data, args.samples, args.measure)))
        return

    question = next(q for q in read_questions(Path(args.data) / "eval" / "open.jsonl"))
    rows = {}
    for folder in [Path(args.teacher), *sorted(p for p in Path(args.pruned).glob("*") if p.is_dir())]:
        model, processor = load_model(folder)
        rows[folder.name] = measure_efficiency(model, dict(encode_prompts([question], processor, Path(args.data) / "images")))
    base = rows[Path(args.teacher).name]
    print(f"{'model':34s} {'LLM params':>10s} {'FLOPs':>7s} {'prefill':>8s} {'decode tok/s':>12s}  (ratios to the teacher)")
    for name, r in rows.items():
        print(
            f"{name:34s} {r['llm_params'] / base['llm_params']:10.2f} {r['flops_per_sample'] / base['flops_per_sample']:7.2f} "
            f"{r['prefill_ms'] / base['prefill_ms']:8.2f} {r['decode_tokens_per_s'] / base['decode_tokens_per_s']:12.2f}"
        )

    def cost(what: str) -> dict:
        cmd = [sys.executable, __file__, "--measure", what, "--teacher", args.teacher, "--data", args.data, "--samples", str(args.samples)]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])

    reference = cost("forward_backward")
    print(f"\nimportance estimation on {args.samples} calibration samples, relative to one forward+backward pass over them")
    print(
        f"  forward+backward: {reference['seconds']:.2f} s, peak {reference['peak_mb']:.1f} MB above the loaded model ({reference['weights_mb']:.1f} MB of weights)"
    )
    for metric in METRICS:
        c = cost(metric)
        print(
            f"  {metric:16s} time x{c['seconds'] / reference['seconds']:.2f}  peak memory x{c['peak_mb'] / max(reference['peak_mb'], 1e-9):.2f}"
            f" of forward+backward ({c['peak_mb']:.1f} MB = x{c['peak_mb'] / c['weights_mb']:.2f} the weights)"
        )


if __name__ == "__main__":
    main()
