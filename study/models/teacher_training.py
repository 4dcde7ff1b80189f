"""How the embedded teacher is trained: LLaVA's recipe in miniature, in three steps.

1. **Vision pretraining** (the stand-in for CLIP's pretraining): the vision tower learns, per
   patch (= grid cell), the colour, the shape and the cell index of what it sees, from the scene
   annotations in ``scenes.jsonl``. A tower trained only through the LLM's loss never separated the
   object kinds (``shared/NOTES-tiny-llava.md``).
2. **Projector initialisation**: the projector's first layer standardises the vision features and
   its second is scaled so that image tokens have the norm of text embeddings.
3. **Instruction tuning** of projector + LLM with the vision tower frozen, on the LLaVA-format
   training data (answers-only loss), AdamW with warmup and a cosine schedule.

Deterministic by seed on a given machine and library versions.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm  # text bars: readable in stage logs and executed notebooks
from transformers import get_cosine_schedule_with_warmup

from study.data.llava import LlavaDataset, collate, load_image, read_samples
from study.data.scenes import COLOURS, GRID, SHAPES


@dataclass
class TeacherTraining:
    """Hyper-parameters of the teacher recipe (the ``teacher.training`` section of ``params.yaml``)."""

    seed: int = 0
    vision_steps: int = 150
    vision_batch_size: int = 256
    vision_lr: float = 1e-3
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    projector_lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    log_every: int = 150


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def vision_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Patch features as the LLaVA model feeds them to the projector (CLS dropped)."""
    cfg = model.config
    out = model.model.vision_tower(pixel_values, output_hidden_states=True)
    feats = out.hidden_states[cfg.vision_feature_layer]
    return feats[:, 1:] if cfg.vision_feature_select_strategy == "default" else feats


def scene_batches(scenes: list[dict], data_dir: Path, processor, batch_size: int, rng: random.Random):
    """Endless batches of (pixel_values, per-cell colour / shape labels) from annotated scenes."""
    colours, shapes = list(COLOURS), list(SHAPES)
    while True:
        chosen = rng.sample(scenes, min(batch_size, len(scenes)))
        images = [load_image({"id": s["image"], "image": s["image"]}, data_dir / "images") for s in chosen]
        pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
        colour = torch.full((len(chosen), GRID * GRID), len(colours))  # last class = empty cell
        shape = torch.full((len(chosen), GRID * GRID), len(shapes))
        for row, scene in enumerate(chosen):
            for obj in scene["objects"]:
                colour[row, obj["cell"]] = colours.index(obj["colour"])
                shape[row, obj["cell"]] = shapes.index(obj["shape"])
        yield pixels, colour, shape


def pretrain_vision(model, processor, data_dir: Path, cfg: TeacherTraining) -> list[dict]:
    """Step 1; returns the loss / per-cell accuracy log."""
    n_tokens = model.config.image_seq_length
    if n_tokens != GRID * GRID:
        raise ValueError(f"vision pretraining needs one image token per grid cell ({GRID * GRID}), the model has {n_tokens}")
    scenes = [json.loads(line) for line in (data_dir / "scenes.jsonl").read_text().splitlines()]
    scenes = [s for s in scenes if s["image"].startswith("train/")]
    width = model.config.vision_config.hidden_size
    heads = nn.ModuleDict(
        {"colour": nn.Linear(width, len(COLOURS) + 1), "shape": nn.Linear(width, len(SHAPES) + 1), "cell": nn.Linear(width, GRID * GRID)}
    )
    tower = model.model.vision_tower
    tower.train()
    opt = torch.optim.AdamW([*tower.parameters(), *heads.parameters()], lr=cfg.vision_lr)
    batches = scene_batches(scenes, data_dir, processor, cfg.vision_batch_size, random.Random(cfg.seed))
    cells = torch.arange(GRID * GRID)
    log = []
    for step in tqdm(range(cfg.vision_steps), desc="vision pretraining"):
        pixels, colour, shape = next(batches)
        feats = vision_features(model, pixels)
        targets = {"colour": colour, "shape": shape, "cell": cells.expand_as(colour)}
        logits = {k: heads[k](feats) for k in heads}
        loss = sum(nn.functional.cross_entropy(logits[k].flatten(0, 1), targets[k].flatten()) for k in heads)
        opt.zero_grad()
        loss.backward()
        opt.step()
        acc = {k: float((logits[k].argmax(-1) == targets[k]).float().mean()) for k in heads}
        log.append({"step": step, "loss": float(loss), **{f"acc_{k}": v for k, v in acc.items()}})
    tower.eval()
    return log


@torch.no_grad()
def init_projector(model, processor, data_dir: Path, n_images: int = 512, seed: int = 0) -> None:
    """Step 2: standardise the vision features in ``linear_1`` and scale ``linear_2`` so image
    tokens have the mean norm of the text embeddings. The model stays a stock LLaVA."""
    scenes = [json.loads(line) for line in (data_dir / "scenes.jsonl").read_text().splitlines()]
    pixels, _, _ = next(scene_batches(scenes, data_dir, processor, n_images, random.Random(seed)))
    feats = vision_features(model, pixels).flatten(0, 1)
    mean, std = feats.mean(0), feats.std(0) + 1e-5
    proj = model.model.multi_modal_projector
    proj.linear_1.weight.div_(std)
    proj.linear_1.bias.sub_(proj.linear_1.weight @ mean)
    tokens = proj(feats)
    text_norm = model.get_input_embeddings().weight.norm(dim=-1).mean()
    scale = text_norm / tokens.norm(dim=-1).mean()
    proj.linear_2.weight.mul_(scale)
    proj.linear_2.bias.mul_(scale)


def instruction_tune(
    model,
    processor,
    data_dir: Path,
    cfg: TeacherTraining,
    on_log: Callable[[int, object, object], dict | None] | None = None,
) -> list[dict]:
    """Step 3; ``on_log(step, model, processor)`` may return extra numbers (e.g. quick accuracies) to log."""
    samples = read_samples(data_dir / "train.json")
    dataset = LlavaDataset(samples, data_dir / "images", processor, cache=True)
    generator = torch.Generator().manual_seed(cfg.seed)
    pad = processor.tokenizer.pad_token_id
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, shuffle=True, generator=generator, collate_fn=lambda b: collate(b, pad), drop_last=True
    )
    batches = (batch for _epoch in itertools.count() for batch in loader)
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(False)
    projector = list(model.model.multi_modal_projector.parameters())
    projector_ids = {id(p) for p in projector}
    llm = [p for p in model.parameters() if p.requires_grad and id(p) not in projector_ids]
    opt = torch.optim.AdamW([{"params": projector, "lr": cfg.projector_lr}, {"params": llm, "lr": cfg.lr}], weight_decay=cfg.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, cfg.warmup_steps, cfg.steps)
    # eager attention: on CPU, SDPA's backward with a padding mask was 3x slower (measured)
    attention = model.config._attn_implementation
    model.set_attn_implementation("eager")
    model.train()
    model.model.vision_tower.eval()
    log: list[dict] = []
    bar = tqdm(range(1, cfg.steps + 1), desc="instruction tuning")
    running = 0.0
    for step in bar:
        batch = next(batches)
        loss = model(**batch).loss
        if not math.isfinite(float(loss)):
            raise FloatingPointError(f"teacher training loss is {float(loss)} at step {step}")
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        sched.step()
        running += float(loss)
        if step % cfg.log_every == 0 or step == cfg.steps:
            entry = {"step": step, "loss": running / (step - (log[-1]["step"] if log else 0)), "lr": sched.get_last_lr()[1]}
            running = 0.0
            if on_log is not None:
                model.eval()
                entry.update(on_log(step, model, processor) or {})
                model.train()
                model.model.vision_tower.eval()
            log.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.3f}")
    model.set_attn_implementation(attention)
    model.eval()
    return log


def train_teacher(data_dir: str | Path, arch, cfg: TeacherTraining, on_log=None):
    """The whole recipe from a synthetic data folder: returns model, processor and the logs."""
    from study.models.teacher import build_processor, build_teacher

    data_dir = Path(data_dir)
    seed_everything(cfg.seed)
    samples = read_samples(data_dir / "train.json")
    processor = build_processor((turn["value"] for s in samples for turn in s["conversations"]), arch)
    model = build_teacher(arch, processor, cfg.seed)
    vision_log = pretrain_vision(model, processor, data_dir, cfg)
    init_projector(model, processor, data_dir, seed=cfg.seed)
    tuning_log = instruction_tune(model, processor, data_dir, cfg, on_log)
    return model, processor, {"vision": vision_log, "tuning": tuning_log}
