"""Pruning at real scale: peak memory of ``python -m study prune`` and the pruned models' speed.

The model is an arch-identical random checkpoint of a published LLaVA-format release
(:data:`study.gpu_memory.PUBLISHED_CONFIGS`) with ``--layers`` decoder layers: built on the meta
device, filled with seeded uniform weights (no pretrained values, no cost of random init), saved
once under ``--work`` with a word-level tokenizer and the release's image processor.

- ``memory``: each method at ``--ratio`` runs as ``python -m study prune`` in a fresh process under
  ``/usr/bin/time -v``; its peak RSS against the model's bytes (its ``*.safetensors``) and the
  issue's bounds, its peak anonymous memory (RSS less the pages of the mapped checkpoint, which
  the kernel can drop), and the importance time the command prints.
- ``speed``: layer / width / hybrid (data-free metrics) at each ``--levels``, width and hybrid also
  with ``round_to`` 64, pruned in this process with :func:`study.pruning.prune.prune` on a copy of
  the loaded model; prefill of one sample (image tokens + 64 text tokens) and decode tokens/s at
  batch 1 and 8, relative to the unpruned model measured before each level and at the end, against
  the naive limit 1 / (1 - achieved) and the FLOP ratio of the same phase.

Usage: python benchmarks/scale.py [--model llava-1.5-7b|bunny-v1.0-3b] [--layers 32] [--part memory|speed|all]
       [--device cpu|cuda] [--dtype bfloat16] [--speed-dtype float32] [--work /tmp/scale] [--methods ...]
On a CPU without native bf16 (AVX2), bf16 matmuls run ~8x slower than fp32: measure taylor and
activation with ``--dtype float32`` on a few layers (benchmarks/README.md, 2026-12-01).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoProcessor, LlavaForConditionalGeneration, LlavaProcessor, StaticCache

from study.config.sections import DataConfig, TeacherArchitecture
from study.convert.bunny import image_processor
from study.data.llava import calibration_batches, read_samples
from study.data.synthetic import generate_dataset
from study.gpu_memory import BF16, GB, PUBLISHED_CONFIGS, model_sizes, pruning
from study.models.device import model_device
from study.models.families import load_config
from study.models.io import load_model, save_model
from study.models.teacher import build_processor
from study.outputs import atomic_folder
from study.pruning.prune import prune

MEMORY_METHODS = ("layer-last", "width-magnitude_l1", "width-taylor", "width-activation")
LEAN_BOUND = (1.15, 1 * GB)  # layer and magnitude: peak <= 1.15 x model bytes + 1 GB
GRADIENT_FACTOR = 1.3  # taylor and activation: peak <= 1.3 x model bytes + activations
SPEED_METHODS = (  # (label, paradigm, metric, round_to)
    ("layer", "layer", "last", 1),
    ("width", "width", "magnitude_l1", 1),
    ("width r64", "width", "magnitude_l1", 64),
    ("hybrid", "hybrid", "last+magnitude_l1", 1),
    ("hybrid r64", "hybrid", "last+magnitude_l1", 64),
)
TEXT_TOKENS = 64
DECODE_BATCHES = (1, 8)
PEAK_WRAPPER = (  # stands in for /usr/bin/time -v where it is missing: the child's peak RSS, same line
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print(f'Maximum resident set size (kbytes): {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); "
    "sys.exit(rc)"
)


def calibration_data(work: Path) -> Path:
    """A tiny synthetic dataset (``train.json`` + images) for calibration and the tokenizer's words."""
    data = work / "data"
    if not (data / "train.json").is_file():
        generate_dataset(DataConfig(n_train=16, n_eval_per_family=1), data)
    return data


def build_release_processor(config, texts):
    """A word-level tokenizer over ``texts`` with the LLaVA-1.5 chat template, and the release's
    image processor, set so that one image gives the release's number of image tokens (CLIP: 576
    patches, CLS dropped; SigLIP: every patch)."""
    vision = config.vision_config
    side = vision.image_size // vision.patch_size * vision.patch_size
    processor = build_processor(texts, TeacherArchitecture(image_size=side, patch_size=vision.patch_size))
    if vision.model_type == "clip_vision_model":
        return processor
    return LlavaProcessor(
        image_processor=image_processor({}, vision),
        tokenizer=processor.tokenizer,
        patch_size=vision.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=0,
        chat_template=processor.chat_template,
    )


@torch.no_grad()
def fill_random(model: nn.Module, seed: int, scale: float = 0.02) -> None:
    """Seeded uniform(-scale, scale) weights, norms at weight 1 and bias 0: distinct values (so
    importance scores differ) at a fraction of the cost of the model's own initialisation."""
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        param.uniform_(-scale, scale, generator=generator)
    for module in model.modules():
        if isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm"):
            module.weight.fill_(1.0)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()


def checkpoint(work: Path, name: str, layers: int, dtype: str, seed: int = 0) -> Path:
    """The random checkpoint of release ``name`` with ``layers`` decoder layers in ``dtype``, built
    once under ``work``: a plain HF folder that ``load_model`` and ``python -m study prune`` accept."""
    folder = work / f"{name}-{layers}L-{dtype}"
    if (folder / "config.json").is_file():
        return folder
    samples = read_samples(calibration_data(work) / "train.json")
    config = load_config(PUBLISHED_CONFIGS[name])
    config.text_config.num_hidden_layers = layers
    processor = build_release_processor(config, (t["value"] for s in samples for t in s["conversations"]))
    tok = processor.tokenizer
    config.image_token_index = processor.image_token_id
    config.pad_token_id = config.text_config.pad_token_id = tok.pad_token_id
    config.text_config.bos_token_id, config.text_config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.to(getattr(torch, dtype)).to_empty(device="cpu")  # non-persistent buffers are rebuilt on load
    fill_random(model, seed)
    gen = model.generation_config
    gen.pad_token_id, gen.bos_token_id, gen.eos_token_id, gen.do_sample = tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, False
    with atomic_folder(folder) as tmp:
        save_model(model, processor, tmp)
    return folder


def model_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (Linux ``/proc``; empty once it has ended)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [pid, *(d for child in children for d in _descendants(int(child)))]


def _rss_anon(pid: int) -> int:
    """Anonymous resident bytes of ``pid`` (not the pages of mapped files, which the kernel can drop)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"RssAnon:\s+(\d+) kB", status)
    return int(found.group(1)) * 1024 if found else 0


def _read(handle) -> str:
    handle.seek(0)
    return handle.read()


def run_prune(folder: Path, data: Path, method: str, args) -> dict:
    """``python -m study prune`` in a fresh process: its peak RSS (``/usr/bin/time -v``), its peak
    anonymous memory (sampled every 0.2 s: the RSS less the mapped checkpoint's pages), wall time
    and what it prints."""
    paradigm, metric = method.split("-", 1)
    out = args.work / "pruned"
    command = [sys.executable, "-m", "study", "prune", "--model", str(folder), "--paradigm", paradigm, "--metric", metric]
    command += ["--ratio", str(args.ratio), "--calibration", str(data / "train.json"), "--samples", str(args.samples)]
    command += ["--batch-size", str(args.samples), "--device", args.device, "--dtype", args.dtype, "--out", str(out), "--overwrite"]
    timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").is_file() else [sys.executable, "-c", PEAK_WRAPPER]
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(timer + command, stdout=stdout, stderr=stderr, text=True)
        anon = 0
        while proc.poll() is None:
            anon = max(anon, sum(_rss_anon(pid) for pid in _descendants(proc.pid)))
            time.sleep(0.2)
        wall = time.perf_counter() - start
        printed, errors = _read(stdout), _read(stderr)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{errors[-3000:]}")
    achieved = json.loads((out / "pruning.json").read_text())["achieved_ratio"]
    line = re.search(r"importance in ([\d.]+) s, peak memory (\d+) MB", printed)
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", errors).group(1))
    shutil.rmtree(out)
    return {
        "achieved": achieved,
        "importance_s": float(line.group(1)),
        "cli_peak": int(line.group(2)) * 2**20,
        "rss": rss_kib * 1024,
        "anon": anon,
        "wall_s": wall,
    }


def activation_bytes(folder: Path, data: Path, metric: str, samples: int, dtype: str) -> float:
    """Activations of one calibration batch as :func:`study.gpu_memory.pruning` estimates them
    (saved activations, logits) for the token count the calibration samples really have, scaled
    from bf16 to ``dtype``."""
    config = load_config(folder)
    sizes = model_sizes(config)
    processor = AutoProcessor.from_pretrained(folder)
    batch = calibration_batches(data / "train.json", data / "images", processor, samples, seed=0, batch_size=samples)[0]
    estimate = pruning(sizes, metric, batch["input_ids"].shape[1] - sizes.image_tokens, batch=samples)
    return (estimate.parts["activations"] + estimate.parts["logits"]) * getattr(torch, dtype).itemsize / BF16  # bf16 figures


def memory_part(args) -> None:
    """The memory table of ``args.methods`` on the checkpoint of ``args.layers`` layers; the bound is
    judged on the peak RSS (on CUDA: on the device's peak, which the command prints)."""
    data = calibration_data(args.work)
    folder = checkpoint(args.work, args.model, args.layers, args.dtype)
    size = model_bytes(folder)
    print(
        f"\n{args.model}, {args.layers} decoder layers, {args.dtype}: {size / GB:.2f} GB of safetensors; ratio {args.ratio}, {args.samples} calibration samples\n"
    )
    print(
        "| method | peak RSS (GB) | x model bytes | bound (GB) | met | peak anonymous (GB) | x model bytes | CLI peak_mem_mb (GB) | importance (s) | command wall (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method in args.methods:
        r = run_prune(folder, data, method, args)
        metric = method.split("-", 1)[1]
        if metric in ("taylor", "activation"):
            extra = activation_bytes(folder, data, metric, args.samples, args.dtype)
            bound, rule = GRADIENT_FACTOR * size + extra, f"1.3 x model + {extra / GB:.2f} activations"
        else:
            bound, rule = LEAN_BOUND[0] * size + LEAN_BOUND[1], "1.15 x model + 1"
        print(
            f"| {method} (achieved {r['achieved']:.3f}) | {r['rss'] / GB:.2f} | {r['rss'] / size:.3f} | {bound / GB:.2f} ({rule}) "
            f"| {'yes' if (r['cli_peak'] if args.device.startswith('cuda') else r['rss']) <= bound else 'NO'} | {r['anon'] / GB:.2f} | {r['anon'] / size:.3f} | {r['cli_peak'] / GB:.2f} "
            f"| {r['importance_s']:.1f} | {r['wall_s']:.0f} |",
            flush=True,
        )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    """``(seconds, result)`` of ``fn()``, the device's queue drained before and after."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def prompt(model: nn.Module) -> dict:
    """One sample as the model sees it: the image tokens, then :data:`TEXT_TOKENS` text tokens."""
    config, device = model.config, model_device(model)
    generator = torch.Generator().manual_seed(0)
    text = torch.randint(config.image_token_index + 1, config.image_token_index + 1000, (1, TEXT_TOKENS), generator=generator)
    ids = torch.cat([torch.full((1, config.image_seq_length), config.image_token_index), text], dim=1)
    size = config.vision_config.image_size
    pixels = torch.randn(1, 3, size, size, generator=generator)
    dtype = next(model.parameters()).dtype
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device), "pixel_values": pixels.to(device, dtype)}


def static_copy(model: nn.Module, prefilled, batch: int) -> tuple[StaticCache, int]:
    """A ``StaticCache`` one token longer than the prefill's cache, holding ``batch`` copies of it:
    decoding then writes in place, where a ``DynamicCache`` copies the whole cache at every step
    (at batch 8 on 4 layers that copy, not the weights, set the step time). Filled through the
    layers' ``lazy_initialization``, ``keys``/``values`` and ``cumulative_length`` (transformers 5.23)."""
    length = prefilled.get_seq_length()
    cache = StaticCache(config=model.config, max_cache_len=length + 1)
    for layer, source in zip(cache.layers, prefilled.layers, strict=True):
        keys, values = source.keys.repeat(batch, 1, 1, 1), source.values.repeat(batch, 1, 1, 1)
        layer.lazy_initialization(keys, values)
        layer.keys[:, :, :length], layer.values[:, :, :length] = keys, values
        layer.cumulative_length.fill_(length)
    return cache, length


@torch.no_grad()
def measure_speed(model: nn.Module, inputs: dict, reps: int, steps: int) -> dict:
    """Prefill seconds (median of ``reps`` after a warm-up) and decode tokens/s at each of
    :data:`DECODE_BATCHES` (median step of ``steps`` after a warm-up step, each decoding the token
    after the prompt into :func:`static_copy` of the prefill's KV cache), with the FLOPs of each
    phase counted on its warm-up."""
    device = model_device(model)

    def prefill():
        return model(**inputs, use_cache=True, logits_to_keep=1)  # as generate() prefills: last position's logits only

    with FlopCounterMode(display=False) as counter:
        out = prefill()
    result = {"prefill_flops": counter.get_total_flops()}
    seconds = []
    for _ in range(reps):
        s, out = timed(prefill, device)
        seconds.append(s)
    result["prefill_s"] = statistics.median(seconds)
    for batch in DECODE_BATCHES:
        cache, length = static_copy(model, out.past_key_values, batch)
        token = out.logits[:, -1:].argmax(-1).repeat(batch, 1)
        position = torch.tensor([length], device=device)

        def step(token=token, cache=cache, position=position, length=length):
            out = model(input_ids=token, past_key_values=cache, cache_position=position, use_cache=True)
            for layer in cache.layers:  # every timed step decodes the same position
                layer.cumulative_length.fill_(length)
            return out

        with FlopCounterMode(display=False) as counter:
            step()
        result[f"decode{batch}_flops"] = counter.get_total_flops()
        result[f"decode{batch}_tok_s"] = batch / statistics.median(timed(step, device)[0] for _ in range(steps))
        del cache
    return result


def speed_rows(args, folder: Path) -> list[dict]:
    """Measurements in the order taken: the unpruned model before each level's pruned models and
    once at the end, so each pruned model has a baseline on either side."""
    base, _ = load_model(folder, device=args.device, dtype=args.speed_dtype)
    inputs = prompt(base)
    rows = []
    for level in args.levels:
        rows.append({"method": "unpruned", "achieved": 0.0, **measure_speed(base, inputs, args.reps, args.steps)})
        for label, paradigm, metric, round_to in SPEED_METHODS:
            model = copy.deepcopy(base)
            record = prune(model, paradigm, level, metric, round_to=round_to, match_budget="none")  # the level itself
            rows.append(
                {
                    "method": label,
                    "level": level,
                    "achieved": record["achieved_ratio"],
                    **measure_speed(model, inputs, args.reps, args.steps),
                }
            )
            del model
            print(f"  {label} {level}: {json.dumps(rows[-1])}", flush=True)
    rows.append({"method": "unpruned", "achieved": 0.0, **measure_speed(base, inputs, args.reps, args.steps)})
    return rows


def with_baselines(rows: list[dict]) -> list[tuple[dict, dict]]:
    """Each pruned row with the mean of the unpruned measurements just before and after it."""
    out = []
    for i, row in enumerate(rows):
        if row["method"] == "unpruned":
            continue
        before = next(r for r in reversed(rows[:i]) if r["method"] == "unpruned")
        after = next(r for r in rows[i:] if r["method"] == "unpruned")
        out.append((row, {k: (before[k] + after[k]) / 2 for k in before if k not in ("method", "achieved")}))
    return out


PHASES = (  # (title, measured key, whether it is a time (lower is faster), FLOPs key)
    ("prefill (1 sample)", "prefill_s", True, "prefill_flops"),
    *((f"decode, batch {b}", f"decode{b}_tok_s", False, f"decode{b}_flops") for b in DECODE_BATCHES),
)


def speed_tables(rows: list[dict]) -> None:
    """One markdown table per phase: speed-up against the naive and the FLOP-based limit."""
    paired = with_baselines(rows)
    for title, key, is_time, flops in PHASES:
        unit = "s" if is_time else "tok/s"
        print(
            f"\n{title}\n\n| method | level | achieved | {unit} (unpruned) | speed-up | naive limit | FLOP limit | speed-up / FLOP limit |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for row, base in paired:
            speedup = base[key] / row[key] if is_time else row[key] / base[key]
            limit = base[flops] / row[flops]
            print(
                f"| {row['method']} | {row['level']:.2f} | {row['achieved']:.3f} | {row[key]:.3g} ({base[key]:.3g}) | {speedup:.3f} "
                f"| {1 / (1 - row['achieved']):.3f} | {limit:.3f} | {speedup / limit:.3f} |"
            )
    spread = {k: [r[k] for r in rows if r["method"] == "unpruned"] for _, k, _, _ in PHASES}
    print("\nunpruned measurements (in order): " + "; ".join(f"{k} " + " ".join(f"{v:.3g}" for v in vs) for k, vs in spread.items()))


def speed_part(args) -> None:
    """The speed tables on the checkpoint of ``args.layers`` layers, in ``args.speed_dtype``."""
    torch.set_num_threads(args.threads)
    folder = checkpoint(args.work, args.model, args.layers, args.dtype)
    print(
        f"\n{args.model}, {args.layers} decoder layers, {args.speed_dtype} on {args.device}, {args.threads} thread(s); reps {args.reps}, decode steps {args.steps}"
    )
    speed_tables(speed_rows(args, folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    llava_releases = sorted(
        name for name, config in PUBLISHED_CONFIGS.items() if config["model_type"] == "llava"
    )  # what checkpoint() builds
    parser.add_argument("--model", default="llava-1.5-7b", choices=llava_releases)
    parser.add_argument("--layers", type=int, default=32, help="decoder layers of the random checkpoint (default 32, the release's)")
    parser.add_argument("--part", default="all", choices=("memory", "speed", "all"))
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="bfloat16", help="the checkpoint's dtype and pruning's (default bfloat16)")
    parser.add_argument("--speed-dtype", default="float32", help="the dtype speed is measured in (default float32)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/scale"), help="checkpoints and data, kept between runs")
    parser.add_argument("--methods", nargs="+", default=list(MEMORY_METHODS), help="memory: <paradigm>-<metric> runs")
    parser.add_argument("--ratio", type=float, default=0.15, help="memory: the pruning level")
    parser.add_argument("--samples", type=int, default=2, help="memory: calibration samples (one batch)")
    parser.add_argument("--levels", type=float, nargs="+", default=[0.15, 0.3, 0.45, 0.6], help="speed: pruning levels")
    parser.add_argument("--threads", type=int, default=1, help="speed: torch threads")
    parser.add_argument("--reps", type=int, default=1, help="speed: timed prefills after the warm-up")
    parser.add_argument("--steps", type=int, default=5, help="speed: timed decode steps after the warm-up")
    args = parser.parse_args()
    for part, run in (("memory", memory_part), ("speed", speed_part)):
        if args.part in (part, "all"):
            start = time.perf_counter()
            run(args)
            print(f"\n{part} part: {time.perf_counter() - start:.0f} s wall", flush=True)


if __name__ == "__main__":
    main()
