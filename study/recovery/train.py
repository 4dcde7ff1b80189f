"""Recovery training of a pruned student under ``accelerate``: one loop for the notebook (one
process) and for ``accelerate launch`` (DDP / FSDP / DeepSpeed across GPUs, or CPU processes).

What is trained (``trainable``): ``projector``, ``llm``, ``projector+llm`` or ``lora`` (peft
adapters on the LLM's linear layers, projector trainable, merged into a plain HF folder at the
end); the vision tower is always frozen. The loss (``loss``) is ``sft`` (CE on answer tokens),
``kd_logit`` and/or ``kd_hidden`` joined by ``+``: with ``sft+kd_logit`` the logit term is
``kd_alpha * KD + (1 - kd_alpha) * CE``; ``kd_hidden`` adds ``hidden_weight * MSE``
(:func:`study.recovery.losses.loss_weights` and :func:`~study.recovery.losses.combine`). The teacher
is the unpruned model, frozen, in eval mode, without gradients.

:func:`recover` is the composition of the steps below it, in the order they run: check the inputs,
set up the accelerator, the models, the data and the optimizer, resume, train (one
:func:`loss_step` per batch, :func:`save_checkpoint` every ``checkpoint_every`` steps), then gather,
merge and save the recovered model.

The global batch (``batch_size`` x ``grad_accum``) is the same for any number of processes: batches
are split across processes. Each epoch's order is drawn from ``seed + epoch``; checkpoints hold
the full training state (``accelerator.save_state``) and a resumed run continues with the same
batches, so it ends with the same weights as an uninterrupted one.

Precision: with ``mixed_precision`` ``bf16`` or ``fp16`` the student is loaded in float32 whatever
its stored dtype, so the trainable (master) weights and AdamW's states are float32 and autocast
does the 16-bit compute (DeepSpeed and FSDP take the float32 model and apply their own
mixed-precision policy); with ``"no"`` it trains in its stored dtype. The frozen teacher is loaded
in ``teacher_dtype`` (``"auto"``: its stored dtype, e.g. bfloat16 for a 7B teacher) and runs outside
autocast. The recovered folder is written in the student's stored dtype.

Saving is safe under FSDP and ZeRO-3: every process takes part in gathering the full state dict
(``accelerator.get_state_dict``), then the main process writes it with ``save_pretrained``; LoRA
adapters are merged into that state dict (W + alpha / r * B A), so the folder is plain HF.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm  # text bars: readable in stage logs and executed notebooks

from study.config.sections import RecoveryConfig
from study.config.vocabulary import parse_loss
from study.data.llava import IGNORE_INDEX, LlavaDataset, collate, read_samples
from study.models.architectures import decoder_spec
from study.models.device import stored_dtype
from study.models.families import family, projector_parameters
from study.models.io import load_model, require_model_folder, save_model
from study.models.layers import language_model
from study.outputs import atomic_folder, check_output, write_json
from study.records import PRUNING_FILE, RECOVERY_FILE
from study.recovery.losses import combine, kd_hidden_loss, kd_logit_loss, loss_weights

RECORD = RECOVERY_FILE
KD_PARTS = {"kd_logit", "kd_hidden"}  # the parts that need a teacher


def set_trainable(model, trainable: str) -> list[torch.nn.Parameter]:
    """Freeze everything but what ``trainable`` names; return the trainable parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    parts = []
    if trainable in ("projector", "projector+llm", "lora"):
        parts += projector_parameters(model)
    if trainable in ("llm", "projector+llm"):
        parts += [*language_model(model).parameters(), *model.get_output_embeddings().parameters()]
    for p in parts:
        p.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def add_lora(model, cfg: RecoveryConfig):
    """peft LoRA adapters on the LLM's attention and MLP linears (names from the architecture table)."""
    from peft import LoraConfig, get_peft_model

    spec = decoder_spec(model)
    leaves = sorted({p.rsplit(".", 1)[-1] for p in spec.linears()})
    target = rf"{re.escape(family(model).backbone)}\..*\.({'|'.join(map(re.escape, leaves))})$"
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=target)
    model = get_peft_model(model, lora)
    for p in projector_parameters(model.base_model.model):
        p.requires_grad_(True)
    return model


def load_student(student_dir: str | Path, cfg: RecoveryConfig):
    """The student and its processor in the dtype it trains in: float32 under mixed precision (the
    optimizer then keeps float32 master weights and states), else its stored dtype."""
    return load_model(student_dir, dtype="float32" if cfg.mixed_precision != "no" else "auto")


def merge_lora_state_dict(state_dict: dict[str, torch.Tensor], lora_config) -> dict[str, torch.Tensor]:
    """A peft LoRA model's full state dict with each adapter merged into its base weight,
    ``W + scaling * B @ A`` (``scaling`` = alpha / r, or alpha / sqrt(r) with rsLoRA), under the
    base model's own keys. Works on a gathered state dict, so it needs no unsharded module."""
    prefix, adapter = "base_model.model.", "default"
    scaling = lora_config.lora_alpha / (math.sqrt(lora_config.r) if lora_config.use_rslora else lora_config.r)
    merged = {}
    for key, value in state_dict.items():
        if ".lora_" in key:
            continue
        if key.endswith(".base_layer.weight"):
            module = key.removesuffix(".base_layer.weight")
            a, b = state_dict[f"{module}.lora_A.{adapter}.weight"], state_dict[f"{module}.lora_B.{adapter}.weight"]
            if lora_config.fan_in_fan_out:
                raise ValueError("merging LoRA adapters with fan_in_fan_out=True is not supported")
            delta = (b.to(torch.float32) @ a.to(torch.float32)) * scaling
            value = (value.to(torch.float32) + delta.to(value.device)).to(value.dtype)
        merged[key.removeprefix(prefix).replace(".base_layer.", ".")] = value
    leftover = [k for k in merged if "lora_" in k]
    if leftover:
        raise ValueError(f"unmerged LoRA tensors left: {leftover[:5]}")
    return merged


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
    identity: dict | None = None,
    overwrite: bool = False,
) -> list[dict]:
    """Train the student, save it (merged, plain HF) to ``out_dir``; return the training curve.
    The folder's ``recovery.json`` records the student and teacher folders, the config and the
    run's ``identity`` (a study's run name, recipe and data fraction).

    ``out_dir`` must not be the student or teacher folder (nor inside or around them) and must be
    empty unless ``overwrite``; it is written atomically once training ends (:mod:`study.outputs`).
    Resume points go to the sibling ``<out_dir>.checkpoints/step-<N>`` (each written whole, then
    renamed), so rerunning an interrupted run resumes it; they are removed when the model is saved."""
    from accelerate.utils import set_seed

    out_dir, samples = check_inputs(student_dir, teacher_dir, train_json, image_folder, out_dir, cfg, overwrite)
    accelerator = setup_accelerator(cfg)
    set_seed(cfg.seed)
    student, teacher, processor = setup_models(student_dir, teacher_dir if uses_teacher(cfg) else None, cfg, accelerator.device)
    data = TrainingData(LlavaDataset(samples, image_folder, processor), processor.tokenizer.pad_token_id, cfg.batch_size, cfg.seed)
    total_steps = optimizer_steps(cfg, data.batches_per_epoch)
    student, optimizer, scheduler = setup_optimizer(accelerator, student, cfg, total_steps)
    checkpoints = checkpoints_dir(out_dir)
    step = resume(accelerator, checkpoints)
    curve, step = train(accelerator, student, teacher, optimizer, scheduler, data, cfg, layer_map, checkpoints, step, total_steps)
    accelerator.wait_for_everyone()
    if step >= total_steps:
        save_recovered(accelerator, student, processor, curve, out_dir, student_dir, teacher_dir, cfg, identity, overwrite)
    accelerator.wait_for_everyone()
    return curve


def uses_teacher(cfg: RecoveryConfig) -> bool:
    """Whether ``cfg.loss`` has a distillation part, which needs the teacher."""
    return bool(parse_loss(cfg.loss) & KD_PARTS)


def check_inputs(
    student_dir: str | Path,
    teacher_dir: str | Path | None,
    train_json: str | Path,
    image_folder: str | Path,
    out_dir: str | Path,
    cfg: RecoveryConfig,
    overwrite: bool,
) -> tuple[Path, list[dict]]:
    """Refuse bad inputs before any model is loaded; return the checked output folder and the
    training samples."""
    if uses_teacher(cfg) and teacher_dir is None:
        raise ValueError(f"loss {cfg.loss!r} needs a teacher")
    out_dir = check_output(out_dir, [student_dir, teacher_dir], overwrite)
    for folder in (student_dir, teacher_dir if uses_teacher(cfg) else None):
        if folder is not None:
            require_model_folder(folder)
    samples = read_samples(train_json)  # malformed data fails before a model is loaded
    if len(samples) // cfg.batch_size == 0:
        raise ValueError(f"{len(samples)} samples cannot fill one batch of {cfg.batch_size}")
    if any("image" in s for s in samples) and not Path(image_folder).is_dir():
        raise FileNotFoundError(f"image folder not found: {image_folder}")
    return out_dir, samples


def setup_accelerator(cfg: RecoveryConfig):
    """The ``Accelerator`` of a run: gradient accumulation, mixed precision, and batches split
    across processes so the global batch does not depend on their number."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs

    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=cfg.mixed_precision,
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        # a process whose share of a batch is text only leaves the projector without gradients
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > accelerator.num_processes:  # each process would train alone and write the same folder
        raise RuntimeError(
            f"launched as {launched} processes but accelerate runs each one alone ({accelerator.distributed_type.value}): "
            "without a visible GPU, set ACCELERATE_USE_CPU=true to train on CPU processes"
        )
    return accelerator


def setup_models(student_dir: str | Path, teacher_dir: str | Path | None, cfg: RecoveryConfig, device):
    """The student with only what ``cfg.trainable`` names trainable (LoRA adapters added for
    ``lora``), its processor, and the frozen teacher on ``device`` (None without ``teacher_dir``)."""
    student, processor = load_student(student_dir, cfg)
    teacher = None
    if teacher_dir is not None:
        teacher = load_model(teacher_dir, dtype=cfg.teacher_dtype)[0].to(device)
        teacher.requires_grad_(False)
    set_trainable(student, cfg.trainable)
    if cfg.trainable == "lora":
        student = add_lora(student, cfg)
    return student, teacher, processor


@dataclass
class TrainingData:
    """The training set as the loop reads it: each epoch in its own seeded order
    (:func:`epoch_order`), in full batches that accelerate splits across processes."""

    dataset: LlavaDataset
    pad_token_id: int
    batch_size: int
    seed: int

    @property
    def batches_per_epoch(self) -> int:
        return len(self.dataset) // self.batch_size

    def loader(self, accelerator, epoch: int, skip: int = 0):
        """The batches of ``epoch`` after its first ``skip``, prepared for ``accelerator``."""
        order = epoch_order(len(self.dataset), self.seed, epoch)[skip * self.batch_size :]
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=order,
            drop_last=True,
            collate_fn=partial(collate, pad_token_id=self.pad_token_id),
        )
        return accelerator.prepare_data_loader(loader)


def optimizer_steps(cfg: RecoveryConfig, batches_per_epoch: int) -> int:
    """Optimizer steps of the whole run: ``cfg.epochs`` epochs of ``cfg.grad_accum`` batches a step."""
    return max(1, math.ceil(cfg.epochs * batches_per_epoch / cfg.grad_accum))


def setup_optimizer(accelerator, student, cfg: RecoveryConfig, total_steps: int):
    """AdamW on the trainable parameters with a linear warmup then cosine decay; the student,
    optimizer and scheduler come back prepared by ``accelerator``."""
    from transformers import get_cosine_schedule_with_warmup

    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, round(cfg.warmup_ratio * total_steps), total_steps)
    student, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)
    accelerator.print(  # says what ran: accelerate falls back to plain DDP where it cannot shard (FSDP on CPU)
        f"recovery on {accelerator.num_processes} process(es), {accelerator.distributed_type.value}, "
        f"mixed precision {accelerator.mixed_precision}, trainable weights in {str(params[0].dtype).removeprefix('torch.')}"
    )
    return student, optimizer, scheduler


def resume(accelerator, checkpoints: Path) -> int:
    """Load the latest resume point in ``checkpoints``, if any; the optimizer step it was taken at (0 without one)."""
    latest = max(checkpoints.glob("step-*"), key=lambda p: int(p.name.split("-")[1]), default=None) if checkpoints.exists() else None
    if latest is None:
        return 0
    accelerator.load_state(str(latest))
    step = int(latest.name.split("-")[1])
    accelerator.print(f"resuming from {latest} (optimizer step {step})")
    return step


def train(
    accelerator,
    student,
    teacher,
    optimizer,
    scheduler,
    data: TrainingData,
    cfg: RecoveryConfig,
    layer_map: list[int] | None,
    checkpoints: Path,
    step: int,
    total_steps: int,
) -> tuple[list[dict], int]:
    """Train from optimizer ``step`` to ``total_steps`` (or ``cfg.stop_after``), checkpointing every
    ``cfg.checkpoint_every`` steps; return the curve (each loss term's mean over the steps since the
    previous row, every ``cfg.log_every`` steps and at the end) and the step reached."""
    stop = total_steps if cfg.stop_after is None else min(total_steps, cfg.stop_after)
    # FSDP replaces (FSDP2) or shards (FSDP1) the parameters: clip through the prepared model,
    # which accelerate recognises and clips with the sharding-aware norm
    clip = list(student.parameters())
    curve: list[dict] = []
    running: dict[str, float] = {}
    micro = step * cfg.grad_accum
    bar = tqdm(total=total_steps, initial=step, desc="recovery", disable=not accelerator.is_local_main_process)
    student.train()
    while step < stop:
        epoch, offset = divmod(micro, data.batches_per_epoch)
        for batch in data.loader(accelerator, epoch, offset):
            with accelerator.accumulate(student):
                losses = loss_step(student, teacher, batch, cfg, layer_map, _answer_tokens_per_process(batch, accelerator))
                loss = losses["total"]
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"recovery loss is {float(loss)} at optimizer step {step + 1}: { ({k: float(v) for k, v in losses.items()}) }"
                    )
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(clip, cfg.max_grad_norm)
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
                save_checkpoint(accelerator, checkpoints, step)
            if step >= stop:
                break
    bar.close()
    return curve, step


def loss_step(
    student, teacher, batch: dict, cfg: RecoveryConfig, layer_map: list[int] | None = None, answer_tokens: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """The loss terms of one batch (``ce``, ``kd_logit``, ``kd_hidden``, as ``cfg.loss`` has them)
    and their ``total`` from :func:`~study.recovery.losses.combine`. The teacher runs without
    gradients; ``answer_tokens`` replaces the student's own answer-token count in the CE mean."""
    parts = parse_loss(cfg.loss)
    hidden = "kd_hidden" in parts
    extra = {} if answer_tokens is None else {"num_items_in_batch": answer_tokens}
    out = student(**batch, output_hidden_states=hidden, **extra)
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
                out.hidden_states, ref.hidden_states, batch["labels"], cfg.hidden_layers, layer_map or None, cfg.hidden_kind
            )
    losses["total"] = combine(losses, loss_weights(parts, cfg.kd_alpha, cfg.hidden_weight))
    return losses


def checkpoints_dir(out_dir: str | Path) -> Path:
    """Where the resume points of a run writing ``out_dir`` go: ``<out_dir>.checkpoints``."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f"{out_dir.name}.checkpoints")


def save_checkpoint(accelerator, checkpoints: Path, step: int) -> Path:
    """The full training state at optimizer ``step`` (``accelerator.save_state``; every process
    writes its part) into a temporary folder that the main process renames to ``step-<step>`` once
    all are done, so a resume never reads a half-written checkpoint."""
    writing, done = checkpoints / f".step-{step}.partial", checkpoints / f"step-{step}"
    accelerator.save_state(str(writing))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        os.rename(writing, done)
    accelerator.wait_for_everyone()
    return done


def save_recovered(
    accelerator,
    student,
    processor,
    curve: list[dict],
    out_dir: Path,
    student_dir: str | Path,
    teacher_dir: str | Path | None,
    cfg: RecoveryConfig,
    identity: dict | None,
    overwrite: bool,
) -> None:
    """Write the trained student to ``out_dir`` as a plain HF folder in its stored dtype, with its
    curve, pruning record and ``recovery.json``; then remove the resume points. Every process
    gathers the state dict (FSDP and ZeRO-3 shard it), the main process merges LoRA and writes."""
    state = accelerator.get_state_dict(student)  # on every process: gathers FSDP / ZeRO-3 shards
    if not accelerator.is_main_process:
        return
    model = accelerator.unwrap_model(student)
    if cfg.trainable == "lora":
        state, model = merge_lora_state_dict(state, model.peft_config["default"]), model.get_base_model()
    with atomic_folder(out_dir, [student_dir, teacher_dir], overwrite) as tmp:
        save_model(model, processor, tmp, state_dict=state, dtype=stored_dtype(student_dir))
        pd.DataFrame(curve).to_csv(tmp / "training_curve.csv", index=False)
        if (Path(student_dir) / PRUNING_FILE).exists():  # the lineage travels with the weights
            shutil.copy2(Path(student_dir) / PRUNING_FILE, tmp / PRUNING_FILE)
        record = {**(identity or {}), "student_dir": str(student_dir), "teacher_dir": str(teacher_dir), "config": asdict(cfg)}
        write_json(record, tmp / RECORD)
    shutil.rmtree(checkpoints_dir(out_dir), ignore_errors=True)  # finished: the resume points are no longer needed


def _answer_tokens_per_process(batch: dict, accelerator) -> torch.Tensor | None:
    """With several processes, the batch's answer-token count over all of them divided by the
    number of processes: each process divides its summed CE by it, and DDP's mean of the gradients
    is then the gradient of the whole batch's token mean, as in a single process (each process's
    own token mean would weigh a half-batch with few answer tokens as much as one with many).
    None with one process, whose CE stays the model's own token mean."""
    if accelerator.num_processes == 1:
        return None
    local = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
    return accelerator.reduce(local, reduction="sum") / accelerator.num_processes
