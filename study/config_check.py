"""Checking a profile before a long run: ``python -m study check-config CONFIG``.

First every section is built from the defaults with the profile's values over them
(:mod:`study.config.sections`: unknown settings, wrong types, values outside their choices and
the checks that span sections are errors). Then every path the settings name is looked at: an
input that exists is checked for what it must be (a Hugging Face folder of a supported family with
weights, processor and chat template, whose backbone's coupled weights
:mod:`study.models.architectures` knows when the profile prunes widthwise or trains LoRA;
LLaVA-format training JSON whose first image is found; question files, and for LLaVA's benchmark
files the annotations and image folders they need); one that does not exist is either the output
of a stage of ``dvc.yaml`` (``produced by stage X``: ``dvc repro`` makes it) or missing. A Bunny
release that was not converted, or an InternVL release in its remote-code format, is named as such.

Statuses: ``error`` (the profile is invalid), ``missing`` (valid, but an input is not on this
machine), ``warning``, ``produced`` (an output of a stage: not inspected), ``ok``.
:func:`exit_code` is 1 with errors, 2 with missing inputs (unless allowed), else 0.
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from study.config import StudyError, check_study
from study.config.build import build, section_problems, setting_problems
from study.config.sections import SECTIONS
from study.config.vocabulary import Method
from study.models.architectures import SPECS
from study.models.families import load_config


@dataclass(frozen=True)
class Finding:
    status: str  # error | missing | warning | produced | ok
    key: str
    message: str


def section_findings(name: str, cls, values) -> tuple[list[Finding], object | None]:
    """The errors of one section (each setting on its own, nested sections such as
    ``recover.config`` setting by setting, then the section's own checks) and the built section
    when there are none."""
    if values is None:
        values = {}
    findings = _findings(name, cls, values)
    return (findings, None) if findings else ([], build(cls, values, name))


def _findings(where: str, cls, values) -> list[Finding]:
    problems = setting_problems(cls, values, where, per_run=False) or section_problems(cls, values or {}, where)
    return [Finding("error", key, message) for key, message in problems]


def check_settings(profile: str | Path) -> tuple[list[Finding], dict | None]:
    """Every section of ``profile`` over the defaults: the errors, and the sections when valid."""
    try:
        values = yaml.safe_load(Path(profile).read_text())
    except yaml.YAMLError as err:
        return [Finding("error", str(profile), f"not YAML: {err}")], None
    values = {} if values is None else values
    if not isinstance(values, dict):
        return [Finding("error", str(profile), "must be a mapping of sections")], None
    findings = [Finding("error", name, f"unknown section; known: {list(SECTIONS)}") for name in values if name not in SECTIONS]
    study = {}
    for name, cls in SECTIONS.items():
        errors, built = section_findings(name, cls, values.get(name))
        findings += errors
        study[name] = built
    if findings:
        return findings, None
    try:
        check_study(study)
    except StudyError as err:
        return [Finding("error", key, message) for key, message in err.problems], None
    return [], study


# ---------------------------------------------------------------------------------------------
# paths


def stage_outputs(root: Path, study: dict) -> dict[str, list[str]]:
    """``{stage: [output path templates]}`` of ``root/dvc.yaml`` with the settings of ``study``
    filled in (``${item...}`` left in); a ``foreach`` over an empty list makes no stage."""

    def setting(match: re.Match) -> str:
        section, _, key = match.group(1).partition(".")
        return match.group(0) if section == "item" else str(getattr(study[section], key))

    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    outputs = {}
    for name, spec in pipeline.get("stages", {}).items():
        loop = re.fullmatch(r"\$\{(\w+)\.(\w+)\}", str(spec.get("foreach", "")))
        if loop and not getattr(study[loop.group(1)], loop.group(2)):
            continue
        spec = spec.get("do", spec)  # a foreach stage's template
        outs = []
        for kind in ("outs", "metrics", "plots"):
            for out in spec.get(kind, []):
                outs.append(re.sub(r"\$\{([\w.]+)\}", setting, out if isinstance(out, str) else next(iter(out))))
        outputs[name] = outs
    return outputs


def check_paths(study: dict, root: Path) -> list[Finding]:
    findings: list[Finding] = []
    outputs = stage_outputs(root, study)

    def where(value) -> Path:
        path = Path(str(value))
        return path if path.is_absolute() else root / path

    def producer(value: str) -> str | None:
        rel = str(value).rstrip("/")
        for stage, outs in outputs.items():
            for out in outs:
                # a matrix / foreach stage's outs are templates: ${item...} stands for one path component
                pattern = "[^/]+".join(map(re.escape, re.split(r"\$\{[^}]*\}", out.rstrip("/"))))
                if re.fullmatch(pattern + r"(/.*)?", rel):
                    return stage
        return None

    def look(key: str, value, kind: str, **extra) -> None:
        if value is None:
            return
        stage = producer(str(value))
        path = where(value)
        if stage:  # what is there now may be stale: dvc repro (re)makes it
            findings.append(Finding("produced", key, f"{value} (by stage {stage})"))
        elif path.exists():
            findings.append(_check_kind(key, path, kind, **extra))
        else:
            findings.append(Finding("missing", key, f"{value} does not exist"))

    teacher, prune, recover, evaluate = study["teacher"], study["prune"], study["recover"], study["evaluate"]
    coupled = coupled_weight_users(study)
    look("data.manifest", study["data"].manifest, "file")
    if teacher.checkpoint:
        look("teacher.checkpoint", teacher.checkpoint, "hf", coupled=coupled)
    else:
        look("teacher.data_dir", teacher.data_dir, "dir")
    look("subsets.train", study["subsets"].train, "llava_json")
    look("prune.model_dir", prune.model_dir, "hf", coupled=coupled)
    images = str(prune.calibration_images)
    look("prune.image_folder", images, "dir")
    look("prune.calibration", prune.calibration, "llava_json", image_folder=where(images))
    look("recover.teacher_dir", recover.teacher_dir, "hf", coupled=coupled)
    look("recover.subsets_dir", recover.subsets_dir, "dir")
    look("recover.image_folder", recover.image_folder, "dir")
    if evaluate.ablation_fraction:
        look("evaluate.data_dir", evaluate.data_dir, "dir")
    findings += _check_eval_files("evaluate.eval_files", evaluate.eval_files, where, producer)
    look("evaluate.image_folder", evaluate.image_folder, "dir")
    look("evaluate.lmms_include_path", evaluate.lmms_include_path, "dir")
    for key, value in (
        *([("data.out_dir", study["data"].out_dir)] if study["data"].generate else []),
        ("subsets.out_dir", study["subsets"].out_dir),
        ("teacher.out_dir", teacher.out_dir),
        ("teacher.log_csv", teacher.log_csv),
    ):
        findings.append(Finding("ok", key, f"{value} (written by the pipeline)"))
    return findings


def coupled_weight_users(study: dict) -> list[str]:
    """What the profile runs that needs the backbone's coupled weights (its row of
    :data:`study.models.architectures.SPECS`): widthwise and hybrid methods, LoRA recipes."""
    users = [m for m in study["prune_runs"].methods if Method.parse(m).paradigm != "layer"]
    return users + [f"recipe {r.name}" for r in study["recover"].recipes if r.trainable == "lora"]


def _check_kind(key: str, path: Path, kind: str, image_folder: Path | None = None, coupled: Sequence[str] = ()) -> Finding:
    if kind == "dir":
        return Finding("ok", key, str(path)) if path.is_dir() else Finding("error", key, f"{path} is not a folder")
    if kind == "file":
        return Finding("ok", key, str(path)) if path.is_file() else Finding("error", key, f"{path} is not a file")
    if kind == "hf":
        return _check_hf_folder(key, path, coupled)
    if kind == "llava_json":
        return _check_llava_json(key, path, image_folder)
    raise ValueError(f"unknown path kind {kind!r}")


def _check_hf_folder(key: str, path: Path, coupled: Sequence[str] = ()) -> Finding:
    """A stock HF folder of a supported family with weights, processor and chat template; when
    ``coupled`` names what needs it, a backbone whose coupled weights the architectures table knows."""
    config_file = path / "config.json"
    if not config_file.is_file():
        return Finding("error", key, f"{path} is not a Hugging Face model folder (no config.json)")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        return Finding("error", key, f"{config_file} is not JSON: {err}")
    if "mm_projector_type" in config or str(config.get("model_type", "")).startswith("bunny"):
        return Finding("error", key, f"{path} is Bunny's release format: convert it with `python -m study convert-bunny {path} DST`")
    if config.get("model_type") == "internvl_chat":
        return Finding(
            "error",
            key,
            f"{path} is InternVL's remote-code release (InternVLChatModel): convert it to transformers' internvl format "
            "(InternVLForConditionalGeneration), as configs/internvl-mini-4b.yaml says",
        )
    try:
        text = load_config(config).get_text_config()
    except Exception as err:  # an unsupported family, or values its config class refuses
        return Finding("error", key, f"{path}: {err}")
    weights = sorted(p.name for p in path.glob("*.safetensors"))
    if not weights:
        return Finding("error", key, f"{path} has no *.safetensors weights")
    absent = [name for name, files in PROCESSOR_FILES.items() if not any((path / f).is_file() for f in files)]
    if absent:
        return Finding("error", key, f"{path} lacks the {' and '.join(absent)} files AutoProcessor loads ({PROCESSOR_FILES})")
    if not _has_chat_template(path):
        return Finding(
            "error",
            key,
            f"{path} has no chat template for its processor (prompts are rendered with it): write one to {path / 'chat_template.jinja'}",
        )
    if coupled and text.model_type not in SPECS:
        return Finding(
            "error",
            key,
            f"{path}: {', '.join(coupled)} need the coupled weights of its {text.model_type!r} backbone, which "
            f"study/models/architectures.py does not know (it knows {', '.join(sorted(SPECS))}); drop them or use layerwise methods",
        )
    return Finding(
        "ok",
        key,
        f"{path}: {config['model_type']}, {text.model_type} backbone, {text.num_hidden_layers} layers, {len(weights)} weight file(s)",
    )


PROCESSOR_FILES = {"tokenizer": ("tokenizer_config.json",), "image processor": ("preprocessor_config.json", "processor_config.json")}


def _has_chat_template(path: Path) -> bool:
    """Whether the folder's processor has a chat template: its own file or ``processor_config.json``
    (a template only in ``tokenizer_config.json`` is the tokenizer's, which the processor does not use)."""
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    try:
        return "chat_template" in json.loads((path / "processor_config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False


def _check_llava_json(key: str, path: Path, image_folder: Path | None) -> Finding:
    """Reads the start of the file only (LLaVA-665K is ~1 GB): a JSON list whose first sample has
    ``conversations``; the first sample with an image must find it under ``image_folder``."""
    if not path.is_file():
        return Finding("error", key, f"{path} is not a file")
    with path.open() as handle:
        head = handle.read(1 << 20)
    stripped = head.lstrip()
    if not stripped.startswith("["):
        return Finding("error", key, f"{path} is not a JSON list of LLaVA samples")
    decoder, samples, pos = json.JSONDecoder(), [], stripped.index("[") + 1
    while len(samples) < 20:
        rest = stripped[pos:].lstrip().lstrip(",").lstrip()
        if not rest or rest.startswith("]"):
            break
        try:
            sample, end = decoder.raw_decode(rest)
        except json.JSONDecodeError:
            break  # a sample cut by the 1 MB window
        samples.append(sample)
        pos = len(stripped) - len(rest) + end
    if not samples:
        return Finding("error", key, f"{path}: no readable sample at its start")
    if not all(isinstance(s, dict) and isinstance(s.get("conversations"), list) for s in samples):
        return Finding("error", key, f"{path}: samples need a 'conversations' list (LLaVA format), got keys {sorted(samples[0])}")
    with_image = next((s for s in samples if s.get("image")), None)
    if with_image is not None and image_folder is not None and not (image_folder / with_image["image"]).is_file():
        return Finding(
            "missing", key, f"{path}: the image of sample {with_image.get('id')!r} is not under {image_folder}: {with_image['image']}"
        )
    return Finding("ok", key, f"{path}: LLaVA conversation format")


def _check_eval_files(key: str, pattern: str, where, producer) -> list[Finding]:
    from study.evaluation.llava_formats import LLAVA_QUESTION_FILES, benchmark_of, companion_paths

    path = where(pattern)
    static = pattern.split("*")[0].rstrip("/")
    stage = producer(static) if static else None
    if stage:
        return [Finding("produced", key, f"{pattern} (by stage {stage})")]
    if path.is_dir():
        files = [path / rel for rel in LLAVA_QUESTION_FILES.values() if (path / rel).is_file()]
        if not files:
            return [Finding("missing", key, f"{pattern}: none of LLaVA's benchmark files {sorted(LLAVA_QUESTION_FILES.values())}")]
    else:
        files = [Path(f) for f in sorted(glob.glob(str(path)))]
        if not files:
            return [Finding("missing", key, f"{pattern} {'matches no file' if glob.has_magic(pattern) else 'does not exist'}")]
    findings = []
    for file in files:
        benchmark = benchmark_of(file)
        if benchmark is None:
            findings.append(Finding("ok", key, f"{file}: question file"))
            continue
        absent = {name: p for name, p in companion_paths(benchmark, file).items() if not p.exists()}
        if benchmark == "scienceqa":  # without problems.json the answers are read from the file itself
            for name in ("problems", "splits"):
                if absent.pop(name, None) is not None:
                    findings.append(Finding("warning", key, f"scienceqa: no {name} file beside {file}: answers from the file's gpt turns"))
        if absent:
            findings.append(Finding("missing", key, f"{benchmark} ({file.name}) needs {', '.join(f'{n} {p}' for n, p in absent.items())}"))
        else:
            findings.append(Finding("ok", key, f"{benchmark}: {file}"))
    return findings


# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------


def check_profile(config: str | Path, root: str | Path = ".") -> list[Finding]:
    """Every finding about the profile ``config`` (its settings over the defaults), with ``root``
    the repository (its ``dvc.yaml`` names what the stages produce)."""
    findings, study = check_settings(config)
    return findings if study is None else check_paths(study, Path(root))


def exit_code(findings: list[Finding], allow_missing: bool = False) -> int:
    if any(f.status == "error" for f in findings):
        return 1
    if not allow_missing and any(f.status == "missing" for f in findings):
        return 2
    return 0


ORDER = ("error", "missing", "warning", "produced", "ok")


def format_report(config: str | Path, findings: list[Finding]) -> str:
    lines = [f"check-config {config}"]
    for status in ORDER:
        lines += [f"  {status.upper():9} {f.key:28} {f.message}" for f in findings if f.status == status]
    counts = {s: sum(f.status == s for f in findings) for s in ORDER}
    lines.append(
        f"{counts['error']} error(s), {counts['missing']} missing input(s), {counts['warning']} warning(s), "
        f"{counts['produced']} produced by the pipeline, {counts['ok']} ok"
    )
    return "\n".join(lines)
