"""Recovery training of a pruned student under ``accelerate``: one loop for the notebook (one
process) and for ``accelerate launch`` (DDP / FSDP / DeepSpeed across GPUs, or CPU processes).

What is trained (``trainable``): ``projector``, ``llm``, ``projector+llm`` or ``lora`` (peft
adapters on the LLM's linear layers, projector trainable, merged into a plain HF folder at the
end); the vision tower is always frozen. The loss (``loss``) is ``sft`` (CE on answer tokens),
``kd_logit`` and/or ``kd_hidden`` joined by ``+``: with ``sft+kd_logit`` the logit term is
``kd_alpha * KD + (1 - kd_alpha) * CE``; ``kd_hidden`` adds ``hidden_weight * MSE``. The teacher is
the unpruned model, frozen, in eval mode, without gradients.

The global batch (``batch_size`` x ``grad_accum``) is the same for any number of processes: batches
are split across processes. Each epoch's order is drawn from ``seed + epoch``; checkpoints hold
the full training state (``accelerator.save_state``) and a resumed run continues with the same
batches, so it ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm  # text bars: readable in stage logs and executed notebooks

from study.data.llava import LlavaDataset, collate, read_samples
from study.models.architectures import decoder_spec
from study.models.io import load_model, save_model
from study.models.layers import decoder_layers, language_model
from study.recovery.losses import kd_hidden_loss, kd_logit_loss

TRAINABLE = ("projector", "llm", "projector+llm", "lora")
LOSS_PARTS = ("sft", "kd_logit", "kd_hidden")


@dataclass
class RecoveryConfig:
    """Hyper-parameters of one recovery run (the ``recover`` section of ``params.yaml``)."""

    trainable: str = "projector+llm"
    loss: str = "sft"
    kd_alpha: float = 0.5
    hidden_weight: float = 1.0
    temperature: float = 2.0
    kl_direction: str = "forward"
    hidden_layers: list[int] | None = None  # student blocks; default: the last
    hidden_kind: str = "mse"
    lr: float = 2e-5
    epochs: float = 1.0
    batch_size: int = 16
    grad_accum: int = 1
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    mixed_precision: str = "no"
    seed: int = 0
    checkpoint_every: int = 0  # optimizer steps between checkpoints (0: none)
    log_every: int = 10
    stop_after: int | None = None  # stop (as if interrupted) after this many optimizer steps

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, got {self.trainable!r}")
        parse_loss(self.loss)
        if not 0 <= self.kd_alpha <= 1:
            raise ValueError(f"kd_alpha must be in [0, 1], got {self.kd_alpha}")


def parse_loss(spec: str) -> set[str]:
    parts = set(spec.split("+"))
    if not spec or parts - set(LOSS_PARTS):
        raise ValueError(f"loss must join some of {LOSS_PARTS} with '+', got {spec!r}")
    return parts


def set_trainable(model, trainable: str) -> list[torch.nn.Parameter]:
    """Freeze everything but what ``trainable`` names; return the trainable parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    parts = []
    if trainable in ("projector", "projector+llm", "lora"):
        parts.append(model.model.multi_modal_projector)
    if trainable in ("llm", "projector+llm"):
        parts += [language_model(model), model.get_output_embeddings()]
    for module in parts:
        for p in module.parameters():
            p.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def add_lora(model, cfg: RecoveryConfig):
    """peft LoRA adapters on the LLM's attention and MLP linears (names from the architecture table)."""
    from peft import LoraConfig, get_peft_model

    spec = decoder_spec(model)
    leaves = sorted({p.rsplit(".", 1)[-1] for p in (spec.q, spec.k, spec.v, spec.o, *spec.mlp_in, spec.mlp_out)})
    target = rf".*language_model.*\.({'|'.join(map(re.escape, leaves))})$"
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=target)
    model = get_peft_model(model, lora)
    for p in model.base_model.model.model.multi_modal_projector.parameters():
        p.requires_grad_(True)
    return model


def epoch_order(n_samples: int, seed: int, epoch: int) -> list[int]:
    """The sample order of one epoch: a permutation drawn from ``seed`` and ``epoch`` only, so a
    resumed run sees the same batches as an uninterrupted one."""
    return torch.randperm(n_samples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()


def recover(
    student_dir: str | Path,
    teacher_dir: str | Path | None,
    train_json: str | Path,
    image_folder: str | Path,
    out_dir: str | Path,
    cfg: RecoveryConfig,
    layer_map: list[int] | None = None,
) -> list[dict]:
    """Train the student, save it (merged, plain HF) to ``out_dir``; return the training curve."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from transformers import get_cosine_schedule_with_warmup

    parts = parse_loss(cfg.loss)
    needs_teacher = bool(parts & {"kd_logit", "kd_hidden"})
    if needs_teacher and teacher_dir is None:
        raise ValueError(f"loss {cfg.loss!r} needs a teacher")
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=cfg.mixed_precision,
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )
    set_seed(cfg.seed)
    out_dir = Path(out_dir)
    checkpoints = out_dir / "checkpoints"
    student, processor = load_model(student_dir)
    teacher = load_model(teacher_dir)[0].to(accelerator.device) if needs_teacher else None
    if teacher is not None:
        teacher.requires_grad_(False)
    n_student = len(decoder_layers(student))
    layer_map = layer_map or list(range(n_student))
    set_trainable(student, cfg.trainable)
    if cfg.trainable == "lora":
        student = add_lora(student, cfg)
    params = [p for p in student.parameters() if p.requires_grad]

    samples = read_samples(train_json)
    dataset = LlavaDataset(samples, image_folder, processor)
    pad = processor.tokenizer.pad_token_id
    per_epoch = len(samples) // cfg.batch_size
    if per_epoch == 0:
        raise ValueError(f"{len(samples)} samples cannot fill one batch of {cfg.batch_size}")
    total_steps = max(1, math.ceil(cfg.epochs * per_epoch / cfg.grad_accum))
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, round(cfg.warmup_ratio * total_steps), total_steps)
    student, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)

    step = 0
    if checkpoints.exists():
        latest = max(checkpoints.glob("step-*"), key=lambda p: int(p.name.split("-")[1]), default=None)
        if latest is not None:
            accelerator.load_state(str(latest))
            step = int(latest.name.split("-")[1])
            accelerator.print(f"resuming from {latest} (optimizer step {step})")

    def loader_for(epoch: int, skip: int):
        order = epoch_order(len(samples), cfg.seed, epoch)[skip * cfg.batch_size :]
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=cfg.batch_size, sampler=order, drop_last=True, collate_fn=lambda b: collate(b, pad)
        )
        return accelerator.prepare_data_loader(loader)

    curve: list[dict] = []
    micro = step * cfg.grad_accum
    bar = tqdm(total=total_steps, initial=step, desc="recovery", disable=not accelerator.is_local_main_process)
    student.train()
    running: dict[str, float] = {}
    while step < total_steps and (cfg.stop_after is None or step < cfg.stop_after):
        epoch, offset = divmod(micro, per_epoch)
        for batch in loader_for(epoch, offset):
            with accelerator.accumulate(student):
                losses = _losses(student, teacher, batch, parts, cfg, layer_map)
                loss = losses["total"]
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"recovery loss is {float(loss)} at optimizer step {step + 1}: { ({k: float(v) for k, v in losses.items()}) }"
                    )
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            micro += 1
            for k, v in losses.items():
                running[k] = running.get(k, 0.0) + float(accelerator.reduce(v.detach(), reduction="mean")) / cfg.grad_accum
            if not accelerator.sync_gradients:
                continue
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == total_steps:
                n = step - (curve[-1]["step"] if curve else 0)
                curve.append({"step": step, **{k: v / n for k, v in running.items()}, "lr": scheduler.get_last_lr()[0]})
                bar.set_postfix(loss=f"{curve[-1]['total']:.4f}")
                running = {}
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                accelerator.save_state(str(checkpoints / f"step-{step}"))
            if step >= total_steps or (cfg.stop_after is not None and step >= cfg.stop_after):
                break
    bar.close()
    accelerator.wait_for_everyone()
    if step >= total_steps and accelerator.is_main_process:
        model = accelerator.unwrap_model(student)
        if cfg.trainable == "lora":
            model = model.merge_and_unload()
        save_model(model.eval(), processor, out_dir)
        pd.DataFrame(curve).to_csv(out_dir / "training_curve.csv", index=False)
        if (Path(student_dir) / "pruning.json").exists():  # the lineage travels with the weights
            shutil.copy2(Path(student_dir) / "pruning.json", out_dir / "pruning.json")
        shutil.rmtree(checkpoints, ignore_errors=True)  # finished: the resume points are no longer needed
        (out_dir / "recovery.json").write_text(
            json.dumps({"student": str(student_dir), "teacher": str(teacher_dir), **asdict(cfg)}, indent=2) + "\n"
        )
    accelerator.wait_for_everyone()
    return curve


def _losses(student, teacher, batch: dict, parts: set[str], cfg: RecoveryConfig, layer_map: list[int]) -> dict[str, torch.Tensor]:
    hidden = "kd_hidden" in parts
    out = student(**batch, output_hidden_states=hidden)
    losses: dict[str, torch.Tensor] = {}
    if "sft" in parts:
        losses["ce"] = out.loss
    if teacher is not None:
        with torch.no_grad():
            ref = teacher(**{k: v for k, v in batch.items() if k != "labels"}, output_hidden_states=hidden)
        if "kd_logit" in parts:
            losses["kd_logit"] = kd_logit_loss(out.logits, ref.logits, batch["labels"], cfg.temperature, cfg.kl_direction)
        if hidden:
            losses["kd_hidden"] = kd_hidden_loss(
                out.hidden_states, ref.hidden_states, batch["labels"], cfg.hidden_layers, layer_map, cfg.hidden_kind
            )
    if "kd_logit" in losses and "ce" in losses:
        total = cfg.kd_alpha * losses["kd_logit"] + (1 - cfg.kd_alpha) * losses["ce"]
    else:
        total = losses.get("kd_logit", losses.get("ce", torch.zeros((), device=out.logits.device)))
    if hidden:
        total = total + cfg.hidden_weight * losses["kd_hidden"]
    losses["total"] = total
    return losses
