"""Efficiency of a model on one representative prompt: parameters, FLOPs, latency, memory.

- ``llm_params``: the language backbone (embeddings, decoder layers, final norm, LM head);
  ``total_params``: everything, vision tower and projector included.
- ``flops_per_sample``: FLOPs of one prefill forward pass, counted by ``torch.utils.flop_counter``.
- ``prefill_ms``: median wall time of that forward pass.
- ``decode_tokens_per_s``: greedy tokens per second after the prefill (KV cache on), from the
  difference between generating ``n`` tokens and one.
- ``peak_mem_mb``: on CUDA the peak allocated memory during the measurement; on CPU the process's
  peak resident set size (which includes everything the process ever held).

The counts are exact and go into a run's metrics; the three measured figures (:data:`TIMING_KEYS`)
change from run to run with the machine's load, so a study keeps them apart from its tracked
results (:func:`split_timings`).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from study.models.device import model_device, move_to_model
from study.models.layers import language_model
from study.models.memory import peak_memory_mb, reset_peak_memory

TIMING_KEYS = ("prefill_ms", "decode_tokens_per_s", "peak_mem_mb")


def split_timings(efficiency: dict) -> tuple[dict, dict]:
    """``(counts, timings)``: the exact figures of :func:`measure_efficiency` and the measured ones."""
    return {k: v for k, v in efficiency.items() if k not in TIMING_KEYS}, {k: v for k, v in efficiency.items() if k in TIMING_KEYS}


def parameter_counts(model) -> dict[str, int]:
    llm = sum(p.numel() for p in language_model(model).parameters())
    head = model.get_output_embeddings()
    if head is not None and head.weight is not model.get_input_embeddings().weight:
        llm += sum(p.numel() for p in head.parameters())
    return {"llm_params": llm, "total_params": sum(p.numel() for p in model.parameters())}


@torch.no_grad()
def measure_efficiency(model, inputs: dict, decode_tokens: int = 32, repeats: int = 5) -> dict:
    """Efficiency figures for a batch-of-one prompt ``inputs`` (as the processor returns it)."""
    model.eval()
    device = model_device(model)
    inputs = move_to_model(inputs, model)
    with FlopCounterMode(display=False) as counter:
        model(**inputs)
    flops = counter.get_total_flops()

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    reset_peak_memory(device)
    model(**inputs)  # warm-up
    prefill = statistics.median(timed(lambda: model(**inputs)) for _ in range(repeats))
    pad = getattr(model.generation_config, "pad_token_id", None)

    def generate(n: int):
        return model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=pad)

    one = statistics.median(timed(lambda: generate(1)) for _ in range(repeats))
    many = statistics.median(timed(lambda: generate(decode_tokens)) for _ in range(repeats))
    return {
        **parameter_counts(model),
        "flops_per_sample": int(flops),
        "prefill_ms": prefill * 1000,
        "decode_tokens_per_s": (decode_tokens - 1) / max(many - one, 1e-9),
        "peak_mem_mb": peak_memory_mb(device),
    }
