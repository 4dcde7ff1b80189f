"""Teacher training and evaluation throughput on this machine (samples/s).

Builds the default teacher architecture on a small synthetic dataset, times instruction-tuning
steps (after one warm-up step, data already encoded) and greedy evaluation over the question
files. Usage: python benchmarks/teacher_throughput.py [--steps 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from study.config import study_values
from study.data.synthetic import generate_dataset
from study.evaluation.benchmark import evaluate, load_benchmarks
from study.teacher.training import instruction_tune, train_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    study = study_values(args.params)
    data, arch, base = study["data"], study["teacher"].architecture, study["teacher"].training
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        cfg = replace(base, steps=1, vision_steps=1, language_steps=0, warmup_steps=0, decay_steps=0, log_every=10**9)
        batch = cfg.batch_size
        generate_dataset(replace(data, n_train=batch * (args.steps + 1), n_eval_per_family=64), data_dir)
        model, processor, _ = train_teacher(data_dir, arch, cfg)  # encodes nothing twice below: cache warm-up
        timed = replace(cfg, steps=args.steps)
        start = time.perf_counter()
        instruction_tune(model, processor, data_dir, timed)
        train_s = time.perf_counter() - start
        benchmarks = load_benchmarks(sorted((data_dir / "eval").glob("*.jsonl")))
        n_questions = sum(len(q) for q in benchmarks.values())
        start = time.perf_counter()
        evaluate(model, processor, benchmarks, data_dir / "images", progress=False)
        eval_s = time.perf_counter() - start
    print(f"threads={args.threads} batch={batch} steps={args.steps}")
    print(f"teacher training: {batch * args.steps / train_s:.1f} samples/s ({train_s / args.steps:.2f} s/step, including encoding)")
    print(f"evaluation:       {n_questions / eval_s:.1f} questions/s ({n_questions} questions, greedy, batch 64)")


if __name__ == "__main__":
    main()
