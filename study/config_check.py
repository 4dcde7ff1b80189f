"""Checking a params profile before a long run: ``python -m study check-config CONFIG``.

The schema is read from the pipeline itself, so it cannot drift from what runs:

- the sections are those the stages of ``dvc.yaml`` read (``--section S`` of each notebook
  stage) plus the run grids ``prune_runs`` and ``recover_runs`` that its ``matrix`` entries expand;
- a section's keys are the names in its notebook's ``parameters`` cell, less those every stage
  command sets per run (``-p NAME VALUE``); a key the notebook does not have would be injected by
  papermill and silently ignored, so it is an error; a value's type must match the notebook's
  default (``null`` only where the default is ``None``, or where the notebook treats it as "off");
- nested settings are checked by the classes that take them (``DataConfig``,
  ``TeacherArchitecture``, ``TeacherTraining``, ``RecoveryConfig``), pruning levels by
  ``check_ratio``, metrics by the importance tables (a hybrid's ``<layer>+<width>`` by
  ``split_hybrid_metric``), every method's ``name`` against the run-name convention
  (:mod:`study.pruning.naming`), ``prune.extra_seeds`` against ``prune.seed``, and every
  ``recover_runs`` student must be a run of ``prune_runs`` at ``prune.seed`` (the extra seeds'
  models sit in the ``-seeds`` folders and are evaluated, not recovered) and every fraction one of
  ``subsets.fractions``.

Then every path the profile names is looked at: an input that exists is checked for what it must
be (a Hugging Face LLaVA folder with ``config.json``; LLaVA-format training JSON whose first
image is found; question files, and for LLaVA's benchmark files the annotations and image folders
they need); one that does not exist is either the output of a stage (``produced by stage X``:
``dvc repro`` makes it) or missing. A Bunny release that was not converted is named as such.

Statuses: ``error`` (the profile is invalid), ``missing`` (valid, but an input is not on this
machine), ``warning``, ``default`` (a parameter left to the notebook's default), ``produced`` (an
output of a stage: not inspected, ``dvc repro`` makes or remakes it), ``ok``. :func:`exit_code` is 1 with errors, 2 with missing
inputs (unless allowed), else 0.
"""

from __future__ import annotations

import ast
import glob
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

GRID_SECTIONS = ("prune_runs", "recover_runs")
# Every method of prune_runs has every key: dvc.yaml's matrix reads them all (a missing key is an error there).
METHOD_KEYS = ("name", "paradigm", "metric", "text_only")
# Keys a notebook reads as "off" when null although its default is a value.
NULLABLE = {"evaluate.ablation_fraction"}


@dataclass(frozen=True)
class Finding:
    status: str  # error | missing | warning | default | produced | ok
    key: str
    message: str


@dataclass
class Stage:
    name: str
    cmd: str
    section: str | None
    notebook: str | None
    per_run: set[str]  # parameters the command sets with -p
    outs: list[str]


# ---------------------------------------------------------------------------------------------
# the pipeline: stages, their sections and notebooks, the notebooks' parameters


def load_stages(root: Path) -> list[Stage]:
    """The stages of ``root/dvc.yaml`` with the section, notebook and per-run parameters of each."""
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    stages = []
    for name, spec in pipeline.get("stages", {}).items():
        spec = spec.get("do", spec)  # a foreach stage's template
        cmd = " ".join(spec.get("cmd", "").split())
        section = re.search(r"--section (\S+)", cmd)
        notebook = re.search(r"notebook (\S+\.ipynb)", cmd)
        outs = []
        for kind in ("outs", "metrics", "plots"):
            for out in spec.get(kind, []):
                outs.append(out if isinstance(out, str) else next(iter(out)))
        stages.append(
            Stage(
                name=name,
                cmd=cmd,
                section=section.group(1) if section else None,
                notebook=notebook.group(1) if notebook else None,
                per_run=set(re.findall(r"-p (\w+) ", cmd + " ")),
                outs=outs,
            )
        )
    return stages


def notebook_parameters(path: Path) -> dict[str, object]:
    """The names and default values of a notebook's ``parameters`` cell."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"])
            return {
                node.targets[0].id: ast.literal_eval(node.value)
                for node in ast.parse(source).body
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
            }
    raise ValueError(f"{path} has no cell tagged 'parameters'")


def section_schemas(stages: list[Stage], root: Path) -> dict[str, tuple[dict[str, object], set[str], str]]:
    """``{section: (notebook parameters, names set per run by every stage using it, notebook)}``."""
    schemas: dict[str, tuple[dict[str, object], set[str], str]] = {}
    for stage in stages:
        if stage.section is None or stage.notebook is None:
            continue
        if stage.section in schemas:
            params, per_run, notebook = schemas[stage.section]
            schemas[stage.section] = (params, per_run & stage.per_run, notebook)
        else:
            schemas[stage.section] = (notebook_parameters(root / stage.notebook), set(stage.per_run), stage.notebook)
    return schemas


# ---------------------------------------------------------------------------------------------
# schema and values


def check_schema(params: dict, stages: list[Stage], root: Path) -> list[Finding]:
    findings: list[Finding] = []
    schemas = section_schemas(stages, root)
    known = set(schemas) | set(GRID_SECTIONS)
    for section in sorted(set(params) - known):
        findings.append(Finding("error", section, f"unknown section (the pipeline reads {sorted(known)})"))
    for section in sorted(known - set(params)):
        findings.append(Finding("error", section, "section missing (a stage of dvc.yaml reads it)"))
    for section, (defaults, per_run, notebook) in sorted(schemas.items()):
        values = params.get(section)
        if values is None:
            continue
        if not isinstance(values, dict):
            findings.append(Finding("error", section, f"must be a mapping of parameters, got {type(values).__name__}"))
            continue
        for key in sorted(set(values) - set(defaults)):
            findings.append(
                Finding("error", f"{section}.{key}", f"not a parameter of {notebook}: papermill would inject it and nothing reads it")
            )
        for key in sorted(set(values) & per_run):
            findings.append(Finding("warning", f"{section}.{key}", "set per run by every stage command (-p): this value is never used"))
        for key in sorted(set(defaults) - set(values) - per_run):
            findings.append(Finding("default", f"{section}.{key}", f"not set: {notebook}'s default {defaults[key]!r} applies"))
        for key in sorted(set(values) & set(defaults)):
            problem = _type_problem(values[key], defaults[key], f"{section}.{key}")
            if problem:
                findings.append(Finding("error", f"{section}.{key}", problem))
    if not any(f.status == "error" for f in findings):
        findings += check_values(params)
    return findings


def _type_problem(value, default, key: str) -> str | None:
    if value is None:
        return (
            None if default is None or key in NULLABLE else f"must not be null (a {type(default).__name__}, like the default {default!r})"
        )
    if default is None:
        return None
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    return None if ok else f"must be a {type(default).__name__} (the default is {default!r}), got {value!r}"


def check_values(params: dict) -> list[Finding]:
    """Values, by the code that will take them."""
    from study.data.subsets import check_fractions
    from study.data.synthetic import DataConfig
    from study.models.device import resolve_device, resolve_dtype
    from study.models.teacher import TeacherArchitecture
    from study.models.teacher_training import TeacherTraining
    from study.models.width import MODES
    from study.pruning.importance import LAYER_METRICS, WIDTH_METRICS, needs_calibration
    from study.pruning.naming import method_name, run_name
    from study.pruning.prune import PARADIGMS, check_ratio, split_hybrid_metric
    from study.recovery.plan import planned_runs
    from study.recovery.train import RecoveryConfig

    findings: list[Finding] = []

    def attempt(key: str, fn) -> object:
        try:
            return fn()
        except (TypeError, ValueError, KeyError) as err:
            findings.append(Finding("error", key, str(err)))
            return None

    data = params["data"]
    attempt("data", lambda: DataConfig(**{k: v for k, v in data.items() if k != "out_dir"}))
    fractions = attempt("subsets.fractions", lambda: check_fractions(params["subsets"]["fractions"])) or []
    teacher = params["teacher"]
    attempt("teacher.architecture", lambda: TeacherArchitecture(**teacher.get("architecture", {})))
    attempt("teacher.training", lambda: TeacherTraining(**teacher.get("training", {})))

    evaluate = params["evaluate"]
    for key in ("batch_size", "max_new_tokens", "calibration_samples", "threads"):
        if key in evaluate and evaluate[key] < 1:
            findings.append(Finding("error", f"evaluate.{key}", f"must be >= 1, got {evaluate[key]}"))
    if evaluate.get("limit") is not None and evaluate["limit"] < 1:
        findings.append(Finding("error", "evaluate.limit", f"must be null or >= 1, got {evaluate['limit']}"))
    fraction = evaluate.get("ablation_fraction")
    if fraction is not None and not 0 < fraction < 1:
        findings.append(Finding("error", "evaluate.ablation_fraction", f"must be null or in (0, 1), got {fraction}"))

    prune = params["prune"]
    if prune.get("mode") is not None and prune["mode"] not in MODES:
        findings.append(Finding("error", "prune.mode", f"must be one of {MODES}, got {prune['mode']!r}"))
    for key in ("calibration_samples", "calibration_batch_size", "threads"):
        if key in prune and prune[key] < 1:
            findings.append(Finding("error", f"prune.{key}", f"must be >= 1, got {prune[key]}"))
    for section in ("prune", "evaluate"):
        if params[section].get("device") is not None:
            attempt(f"{section}.device", lambda section=section: resolve_device(params[section]["device"]))
        if params[section].get("dtype") is not None:
            attempt(f"{section}.dtype", lambda section=section: resolve_dtype(params[section]["dtype"]))

    share = prune.get("depth_share")
    if share is not None and not 0 <= share <= 1:
        findings.append(
            Finding("error", "prune.depth_share", f"must be in [0, 1] (the share of a hybrid's budget removed as blocks), got {share}")
        )

    grid = params["prune_runs"]
    for key in sorted(set(grid) - {"levels", "methods"}):
        findings.append(Finding("error", f"prune_runs.{key}", "unknown key: dvc.yaml's matrix reads levels and methods"))
    runs = set()
    levels = grid.get("levels") or []
    if not levels:
        findings.append(Finding("error", "prune_runs.levels", "needs at least one level"))
    for level in levels:
        if attempt("prune_runs.levels", lambda level=level: check_ratio(level)) == 0:
            findings.append(Finding("error", "prune_runs.levels", "a level of 0 prunes nothing; the teacher is evaluated anyway"))
    seeds = prune.get("extra_seeds") or []
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        findings.append(Finding("error", "prune.extra_seeds", f"must be a list of seeds (integers >= 0), got {seeds!r}"))
        seeds = []
    elif len(set(seeds)) != len(seeds) or prune.get("seed", 0) in seeds:
        findings.append(
            Finding(
                "error",
                "prune.extra_seeds",
                f"must be distinct and differ from prune.seed ({prune.get('seed', 0)}, the runs without a suffix), got {seeds}",
            )
        )
    names: list[str] = []
    for i, method in enumerate(grid.get("methods") or []):
        key = f"prune_runs.methods[{i}]"
        if not isinstance(method, dict) or set(method) != set(METHOD_KEYS):
            findings.append(Finding("error", key, f"must be {{{', '.join(METHOD_KEYS)}}} (dvc.yaml reads every key), got {method!r}"))
            continue
        paradigm, metric, text_only = method["paradigm"], method["metric"], method["text_only"]
        metrics = {"layer": LAYER_METRICS, "width": WIDTH_METRICS}.get(paradigm)
        if paradigm not in PARADIGMS:
            findings.append(Finding("error", key, f"paradigm must be one of {PARADIGMS}, got {paradigm!r}"))
        elif paradigm == "hybrid":
            attempt(key, lambda metric=metric: split_hybrid_metric(metric))
        elif metric not in metrics:
            findings.append(Finding("error", key, f"a {paradigm} metric must be one of {metrics}, got {metric!r}"))
        if not isinstance(text_only, bool):
            findings.append(Finding("error", key, f"text_only must be true or false, got {text_only!r}"))
            continue
        expected = method_name(paradigm, metric, text_only)
        if method["name"] != expected:
            findings.append(
                Finding(
                    "error", key, f"name must be {expected!r} (<paradigm>-<metric>[-text], the run names' prefix), got {method['name']!r}"
                )
            )
        elif expected in names:
            findings.append(Finding("error", key, f"{expected!r} is listed twice"))
        names.append(expected)
        if text_only and isinstance(metric, str) and not needs_calibration(metric):
            findings.append(Finding("warning", key, f"text_only has no effect: {metric!r} reads no calibration data"))
        for level in levels:
            runs.add(run_name(paradigm, metric, level, text_only))
    if not grid.get("methods"):
        findings.append(Finding("error", "prune_runs.methods", "needs at least one method"))

    recover = params["recover"]
    attempt("recover.config", lambda: RecoveryConfig(**recover.get("config", {})))
    students = params["recover_runs"].get("students") or []
    for student in students:
        if student not in runs:
            findings.append(
                Finding("error", "recover_runs.students", f"{student!r} is not a run of prune_runs at prune.seed ({sorted(runs)})")
            )
    sweep = recover.get("data_efficiency") or {}
    for key, values in (("recover.fractions", recover.get("fractions")), ("recover.data_efficiency.fractions", sweep.get("fractions"))):
        for f in values or []:
            if f not in fractions:
                findings.append(Finding("error", key, f"{f} is not one of subsets.fractions {fractions}: no subset file"))
    for student in sweep.get("students") or []:
        if student not in students:
            findings.append(Finding("error", "recover.data_efficiency.students", f"{student!r} is not one of recover_runs.students"))
    if not recover.get("recipes"):
        findings.append(Finding("error", "recover.recipes", "needs at least one recipe"))
    # the recipes and the sweep as the recover stage expands them (study.recovery.plan)
    student = (sweep.get("students") or students or [""])[0]
    attempt("recover.recipes", lambda: planned_runs(student, recover.get("recipes") or [], [], sweep or None))
    return findings


# ---------------------------------------------------------------------------------------------
# paths


def check_paths(params: dict, stages: list[Stage], root: Path) -> list[Finding]:
    findings: list[Finding] = []
    sec = {name: params.get(name) or {} for name in params}

    def where(value) -> Path:
        path = Path(str(value))
        return path if path.is_absolute() else root / path

    def producer(value: str) -> str | None:
        rel = str(value).rstrip("/")
        for stage in stages:
            for out in stage.outs:
                # a matrix / foreach stage's outs are templates: ${item...} stands for one path component
                pattern = "[^/]+".join(map(re.escape, re.split(r"\$\{[^}]*\}", out.rstrip("/"))))
                if re.fullmatch(pattern + r"(/.*)?", rel):
                    return stage.name
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

    teacher = sec.get("teacher", {})
    if teacher.get("checkpoint"):
        look("teacher.checkpoint", teacher["checkpoint"], "hf")
    else:
        look("teacher.data_dir", teacher.get("data_dir"), "dir")
    look("subsets.train", sec.get("subsets", {}).get("train"), "llava_json")
    prune = sec.get("prune", {})
    look("prune.model_dir", prune.get("model_dir"), "hf")
    look("prune.image_folder", prune.get("image_folder"), "dir")
    if prune.get("calibration") is not None:
        look("prune.calibration", prune["calibration"], "llava_json", image_folder=where(prune.get("image_folder", "")))
    recover = sec.get("recover", {})
    look("recover.teacher_dir", recover.get("teacher_dir"), "hf")
    look("recover.subsets_dir", recover.get("subsets_dir"), "dir")
    look("recover.image_folder", recover.get("image_folder"), "dir")
    evaluate = sec.get("evaluate", {})
    if evaluate.get("ablation_fraction"):
        look("evaluate.data_dir", evaluate.get("data_dir"), "dir")
    if evaluate.get("eval_files") is not None:
        findings += _check_eval_files("evaluate.eval_files", str(evaluate["eval_files"]), where, producer)
        look("evaluate.image_folder", evaluate.get("image_folder"), "dir")
    for key in ("data.out_dir", "subsets.out_dir", "teacher.out_dir", "teacher.log_csv"):
        section, name = key.split(".")
        if sec.get(section, {}).get(name) is not None:
            findings.append(Finding("ok", key, f"{sec[section][name]} (written by the pipeline)"))
    return findings


def _check_kind(key: str, path: Path, kind: str, image_folder: Path | None = None) -> Finding:
    if kind == "dir":
        return Finding("ok", key, str(path)) if path.is_dir() else Finding("error", key, f"{path} is not a folder")
    if kind == "hf":
        return _check_hf_folder(key, path)
    if kind == "llava_json":
        return _check_llava_json(key, path, image_folder)
    raise ValueError(f"unknown path kind {kind!r}")


def _check_hf_folder(key: str, path: Path) -> Finding:
    config_file = path / "config.json"
    if not config_file.is_file():
        return Finding("error", key, f"{path} is not a Hugging Face model folder (no config.json)")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        return Finding("error", key, f"{config_file} is not JSON: {err}")
    if "mm_projector_type" in config or str(config.get("model_type", "")).startswith("bunny"):
        return Finding("error", key, f"{path} is Bunny's release format: convert it with `python -m study convert-bunny {path} DST`")
    if config.get("model_type") != "llava" and "LlavaForConditionalGeneration" not in config.get("architectures", []):
        return Finding("error", key, f"{path} is not a LlavaForConditionalGeneration folder (model_type {config.get('model_type')!r})")
    text = config.get("text_config", {})
    weights = sorted(p.name for p in path.glob("*.safetensors"))
    if not weights:
        return Finding("error", key, f"{path} has no *.safetensors weights")
    absent = [name for name, files in PROCESSOR_FILES.items() if not any((path / f).is_file() for f in files)]
    if absent:
        return Finding("error", key, f"{path} lacks the {' and '.join(absent)} files AutoProcessor loads ({PROCESSOR_FILES})")
    if not _has_chat_template(path):
        return Finding("error", key, f"{path} has no chat template: prompts are rendered with the processor's template")
    return Finding(
        "ok",
        key,
        f"{path}: llava, {text.get('model_type', '?')} backbone, {text.get('num_hidden_layers', '?')} layers, {len(weights)} weight file(s)",
    )


PROCESSOR_FILES = {"tokenizer": ("tokenizer_config.json",), "image processor": ("preprocessor_config.json", "processor_config.json")}


def _has_chat_template(path: Path) -> bool:
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    for name in ("tokenizer_config.json", "processor_config.json"):
        try:
            if "chat_template" in json.loads((path / name).read_text()):
                return True
        except (OSError, json.JSONDecodeError):
            continue
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


def check_profile(config: str | Path, root: str | Path = ".") -> list[Finding]:
    """Every finding about the profile ``config``, with ``root`` the repository (dvc.yaml, notebooks)."""
    root = Path(root)
    try:
        params = yaml.safe_load(Path(config).read_text())
    except yaml.YAMLError as err:
        return [Finding("error", str(config), f"not YAML: {err}")]
    if not isinstance(params, dict):
        return [Finding("error", str(config), "must be a mapping of sections")]
    stages = load_stages(root)
    findings = check_schema(params, stages, root)
    return findings + check_paths(params, stages, root)


def exit_code(findings: list[Finding], allow_missing: bool = False) -> int:
    if any(f.status == "error" for f in findings):
        return 1
    if not allow_missing and any(f.status == "missing" for f in findings):
        return 2
    return 0


ORDER = ("error", "missing", "warning", "default", "produced", "ok")


def format_report(config: str | Path, findings: list[Finding]) -> str:
    lines = [f"check-config {config}"]
    for status in ORDER:
        lines += [f"  {status.upper():9} {f.key:28} {f.message}" for f in findings if f.status == status]
    counts = {s: sum(f.status == s for f in findings) for s in ORDER}
    lines.append(
        f"{counts['error']} error(s), {counts['missing']} missing input(s), {counts['warning']} warning(s), "
        f"{counts['default']} notebook default(s), {counts['produced']} produced by the pipeline, {counts['ok']} ok"
    )
    return "\n".join(lines)
