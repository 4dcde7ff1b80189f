"""How the embedded teacher is trained: LLaVA's recipe in miniature, in four steps. What each step
was tried against, with the measurements, is in ``benchmarks/README.md``.

1. **Vision pretraining** (the stand-in for CLIP's pretraining): the vision tower learns, per
   patch (= grid cell), the colour, the shape and the cell index of what it sees, from the scene
   annotations in ``scenes.jsonl``; trained only through the LLM's loss, it did not separate the
   object kinds.
2. **Projector alignment** in closed form: each image token starts as the sum of the text
   embeddings of the kind it shows and of its position (one token each in the teacher's
   tokenizer), so matching a question's words to image tokens is easy from the first step;
   trained end to end instead, the image families stayed at chance for hundreds of steps.
3. **Language pretraining** (the stand-in for the LLM's pretraining): next-token loss on every
   token of text-only option-lookup prompts ("Which option is seeds? A. fish B. seeds ..."), then
   of facts about a named kind ("What does the red circle eat? A. ..."). Multiple choice needs the
   model to find the option that matches an answer and copy the letter before it, a skill a real
   LLM brings from pretraining and that did not form through the answer tokens alone.
4. **Instruction tuning** of projector + LLM with the vision tower frozen, on the LLaVA-format
   training data. The loss is LLaVA's on the answers plus ``text_loss_weight`` times a next-token
   loss on the rest of the text (questions, chat template): the work every block does on every
   token in a pretrained LLM, without which the last blocks idle and pruning them costs little.
   AdamW with a warmup-stable-decay schedule (linear warmup, a constant learning rate, a cosine
   decay over the last ``decay_steps``): the skills that build on reading the image form late, so
   the rate stays high until the final decay.

Deterministic by seed on a given machine and library versions.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm  # text bars: readable in stage logs and executed notebooks
from transformers import get_wsd_schedule

from study.config.sections import TeacherTraining
from study.data.llava import IGNORE_INDEX, LlavaDataset, collate, load_image, read_samples
from study.data.ontology import PROPERTIES
from study.data.scenes import COLOURS, GRID, POSITIONS, SHAPES, all_kinds
from study.data.synthetic import QA, conversation, eval_row, lettered_choice
from study.evaluation.benchmark import evaluate

# the share of the language steps that only name the value to find, before fact questions join
VALUE_ONLY_SHARE = 0.7


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
    """Endless batches of (pixel_values, per-cell labels) from annotated scenes: colour, shape and
    kind (colour + shape) indices, the last class of each meaning an empty cell."""
    colours, shapes, kinds = list(COLOURS), list(SHAPES), all_kinds()
    while True:
        chosen = rng.sample(scenes, min(batch_size, len(scenes)))
        images = [load_image({"id": s["image"], "image": s["image"]}, data_dir / "images") for s in chosen]
        pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
        labels = {
            "colour": torch.full((len(chosen), GRID * GRID), len(colours)),
            "shape": torch.full((len(chosen), GRID * GRID), len(shapes)),
            "kind": torch.full((len(chosen), GRID * GRID), len(kinds)),
        }
        for row, scene in enumerate(chosen):
            for obj in scene["objects"]:
                labels["colour"][row, obj["cell"]] = colours.index(obj["colour"])
                labels["shape"][row, obj["cell"]] = shapes.index(obj["shape"])
                labels["kind"][row, obj["cell"]] = kinds.index((obj["colour"], obj["shape"]))
        yield pixels, labels


def read_scenes(data_dir: Path, split: str = "train/") -> list[dict]:
    scenes = [json.loads(line) for line in (data_dir / "scenes.jsonl").read_text().splitlines()]
    return [s for s in scenes if s["image"].startswith(split)]


def pretrain_vision(model, processor, data_dir: Path, cfg: TeacherTraining) -> tuple[list[dict], nn.ModuleDict]:
    """Step 1; returns the loss / per-cell accuracy log and the trained heads (kind and cell
    heads are reused by :func:`init_projector`)."""
    n_tokens = model.config.image_seq_length
    if n_tokens != GRID * GRID:
        raise ValueError(f"vision pretraining needs one image token per grid cell ({GRID * GRID}), the model has {n_tokens}")
    scenes = read_scenes(data_dir)
    width = model.config.vision_config.hidden_size
    heads = nn.ModuleDict(
        {
            "colour": nn.Linear(width, len(COLOURS) + 1),
            "shape": nn.Linear(width, len(SHAPES) + 1),
            "kind": nn.Linear(width, len(all_kinds()) + 1),
            "cell": nn.Linear(width, GRID * GRID),
        }
    )
    tower = model.model.vision_tower
    tower.train()
    opt = torch.optim.AdamW([*tower.parameters(), *heads.parameters()], lr=cfg.vision_lr)
    batches = scene_batches(scenes, data_dir, processor, cfg.vision_batch_size, random.Random(cfg.seed))
    cells = torch.arange(GRID * GRID)
    log = []
    for step in tqdm(range(cfg.vision_steps), desc="vision pretraining"):
        pixels, targets = next(batches)
        targets = {**targets, "cell": cells.expand_as(targets["kind"])}
        feats = vision_features(model, pixels)
        logits = {k: heads[k](feats) for k in heads}
        loss = sum(nn.functional.cross_entropy(logits[k].flatten(0, 1), targets[k].flatten()) for k in heads)
        opt.zero_grad()
        loss.backward()
        opt.step()
        acc = {k: float((logits[k].argmax(-1) == targets[k]).float().mean()) for k in heads}
        log.append({"step": step, "loss": loss.item(), **{f"acc_{k}": v for k, v in acc.items()}})
    tower.eval()
    return log, heads


def phrase_tokens() -> list[str]:
    """Multi-word names the teacher's tokenizer keeps as one token: each kind ("red circle") and
    each two-word position ("top left"). An image token can then be aligned with the embedding
    of the one text token that names what it shows (:func:`init_projector`)."""
    return [f"{c} {s}" for c, s in all_kinds()] + [p for p in POSITIONS if " " in p]


def separating_threshold(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The threshold that leaves exactly the target class above it on the most rows (``logits``:
    [..., classes], ``target``: [...] class indices): the middle of the best gap between the
    target's logit and the best other class's."""
    true = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1).flatten()
    wrong = logits.scatter(-1, target.unsqueeze(-1), float("-inf")).max(-1).values.flatten()
    values = torch.cat([true, wrong]).sort().values
    candidates = (values[1:] + values[:-1]) / 2
    separated = ((wrong[None] < candidates[:, None]) & (true[None] > candidates[:, None])).sum(-1)
    best = candidates[separated == separated.max()]
    return best.median()


@torch.no_grad()
def init_projector(model, processor, heads: nn.ModuleDict, data_dir: Path, n_images: int = 512, seed: int = 0) -> None:
    """Step 2, LLaVA's feature alignment done in closed form: the projector maps the patch of a
    cell holding kind K to about ``E[K] + E[position]``, the text embeddings of the tokens that name
    them. ``linear_1`` holds the pretrained kind and cell heads (logits centred over classes),
    ``linear_2`` sends each class to its token embedding, scaled by the mean activation of a
    recognised class. Empty cells map to their position only. The kind units are also shifted so
    that after GELU only the recognised kind stays positive: centred alone, ~19 kind units stayed
    positive and the true kind had 16% of the weight, so an image token was a blend of kinds and
    questions that search the image for a kind (existence, counting) stayed near chance while
    reading a kind at a position worked (measured). The cell units are shifted the same way, with
    the threshold taken on occupied cells only: over all cells the true cell's logit and the best
    wrong one overlap (empty patches are less certain of their cell), on occupied cells they
    separate. Each shift is the threshold that leaves only the true class active on the most cells
    of ``n_images`` scenes. The model stays a stock LLaVA; steps 3 and 4 train it further."""
    proj = model.model.multi_modal_projector
    kinds, width = all_kinds(), proj.linear_1.out_features
    n_kind, n_cell = len(kinds) + 1, GRID * GRID
    if width < n_kind + n_cell:
        raise ValueError(f"the projector's hidden size {width} is smaller than kinds + cells ({n_kind + n_cell})")
    tok = processor.tokenizer
    kind_ids = [tok.convert_tokens_to_ids(f"{c} {s}") for c, s in kinds]
    cell_ids = [tok.convert_tokens_to_ids(p) for p in POSITIONS]
    if tok.unk_token_id in kind_ids + cell_ids:
        raise ValueError("the tokenizer lacks single tokens for the kinds and positions (see phrase_tokens())")
    w1, b1 = torch.zeros_like(proj.linear_1.weight), torch.zeros_like(proj.linear_1.bias)
    for rows, head in ((slice(0, n_kind), heads["kind"]), (slice(n_kind, n_kind + n_cell), heads["cell"])):
        w1[rows] = head.weight - head.weight.mean(0, keepdim=True)
        b1[rows] = head.bias - head.bias.mean()
    pixels, labels = next(scene_batches(read_scenes(data_dir), data_dir, processor, n_images, random.Random(seed)))
    features = vision_features(model, pixels)  # [images, cells, vision width]
    occupied = labels["kind"] < len(kinds)
    cell_labels = torch.arange(n_cell).expand_as(labels["kind"])
    kind_rows, cell_rows = slice(0, n_kind), slice(n_kind, n_kind + n_cell)
    b1[kind_rows] -= separating_threshold(features @ w1[kind_rows].T + b1[kind_rows], labels["kind"])
    b1[cell_rows] -= separating_threshold((features @ w1[cell_rows].T + b1[cell_rows])[occupied], cell_labels[occupied])
    proj.linear_1.weight.copy_(w1)
    proj.linear_1.bias.copy_(b1)
    hidden = proj.act(proj.linear_1(features))  # [images, cells, width]
    kind_act = hidden[..., kind_rows].gather(-1, labels["kind"].unsqueeze(-1)).mean()
    cell_act = hidden[..., cell_rows].gather(-1, cell_labels.unsqueeze(-1))[occupied].mean()
    embed = model.get_input_embeddings().weight
    w2 = torch.zeros_like(proj.linear_2.weight)
    w2[:, : len(kinds)] = embed[kind_ids].T / kind_act  # the empty class (column len(kinds)) maps to 0
    w2[:, n_kind : n_kind + n_cell] = embed[cell_ids].T / cell_act
    proj.linear_2.weight.copy_(w2)
    proj.linear_2.bias.zero_()


def lookup_question(rng: random.Random, facts: dict[str, dict[str, str]], fact_share: float = 0.5) -> QA:
    """A text-only multiple-choice question in the data's format. ``1 - fact_share`` of them name
    the value to find ("Which option is seeds?": match it, copy its letter), the others ask a fact
    about a named kind ("What does the red circle eat?": recall the fact, then match it), the
    text-only form of the data's fact questions about a depicted object."""
    kind = rng.choice(list(facts))
    if rng.random() >= fact_share:
        pool = rng.choice([list(facts), *(PROPERTIES[p][1] for p in facts[kind])])
        correct = rng.choice(pool)
        return lettered_choice(f"Which option is {correct}?", correct, pool, rng, "lookup_value")
    prop = rng.choice(list(facts[kind]))
    template, pool = PROPERTIES[prop]
    return lettered_choice(template.format(f"the {kind}"), facts[kind][prop], pool, rng, "lookup_fact")


@contextmanager
def training_mode(model):
    """Train mode with eager attention (on CPU, SDPA's backward with a padding mask was 3x slower,
    measured) and the frozen vision tower in eval mode; restores eval mode and the attention after."""
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(False)
    attention = model.config._attn_implementation
    model.set_attn_implementation("eager")
    model.train()
    model.model.vision_tower.eval()
    try:
        yield
    finally:
        model.set_attn_implementation(attention)
        model.eval()


def optimisation_step(loss: torch.Tensor, opt, sched, params: list[nn.Parameter], max_grad_norm: float, step: int) -> float:
    """One AdamW step with gradient clipping; returns the loss, raises if it is not finite."""
    value = loss.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"teacher training loss is {value} at step {step}")
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(params, max_grad_norm)
    opt.step()
    sched.step()
    return value


def answer_and_text_loss(model, batch: dict, text_weight: float, image_token_id: int) -> torch.Tensor:
    """The instruction-tuning loss: the model's own loss on the answers (the batch's labels, LLaVA's
    masking) plus ``text_weight`` times its loss on every other text token (questions, chat
    template; not images or padding), each averaged over its own tokens."""
    out = model(**batch)
    if text_weight == 0:
        return out.loss
    ids, labels, real = batch["input_ids"], batch["labels"], batch["attention_mask"].bool()
    is_text = real & (labels == IGNORE_INDEX) & (ids != image_token_id)
    # position t predicts token t + 1; nothing is predicted from a padding position (the first token)
    text = nn.functional.pad(ids.masked_fill(~is_text, IGNORE_INDEX)[:, 1:], (0, 1), value=IGNORE_INDEX)
    text = text.masked_fill(~real, IGNORE_INDEX)
    vocab = out.logits.shape[-1]
    return out.loss + text_weight * model.loss_function(out.logits, None, vocab, shift_labels=text)


def pretrain_language(model, processor, data_dir: Path, cfg: TeacherTraining, n_eval: int = 128) -> list[dict]:
    """Step 3; returns the loss log, its last entry with the accuracy of each lookup type on
    ``n_eval`` held-out questions."""
    if cfg.language_steps == 0:
        return []
    facts, rng = json.loads((data_dir / "ontology.json").read_text())["facts"], random.Random(f"lookup-{cfg.seed}")
    held_out = [lookup_question(rng, facts) for _ in range(n_eval)]
    n_value_only = round(VALUE_ONLY_SHARE * cfg.language_steps) * cfg.batch_size
    n = cfg.language_steps * cfg.batch_size
    questions = [lookup_question(rng, facts, fact_share=0.0 if i < n_value_only else 0.5) for i in range(n)]
    samples = [{"id": f"lookup-{i}", "conversations": conversation([qa], with_image=False)} for i, qa in enumerate(questions)]
    train = LlavaDataset(samples, data_dir, processor)
    pad = processor.tokenizer.pad_token_id
    params = [*model.model.language_model.parameters(), *model.lm_head.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.language_lr, weight_decay=cfg.weight_decay)
    sched = get_wsd_schedule(opt, min(cfg.warmup_steps, cfg.language_steps), 0, num_training_steps=cfg.language_steps)
    log = []
    with training_mode(model):
        for step in tqdm(range(1, cfg.language_steps + 1), desc="language pretraining"):
            batch = collate([train[i] for i in range((step - 1) * cfg.batch_size, step * cfg.batch_size)], pad)
            batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)  # every token
            loss = optimisation_step(model(**batch).loss, opt, sched, params, cfg.max_grad_norm, step)
            if step % cfg.log_every == 0 or step == cfg.language_steps:
                log.append({"step": step, "loss": loss})
    rows = [eval_row(f"held-out-{i}", qa, "mc") for i, qa in enumerate(held_out)]
    for qtype in ("lookup_value", "lookup_fact"):
        family = {"mc": [row for row in rows if row["type"] == qtype]}
        log[-1][f"{qtype}_accuracy"] = evaluate(model, processor, family, data_dir, max_new_tokens=4, progress=False)["scores"]["mc"]
    return log


def instruction_tune(
    model,
    processor,
    data_dir: Path,
    cfg: TeacherTraining,
    on_log: Callable[[int, object, object], dict | None] | None = None,
) -> list[dict]:
    """Step 4; ``on_log(step, model, processor)`` may return extra numbers (e.g. quick accuracies) to log."""
    samples = read_samples(data_dir / "train.json")
    dataset = LlavaDataset(samples, data_dir / "images", processor, cache=True)
    generator = torch.Generator().manual_seed(cfg.seed)
    pad = processor.tokenizer.pad_token_id
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, shuffle=True, generator=generator, collate_fn=lambda b: collate(b, pad), drop_last=True
    )
    batches = (batch for _epoch in itertools.count() for batch in loader)
    with training_mode(model):
        projector = list(model.model.multi_modal_projector.parameters())
        projector_ids = {id(p) for p in projector}
        llm = [p for p in model.parameters() if p.requires_grad and id(p) not in projector_ids]
        groups = [{"params": projector, "lr": cfg.projector_lr}, {"params": llm, "lr": cfg.lr}]
        opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        sched = get_wsd_schedule(opt, cfg.warmup_steps, cfg.decay_steps, num_training_steps=cfg.steps)
        log: list[dict] = []
        bar = tqdm(range(1, cfg.steps + 1), desc="instruction tuning")
        running = 0.0
        for step in bar:
            loss = answer_and_text_loss(model, next(batches), cfg.text_loss_weight, processor.image_token_id)
            running += optimisation_step(loss, opt, sched, projector + llm, cfg.max_grad_norm, step)
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
    return log


def train_teacher(data_dir: str | Path, arch, cfg: TeacherTraining, on_log=None):
    """The whole recipe from a synthetic data folder: returns model, processor and the logs."""
    from study.models.teacher import build_processor, build_teacher

    data_dir = Path(data_dir)
    seed_everything(cfg.seed)
    samples = read_samples(data_dir / "train.json")
    processor = build_processor((turn["value"] for s in samples for turn in s["conversations"]), arch, phrases=phrase_tokens())
    model = build_teacher(arch, processor, cfg.seed)
    vision_log, heads = pretrain_vision(model, processor, data_dir, cfg)
    init_projector(model, processor, heads, data_dir, seed=cfg.seed)
    language_log = pretrain_language(model, processor, data_dir, cfg)
    tuning_log = instruction_tune(model, processor, data_dir, cfg, on_log)
    return model, processor, {"vision": vision_log, "language": language_log, "tuning": tuning_log}
